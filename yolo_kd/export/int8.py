"""ONNX INT8 static quantisation (onnxruntime `quantize_static`, QDQ) calibrated on letterboxed training images.

What is quantised: the Conv layers (weights INT8 per output channel, since conv filters have very different ranges;
activations per tensor, the only kind the CPU kernels take), except the Detect head's decode tail. The tail is
found by walking back from the graph outputs to the head's last Convs: reshapes, concats, the DFL softmax and its
fixed-weight Conv, anchor arithmetic, the class sigmoid. It stays FP32 because the output concatenates box pixels
(0..imgsz) with class probabilities (0..1): one INT8 scale over both rounds every score to ~0 (the failure
Ultralytics' own `onnx_int8_quantize` avoids the same way). Element-wise ops (SiLU's Sigmoid/Mul, Concat, Resize,
MaxPool) also stay FP32 between quantised Convs: quantising them too was slower and lost more mAP when measured.

Activation type (`activation=`), measured on yolov8n (2-core AVX2 x86 without VNNI, 1 thread, 320 px; mAP50-95 of
a 64 px model, FP32 0.7372):
  - "int8"  (S8S8, onnxruntime's default; the default here): -0.2 points; 47-51 ms vs FP32 31 ms on this CPU,
    since AVX2 without VNNI has no fast S8S8 kernel. ARM64 and VNNI x86 CPUs run it fast.
  - "uint8" (U8S8 with reduce_range=True, 7-bit weights, onnxruntime's advice against U8S8 saturation on such
    CPUs): -1.1 points; 25 ms. Without reduce_range it lost 3.1 points.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from yolo_kd.errors import KDConfigError
from yolo_kd.ultra import letterbox


def letterbox_tensor(image_file: str | Path, imgsz: tuple[int, int]) -> np.ndarray:
    """Load one image and preprocess it like Ultralytics: letterbox (114 padding, centred), BGR->RGB, CHW, /255.

    Returns a float32 (1, 3, h, w) array.
    """
    image = cv2.imread(str(image_file))
    if image is None:
        raise KDConfigError(f"cannot read calibration image {image_file}: remove it or fix the train split")
    boxed = letterbox(image, imgsz)
    chw = boxed[:, :, ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(chw, dtype=np.float32)[None] / 255.0


def select_calibration_images(image_files: Sequence[str], calib: int | float) -> list[str]:
    """`calib` images spread evenly over `image_files` (int: a count; float in (0, 1]: a fraction)."""
    files = list(image_files)
    if not files:
        raise KDConfigError("no calibration images: the train split of data= is empty, add images or use other data=")
    n = max(1, round(len(files) * calib)) if isinstance(calib, float) else min(int(calib), len(files))
    idx = np.linspace(0, len(files) - 1, n).round().astype(int)
    return [files[i] for i in sorted(set(idx.tolist()))]


def make_calibration_reader(image_files: Sequence[str | Path], imgsz: tuple[int, int], input_name: str = "images"):
    """An onnxruntime `CalibrationDataReader` yielding one letterboxed image per call."""
    from onnxruntime.quantization import CalibrationDataReader

    class LetterboxCalibrationReader(CalibrationDataReader):
        """Feeds `images` preprocessed exactly as Ultralytics does at inference (see `letterbox_tensor`)."""

        def __init__(self):
            self.files = [str(f) for f in image_files]
            self.rewind()

        def get_next(self):
            f = next(self._iter, None)
            return None if f is None else {input_name: letterbox_tensor(f, imgsz)}

        def rewind(self):
            self._iter = iter(self.files)

        def __len__(self):
            return len(self.files)

    return LetterboxCalibrationReader()


#: op types quantised (everything else runs in FP32 between QDQ pairs)
QUANTIZED_OPS = {"Conv", "Gemm", "MatMul"}


def nodes_kept_fp32(model) -> list[str]:
    """Nodes left in FP32: every non-Conv/Gemm/MatMul node and the whole decode tail (DFL Conv included)."""
    keep = set(decode_tail_nodes(model))
    keep.update(n.name for n in model.graph.node if n.op_type not in QUANTIZED_OPS)
    return [n.name for n in model.graph.node if n.name in keep]


def decode_tail_nodes(model) -> list[str]:
    """Names of the nodes between the head's last Convs and the graph outputs (kept FP32), DFL Conv included."""
    producer = {out: node for node in model.graph.node for out in node.output}
    tail, stack, seen = [], [o.name for o in model.graph.output], set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv" and "dfl" not in node.name.lower():
            continue  # a head Conv: quantised, and the walk stops here
        tail.append(node.name)
        stack.extend(node.input)
    return tail


def onnx_input(model) -> tuple[str, tuple[int, int]]:
    """Name and static (h, w) of the model input."""
    inp = model.graph.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4 or not dims[2] or not dims[3]:
        raise KDConfigError("INT8 calibration needs a static-shape ONNX: export without dynamic=True")
    return inp.name, (int(dims[2]), int(dims[3]))


def quantize_onnx_int8(
    onnx_path: str | Path,
    calibration_images: Sequence[str | Path],
    output_path: str | Path | None = None,
    per_channel: bool = True,
    activation: str = "int8",
) -> Path:
    """Statically quantise an FP32 YOLO ONNX to INT8 (QDQ) and keep its Ultralytics metadata.

    Args:
        onnx_path: FP32 model exported by Ultralytics (static shape).
        calibration_images: image files to calibrate activation ranges on (letterboxed like Ultralytics).
        output_path: defaults to `<stem>_int8.onnx` beside the FP32 file.
        per_channel: per-output-channel weight scales.
        activation: "int8" (S8S8) or "uint8" (U8S8 + reduce_range, faster on AVX2 x86 without VNNI).

    Returns:
        Path of the INT8 model. On any failure nothing is left at `output_path`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if activation not in {"int8", "uint8"}:
        raise KDConfigError(f"int8_act={activation} is not supported: use int8_act=int8 or int8_act=uint8")
    onnx_path = Path(onnx_path)
    output_path = Path(output_path) if output_path else onnx_path.with_name(f"{onnx_path.stem}_int8.onnx")
    fp32 = onnx.load(str(onnx_path))
    input_name, imgsz = onnx_input(fp32)
    try:
        with tempfile.TemporaryDirectory(prefix="yolo_kd_int8_") as tmp:
            source = Path(tmp) / "pre.onnx"
            try:  # shape inference + graph cleanup, as onnxruntime recommends before quantisation
                quant_pre_process(str(onnx_path), str(source), skip_symbolic_shape=True)
            except Exception:
                source = onnx_path
            exclude = nodes_kept_fp32(onnx.load(str(source)))  # names after pre-processing
            quantize_static(
                str(source),
                str(output_path),
                make_calibration_reader(calibration_images, imgsz, input_name),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QInt8 if activation == "int8" else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                reduce_range=activation == "uint8",
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=exclude,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
        int8 = onnx.load(str(output_path))
        del int8.metadata_props[:]
        for prop in fp32.metadata_props:  # AutoBackend reads imgsz/names/stride/task from here
            int8.metadata_props.add(key=prop.key, value=prop.value)
        int8.metadata_props.add(
            key="quantization",
            value=f"int8 static QDQ onnxruntime, activations {activation}, weights int8 per_channel={per_channel}, "
            f"{len(calibration_images)} calibration images",
        )
        onnx.save(int8, str(output_path))
    except BaseException:
        output_path.unlink(missing_ok=True)
        raise
    return output_path
