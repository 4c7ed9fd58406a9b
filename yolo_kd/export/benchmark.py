"""Size, complexity and latency of a model file.

Latency is the model call alone (no image decoding, letterbox or NMS, which are the same for every format), batch 1:
warm-up runs first, then the median of `runs` timed calls, with the same number of CPU threads for every runtime.
"""

from __future__ import annotations

import os
import statistics
import time
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch

from yolo_kd import ultra


def file_size_mb(path: str | Path) -> float:
    """Size in MB (2**20 bytes, as Ultralytics logs it) of a file, or of everything inside a folder."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
    return path.stat().st_size / 2**20


def model_complexity(checkpoint: str | Path, imgsz: int | tuple[int, int]) -> dict:
    """Parameters and GFLOPs at `imgsz` of the fused (Conv+BN) model, i.e. the graph that gets exported."""
    from ultralytics import YOLO

    model = deepcopy(YOLO(str(checkpoint)).model).float().eval()
    model = model.fuse(verbose=False, imgsz=imgsz) if hasattr(model, "fuse") else model
    params = sum(p.numel() for p in model.parameters())
    gflops = ultra.gflops(model, list(imgsz) if isinstance(imgsz, tuple) else imgsz)
    return {"params": int(params), "gflops": float(gflops)}


def _time_calls(call, warmup: int, runs: int, sync=None) -> list[float]:
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        call()
        if sync is not None:
            sync()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def measure_latency(model_file: str | Path, imgsz: int | tuple[int, int], warmup: int = 10, runs: int = 50,
                    device: str | None = "cpu", threads: int | None = None, seed: int = 0) -> dict:
    """Median / mean / min milliseconds per image of one (1, 3, h, w) forward pass of `model_file`.

    .onnx runs in an onnxruntime session and .pt as the fused PyTorch model, both with `threads` intra-op threads
    (default: all CPU cores) so neither runtime gets more cores than the other; any other format runs through
    Ultralytics' AutoBackend. The input is a fixed random image in [0, 1] (conv cost does not depend on pixels).
    """
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    threads = threads or os.cpu_count() or 1
    x = np.random.default_rng(seed).random((1, 3, h, w), dtype=np.float32)
    path = Path(model_file)
    cuda = bool(device) and str(device).lower() not in {"cpu", "none"} and torch.cuda.is_available()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if path.suffix == ".onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
            providers = [p for p in providers if p in ort.get_available_providers()]
            session = ort.InferenceSession(str(path), options, providers=providers)
            feed = {session.get_inputs()[0].name: x}
            times = _time_calls(lambda: session.run(None, feed), warmup, runs)
            runtime = f"onnxruntime {ort.__version__} {session.get_providers()[0]}"
        else:
            dev = ultra.device(device or "cpu")
            if path.suffix == ".pt":
                from ultralytics import YOLO

                model = deepcopy(YOLO(str(path)).model).float().eval().to(dev)
                model = model.fuse(verbose=False, imgsz=(h, w))
                runtime = f"torch {torch.__version__}"
            else:
                model = ultra.backend(path, dev)
                runtime = f"AutoBackend {model.format}"
            im = torch.from_numpy(x).to(dev)
            sync = torch.cuda.synchronize if dev.type == "cuda" else None
            with torch.inference_mode():
                times = _time_calls(lambda: model(im), warmup, runs, sync)
    finally:
        torch.set_num_threads(previous_threads)
    return {
        "median_ms": statistics.median(times) if times else None,
        "mean_ms": statistics.fmean(times) if times else None,
        "min_ms": min(times) if times else None,
        "runs": runs,
        "warmup": warmup,
        "threads": threads,
        "runtime": runtime,
    }
