"""Export for yolo-kd: Ultralytics export, ONNX INT8 static quantisation, size/latency/mAP comparison."""

from yolo_kd.export.benchmark import file_size_mb, measure_latency, model_complexity
from yolo_kd.export.export import export_command
from yolo_kd.export.int8 import make_calibration_reader, quantize_onnx_int8
from yolo_kd.export.requirements import check_export_requirements, missing_requirements

__all__ = [
    "check_export_requirements",
    "export_command",
    "file_size_mb",
    "make_calibration_reader",
    "measure_latency",
    "missing_requirements",
    "model_complexity",
    "quantize_onnx_int8",
]
