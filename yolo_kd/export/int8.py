"""ONNX INT8 static quantisation (onnxruntime `quantize_static`, QDQ) calibrated on letterboxed training images.

What is quantised: the Conv layers (weights INT8 per output channel, since conv filters have very different ranges;
activations INT8 per tensor, the only kind the CPU kernels take), except the Detect head's decode tail. The tail is
found by walking back from the graph outputs to the head's last Convs: reshapes, concats, the DFL softmax and its
fixed-weight Conv, anchor arithmetic, the class sigmoid. It stays FP32 because the output concatenates box pixels
(0..imgsz) with class probabilities (0..1): one INT8 scale over both rounds every score to ~0 (the failure
Ultralytics' own `onnx_int8_quantize` avoids the same way). Element-wise ops (SiLU's Sigmoid/Mul, Concat, Resize,
MaxPool) also stay FP32 between quantised Convs: measured on yolov8n at 320 px, 2 CPU threads, quantising them
too was slower (42.6 ms vs 30.2 ms, FP32 73.2 ms) and lost more mAP (-0.66 vs -0.22 points at 64 px).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from yolo_kd.errors import KDConfigError


def letterbox_tensor(image_file: str | Path, imgsz: tuple[int, int]) -> np.ndarray:
    """Load one image and preprocess it like Ultralytics: letterbox (114 padding, centred), BGR->RGB, CHW, /255.

    Returns a float32 (1, 3, h, w) array.
    """
    from ultralytics.data.augment import LetterBox

    image = cv2.imread(str(image_file))
    if image is None:
        raise KDConfigError(f"cannot read calibration image {image_file}: remove it or fix the train split")
    boxed = LetterBox(new_shape=tuple(imgsz), auto=False, scaleup=True)(image=image)
    chw = boxed[:, :, ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(chw, dtype=np.float32)[None] / 255.0


def select_calibration_images(image_files: Sequence[str], calib: int | float) -> list[str]:
    """`calib` images spread evenly over `image_files` (int: a count; float in (0, 1]: a fraction)."""
    files = list(image_files)
    if not files:
        raise KDConfigError("no calibration images: the data.yaml train split is empty, add images or pick another data=")
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
) -> Path:
    """Statically quantise an FP32 YOLO ONNX to INT8 (QDQ) and keep its Ultralytics metadata.

    Args:
        onnx_path: FP32 model exported by Ultralytics (static shape).
        calibration_images: image files to calibrate activation ranges on (letterboxed like Ultralytics).
        output_path: defaults to `<stem>_int8.onnx` beside the FP32 file.
        per_channel: per-output-channel weight scales.

    Returns:
        Path of the INT8 model. On any failure nothing is left at `output_path`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

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
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
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
            value=f"int8 static QDQ onnxruntime, per_channel={per_channel}, {len(calibration_images)} calibration images",
        )
        onnx.save(int8, str(output_path))
    except BaseException:
        output_path.unlink(missing_ok=True)
        raise
    return output_path
