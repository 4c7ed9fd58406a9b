"""`yolo-kd bench`: baseline vs Ultralytics' built-in KD vs yolo-kd methods over seeds, plus a step-time bench."""

from .command import BENCH_SPEC, bench_command, bench_options

__all__ = ["BENCH_SPEC", "bench_command", "bench_options"]
