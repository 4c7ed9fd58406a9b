"""Which export formats yolo-kd offers, and what each needs installed, checked BEFORE anything is written.

Module names come from Ultralytics 8.4.190's exporter: `export_openvino` imports `openvino` (+ `nncf` for INT8);
`tflite` is routed to `export_litert` -> `utils/export/litert.py::torch2litert`, which needs `litert-torch` and
`ai-edge-litert` (+ `ai-edge-quantizer` for INT8) on Linux x86-64 or macOS; `export_engine` asserts a CUDA input
and imports `tensorrt` (TensorRT >= 11 also needs `nvidia-modelopt[onnx]` for INT8); onnx needs `onnx` and, with
the default simplify=True, `onnxslim`. Ultralytics would otherwise try to pip-install at export time (offline:
a failure after files were already written).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys

from yolo_kd.errors import KDConfigError

#: user spelling -> canonical format
FORMAT_ALIASES = {
    "onnx": "onnx",
    "torchscript": "torchscript",
    "openvino": "openvino",
    "tflite": "tflite",
    "litert": "tflite",
    "engine": "engine",
    "tensorrt": "engine",
    "trt": "engine",
}

#: canonical format -> the `format=` Ultralytics 8.4.190 is called with (tflite is deprecated there in favour of litert)
ULTRALYTICS_FORMAT = {"onnx": "onnx", "torchscript": "torchscript", "openvino": "openvino", "tflite": "litert",
                      "engine": "engine"}

#: (import name, pip name) per format, and extra ones for INT8
REQUIREMENTS = {
    "onnx": [("onnx", "onnx"), ("onnxslim", "onnxslim")],
    "torchscript": [],
    "openvino": [("openvino", "openvino")],
    "tflite": [("litert_torch", "litert-torch"), ("ai_edge_litert", "ai-edge-litert")],
    "engine": [("tensorrt", "tensorrt"), ("onnx", "onnx"), ("onnxslim", "onnxslim")],
}
INT8_REQUIREMENTS = {
    "onnx": [("onnxruntime", "onnxruntime")],  # yolo-kd's own quantize_static path
    "openvino": [("nncf", "nncf")],
    "tflite": [("ai_edge_quantizer", "ai-edge-quantizer")],
    "engine": [],
}
#: what running the exported file on data= needs (AutoBackend)
RUNTIME_REQUIREMENTS = {"onnx": [("onnxruntime", "onnxruntime")], "tflite": [("ai_edge_litert", "ai-edge-litert")]}


def canonical_format(fmt: str) -> str:
    """Canonical yolo-kd format name; KDConfigError for anything else."""
    key = str(fmt).strip().lower()
    if key not in FORMAT_ALIASES:
        raise KDConfigError(f"format={fmt} is not supported: use one of onnx, torchscript, openvino, tflite, engine")
    return FORMAT_ALIASES[key]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _tensorrt_major() -> int | None:
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu11"):
        try:
            return int(importlib.metadata.version(dist).split(".")[0])
        except (importlib.metadata.PackageNotFoundError, ValueError):
            continue
    return None


def missing_requirements(fmt: str, int8: bool = False, evaluate: bool = False) -> list[str]:
    """pip names of the packages `fmt` (with INT8 / with evaluation on data=) needs and that are not importable."""
    fmt = canonical_format(fmt)
    needed = list(REQUIREMENTS[fmt])
    if int8:
        needed += INT8_REQUIREMENTS.get(fmt, [])
        if fmt == "engine" and (_tensorrt_major() or 0) >= 11:
            needed.append(("modelopt", "nvidia-modelopt[onnx]"))
    if evaluate:
        needed += RUNTIME_REQUIREMENTS.get(fmt, [])
    missing = []
    for module, pip_name in needed:
        if not _installed(module) and pip_name not in missing:
            missing.append(pip_name)
    return missing


def check_export_requirements(fmt: str, int8: bool = False, evaluate: bool = False) -> str:
    """Raise KDConfigError (naming what to pip install, or the missing hardware) unless `fmt` can be exported here.

    Returns the canonical format name.
    """
    fmt = canonical_format(fmt)
    if int8 and fmt == "torchscript":
        raise KDConfigError("int8=True is not available for format=torchscript: use format=onnx int8=True")
    missing = missing_requirements(fmt, int8, evaluate)
    if fmt == "engine":  # no package makes TensorRT work without a GPU: say that first
        import torch

        if not torch.cuda.is_available():
            then = f" after pip install {' '.join(missing)}" if missing else ""
            raise KDConfigError("format=engine (TensorRT) needs an NVIDIA GPU with CUDA: run it on a CUDA machine "
                                f"with device=0{then}")
    if missing:
        what = f"format={fmt}{' int8=True' if int8 else ''}"
        raise KDConfigError(
            f"{what} needs {', '.join(missing)} which is not installed: pip install {' '.join(missing)}"
        )
    if fmt == "tflite" and not (sys.platform == "darwin" or (sys.platform.startswith("linux")
                                                                and platform.machine().lower() in {"x86_64", "amd64"})):
        raise KDConfigError("format=tflite (LiteRT) exports only on Linux x86-64 or macOS: export on such a machine")
    return fmt
