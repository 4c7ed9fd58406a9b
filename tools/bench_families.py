#!/usr/bin/env python
"""The per-family bench (yolo_kd/bench/families.py): YOLO11, YOLO26 and a mixed pair, the default recipe and its box-
and quality-aware variants against the baseline and Ultralytics' built-in KD, seed by seed.

    python tools/bench_families.py data=/path/pets/data.yaml imgsz=128 epochs=4 teacher_epochs=20 seeds=1,2,3,4,5

Writes <project>/<name>/families.md, families.json and one families_<pair>.png per pair. Re-run to resume.
"""

import sys
from pathlib import Path

from yolo_kd.bench.families import DEFAULT, VARIANTS, family_bench
from yolo_kd.errors import KDConfigError
from yolo_kd.offline import setup_offline
from yolo_kd.options import as_count, as_int, as_list, as_nonnegative, as_str, existing_file, optional, parse_tokens, read_options

SPEC = {
    "data": (existing_file, ..., "a YOLO data.yaml"),
    "imgsz": (as_int, 640, "image size of every run"),
    "epochs": (as_int, 10, "student epochs"),
    "teacher_epochs": (as_int, 30, "teacher epochs (yolo11s and yolo26s, trained first)"),
    "batch": (as_int, 8, "batch size (nbs is set to it)"),
    "seeds": (as_list(int), [1, 2, 3, 4, 5], "seeds; each has its own baselines"),
    "dis": (as_nonnegative, 6.0, "the built-in's weight"),
    "variants": (optional(as_list()), None, f"yolo-kd rows to run: all, or some of {', '.join(VARIANTS)}, "
                                                  f"or {DEFAULT} (each pair's default row)"),
    "project": (as_str, "runs/kd_bench", "output folder"),
    "name": (as_str, "families", "run name"),
    "device": (as_str, "cpu", "cpu or a CUDA device"),
    "workers": (as_count, 2, "data loader workers"),
}


def main(argv: list[str]) -> int:
    try:
        positional, overrides = parse_tokens(argv)
        if positional == ["help"]:
            print("\n".join(f"{k}={'' if d is ... else d}  {h}" for k, (_, d, h) in SPEC.items()))
            return 0
        if positional:
            raise KDConfigError(f"unexpected {positional}: every option is key=value, e.g. imgsz=128")
        opts = read_options("families", overrides, SPEC, prog="python tools/bench_families.py")
        unknown = sorted(set(opts["variants"] or []) - set(VARIANTS) - {DEFAULT})
        if unknown:
            raise KDConfigError(f"variants {unknown} are unknown: pick from {', '.join(VARIANTS)} or {DEFAULT}")
    except KDConfigError as e:
        print(f"bench_families: error: {e}", file=sys.stderr)
        return 2
    setup_offline()
    out = Path(opts["project"]) / opts["name"]
    train_args = {"data": str(opts["data"]), "epochs": opts["epochs"], "imgsz": opts["imgsz"], "batch": opts["batch"],
                  "nbs": opts["batch"], "device": opts["device"], "workers": opts["workers"], "deterministic": True,
                  "plots": False, "val": False, "exist_ok": True, "project": str(out.resolve())}
    family_bench(opts, train_args, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
