#!/usr/bin/env python
"""Score the target a teacher gives the student, decoded on the student's grid (yolo_kd/target_check.py).

    python tools/teacher_target_map.py teacher=teacher.pt data=data.yaml imgsz=320 teacher_imgsz=640

Prints mAP50-95 / mAP50 (pycocotools, the val split) of: the teacher fed the student's batch; and, with
teacher_imgsz, the teacher decoded on its own grid and its target on the student's grid under each level pairing.
Use it before `teacher_imgsz=`: a target that scores below the teacher at the student's size cannot teach more.
"""

import sys

from yolo_kd.errors import KDConfigError
from yolo_kd.offline import setup_offline
from yolo_kd.options import as_int, as_str, existing_file, optional, parse_tokens, read_options
from yolo_kd.target_check import target_map

SPEC = {
    "teacher": (existing_file, ..., "the teacher .pt"),
    "data": (existing_file, ..., "a YOLO data.yaml"),
    "imgsz": (as_int, 640, "the student's image size"),
    "teacher_imgsz": (optional(as_int), None, "the teacher's own size (default: the student's)"),
    "split": (as_str, "val", "the data split scored"),
}


def main(argv: list[str]) -> int:
    try:
        positional, overrides = parse_tokens(argv)
        if positional == ["help"]:
            print("\n".join(f"{k}={'' if d is ... else d}  {h}" for k, (_, d, h) in SPEC.items()))
            return 0
        if positional:
            raise KDConfigError(f"unexpected {positional}: every option is key=value, e.g. imgsz=320")
        opts = read_options("target-map", overrides, SPEC, prog="python tools/teacher_target_map.py")
        setup_offline()
        stats = target_map(opts["teacher"], opts["data"], opts["imgsz"], opts["teacher_imgsz"], opts["split"])
    except KDConfigError as e:
        print(f"teacher_target_map: error: {e}", file=sys.stderr)
        return 2
    print("| target | mAP50-95 | mAP50 |\n|---|---|---|")
    for name, s in stats.items():
        print(f"| {name} | {s['mAP50-95']:.4f} | {s['mAP50']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
