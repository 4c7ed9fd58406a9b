#!/usr/bin/env python
"""Benchmark script, same as `yolo-kd bench key=value ...` (see README, "Benchmark").

Example, the defect demo data with a cached teacher, 3 seeds:
    python tools/bench.py data=defect teacher=weights/defect_teacher_default.pt imgsz=128 batch=8 epochs=12 \
        seeds=1,2,3 methods=fgd,cskd,pred,cwd,mgd
"""

import sys

from yolo_kd.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
