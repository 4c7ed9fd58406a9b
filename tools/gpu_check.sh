#!/usr/bin/env bash
# yolo-kd on one CUDA GPU with AMP, in under 8 minutes, fully offline; exits 1 on any NaN skip.
#
#   bash tools/gpu_check.sh                # the GPU check (DEVICE=0 by default)
#   QUICK=1 bash tools/gpu_check.sh        # the same script as a small CPU smoke run (a few minutes)
#
# 1. builds its own data (procedural steel defects, yolo_kd.data) and trains a yolov8s teacher from its yaml;
# 2. AMP training of a yolov8n student with every registered method at once, the teacher at the student's size,
#    at 2x and at 1.5x (a non-whole ratio): kd_nan_skips (results.csv) must be 0 and every KD column finite;
# 3. a 640 px student for a few hundred steps: plain, the yolo-kd default recipe and the Ultralytics built-in
#    (distill_model=) side by side: median step time, ratio to plain, peak GPU memory.
# Output: $OUT_DIR (default runs/gpu_check[_quick]): the runs, summary.json, and a table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
export YOLO_OFFLINE=1 MPLBACKEND=Agg PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT_DIR="${OUT_DIR:-runs/gpu_check$([ "${QUICK:-0}" = 1 ] && echo _quick)}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
export OUT_DIR YOLO_CONFIG_DIR="${YOLO_CONFIG_DIR:-$OUT_DIR/config}"  # fonts and settings stay in the output folder
exec python - <<'PY'
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

QUICK = os.environ.get("QUICK", "0") == "1"
OUT = Path(os.environ["OUT_DIR"]).resolve()
CUDA = not QUICK
if CUDA and not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device here: run QUICK=1 bash tools/gpu_check.sh for the CPU smoke run")
DEVICE = os.environ.get("DEVICE", "0") if CUDA else "cpu"
# sizes: student s, teacher at s, 2s and 1.5s (multiples of 32); the big run at `big` px for `big_epochs` epochs
P = (dict(n_train=16, n_val=8, data_imgsz=128, teacher_epochs=1, s=64, kd_epochs=1, big=128, big_epochs=2, batch=4,
          warm=2, workers=0) if QUICK else
     dict(n_train=320, n_val=40, data_imgsz=320, teacher_epochs=20, s=128, kd_epochs=3, big=640, big_epochs=10,
          batch=16, warm=20, workers=4))  # big run: 320 / 16 = 20 steps per epoch, 200 steps

import ultralytics.engine.trainer as engine_trainer
from ultralytics import YOLO

import yolo_kd
from yolo_kd.data.steel import make_steel_dataset
from yolo_kd.methods import METHODS
from yolo_kd.offline import install_local_fonts
from yolo_kd.recipe import DEFAULT_METHOD

if CUDA:  # AMP stays on: Ultralytics' check_amp would download yolo26n.pt (offline here); AMP is what we test
    engine_trainer.check_amp = lambda model: True
install_local_fonts()
COMMON = dict(batch=P["batch"], nbs=P["batch"], workers=P["workers"], device=DEVICE, plots=False, seed=0,
              amp=CUDA, verbose=False, exist_ok=True, project=str(OUT))
t0 = time.time()


def log(msg):
    print(f"[gpu_check {time.time() - t0:6.0f}s] {msg}", flush=True)


def last_row(run: Path) -> dict:
    import csv

    with open(run / "results.csv") as f:
        rows = [{k.strip(): v.strip() for k, v in r.items()} for r in csv.DictReader(f)]
    return rows[-1]


class StepClock:
    """Callbacks: time at each batch end (device synchronised) and the peak GPU memory of the training steps."""

    def __init__(self):
        self.times, self.peak = [], 0

    def start(self, trainer):
        if CUDA:
            torch.cuda.reset_peak_memory_stats()

    def batch_end(self, trainer):
        if CUDA:
            torch.cuda.synchronize()
            self.peak = max(self.peak, torch.cuda.max_memory_allocated())
        self.times.append(time.perf_counter())

    def median_step(self) -> float:
        steps = [b - a for a, b in zip(self.times, self.times[1:])][P["warm"]:]
        return statistics.median(steps)  # robust to the epoch boundaries (validation, loader restart)


data = make_steel_dataset(OUT / "data", n_train=P["n_train"], n_val=P["n_val"], imgsz=P["data_imgsz"])
log(f"data {data} ({P['n_train']} train images)")
teacher_pt = OUT / "teacher" / "weights" / "best.pt"
if not teacher_pt.is_file():
    YOLO("yolov8s.yaml").train(data=str(data), epochs=P["teacher_epochs"], imgsz=2 * P["s"], name="teacher", **COMMON)
log(f"teacher {teacher_pt}")

failures, summary = [], {"quick": QUICK, "device": torch.cuda.get_device_name() if CUDA else "cpu", "amp": CUDA}
methods = "+".join(sorted(METHODS))
for label, t_size in (("same", None), ("2x", 2 * P["s"]), ("1.5x", 3 * P["s"] // 2)):
    name = f"all_methods_{label}"
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(teacher_pt), method=methods, teacher_imgsz=t_size)
    model.train(data=str(data), epochs=P["kd_epochs"], imgsz=P["s"], name=name, val=False, **COMMON)
    row = last_row(OUT / name)
    skips = float(row["kd_nan_skips"])
    terms = {k[len("train/"):]: float(v) for k, v in row.items() if k.startswith("train/")}
    bad = [k for k, v in terms.items() if not math.isfinite(v)]
    summary[name] = {"teacher_imgsz": t_size or P["s"], "kd_nan_skips": skips, "train": terms}
    if skips or bad:
        failures.append(f"{name}: kd_nan_skips={skips:g}, non-finite {bad}")
    log(f"{name}: teacher at {t_size or P['s']} px, kd_nan_skips {skips:g}, "
        + ", ".join(f"{k} {v:.4g}" for k, v in terms.items()))

bench = {}
for label in ("plain", "yolo-kd default", "built-in"):
    clock = StepClock()
    model = YOLO("yolov8n.yaml")
    model.add_callback("on_train_start", clock.start)
    model.add_callback("on_train_batch_end", clock.batch_end)
    extra = {}
    if label == "yolo-kd default":
        yolo_kd.distill(model, teacher=str(teacher_pt))
    elif label == "built-in":
        extra = dict(distill_model=str(teacher_pt), dis=6.0)
    name = f"big_{label.replace(' ', '_').replace('-', '')}"
    model.train(data=str(data), epochs=P["big_epochs"], imgsz=P["big"], name=name, val=False, **COMMON, **extra)
    row = last_row(OUT / name)
    bench[label] = {"steps": len(clock.times), "median_step_s": clock.median_step(), "peak_mem_gib": clock.peak / 2**30,
                    "kd_nan_skips": float(row.get("kd_nan_skips", 0) or 0)}
    if bench[label]["kd_nan_skips"]:
        failures.append(f"{name}: kd_nan_skips={bench[label]['kd_nan_skips']:g}")
    log(f"{name}: {bench[label]}")
plain = bench["plain"]["median_step_s"]
for b in bench.values():
    b["ratio_to_plain"] = b["median_step_s"] / plain
summary["big"] = {"imgsz": P["big"], "batch": P["batch"], "default_method": DEFAULT_METHOD, "runs": bench,
                  "yolo_kd_vs_builtin": bench["yolo-kd default"]["median_step_s"] / bench["built-in"]["median_step_s"]}
summary["wall_s"] = round(time.time() - t0, 1)
summary["failures"] = failures
(OUT / "summary.json").write_text(json.dumps(summary, indent=2))

print(f"\n| {P['big']} px, batch {P['batch']} | steps | median step (ms) | x plain | peak GPU memory (GiB) |")
print("|---|---|---|---|---|")
for label, b in bench.items():
    print(f"| {label} | {b['steps']} | {1000 * b['median_step_s']:.1f} | {b['ratio_to_plain']:.2f} | "
          f"{b['peak_mem_gib']:.2f} |")
print(f"\nyolo-kd default ({DEFAULT_METHOD}) / built-in step time: {summary['big']['yolo_kd_vs_builtin']:.2f}; "
      f"device {summary['device']}, AMP {CUDA}, {summary['wall_s']:.0f} s in all; {OUT / 'summary.json'}")
if failures:
    print("gpu_check FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("gpu_check passed: no NaN skip in any run")
PY
