"""Get a model's detections and Ultralytics' own metrics from ONE run of Ultralytics' validator.

Why the validator and not `YOLO(model).predict`: the validator is the code that produces Ultralytics' mAP, so its
detections (same letterbox/rect batching, same NMS with conf/iou/max_det, boxes scaled back to original pixels by
`scale_preds`) are exactly what Ultralytics scored. Capturing them makes the pycocotools vs Ultralytics comparison
differ only by the metric, not by inference, and costs one pass instead of two. It works for every format
AutoBackend loads (.pt, .onnx, .torchscript, OpenVINO...), so exported files take the same path.

The capture overrides `update_metrics` instead of turning on `save_json`: in 8.4.190 `save_json` on a custom dataset
also builds Ultralytics' own COCO json and asks for `faster-coco-eval` (an install attempt offline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo_kd.errors import KDConfigError, first_line
from yolo_kd.ultra import capturing_validator


def load_detector(model: str | Path, nc: int | None = None):
    """`YOLO(model)` for a detection model; KDConfigError for a missing file, another task or a class-count mismatch."""
    from ultralytics import YOLO

    path = Path(model)
    if not path.exists():
        raise KDConfigError(f"model={model} does not exist: pass a trained checkpoint such as runs/.../weights/best.pt")
    try:
        yolo = YOLO(str(path), task="detect")
    except Exception as e:
        first = first_line(e)
        raise KDConfigError(
            f"model={model} cannot be loaded ({first}): pass an Ultralytics checkpoint or export"
        ) from e
    if yolo.task != "detect":
        raise KDConfigError(f"model={model} is a '{yolo.task}' model: yolo-kd evaluates detection models only")
    names = yolo.names if isinstance(yolo.names, dict) else dict(enumerate(yolo.names or []))
    if nc is not None and names and len(names) != nc:
        raise KDConfigError(
            f"model={model} has {len(names)} classes but the data has {nc}: evaluate on the dataset it was trained for"
        )
    return yolo


def ultralytics_val(
    model: str | Path, data_yaml: str | Path, save_dir: Path, nc: int | None = None, **val_args: Any
) -> tuple[dict, list[dict], dict]:
    """Run `YOLO(model).val(data=data_yaml, ...)` once and capture its detections.

    Returns:
        (ultralytics_metrics, detections, run_info): metrics are Ultralytics' own (mAP50-95, mAP50, mAP75, precision,
        recall, per-class AP); detections are one dict per image (`im_file`, `bboxes` xyxy pixels, `conf`, `cls`);
        run_info holds the imgsz/batch/rect/conf/iou/max_det the validator actually used and its speed.
    """
    yolo = load_detector(model, nc)
    detections: list[dict] = []
    info: dict = {}
    args = {k: v for k, v in val_args.items() if v is not None}
    save_dir = Path(save_dir)
    metrics = yolo.val(
        validator=capturing_validator(detections, info),
        data=str(data_yaml),
        project=str(save_dir.parent),
        name=save_dir.name,
        exist_ok=True,
        plots=False,
        save_json=False,
        verbose=False,
        **args,
    )
    box = metrics.box
    per_class = {
        str(metrics.names[int(c)]): {"AP50-95": float(box.ap[i]), "AP50": float(box.ap50[i])}
        for i, c in enumerate(box.ap_class_index)
    }
    ultra = {
        "mAP50-95": float(box.map),
        "mAP50": float(box.map50),
        "mAP75": float(box.map75),
        "precision": float(box.mp),
        "recall": float(box.mr),
        "per_class": per_class,
    }
    return ultra, detections, info
