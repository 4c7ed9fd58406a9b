"""Checks of a run's inputs that Ultralytics only warns about (or silently fixes), done before training starts.

Distillation compares student and teacher maps cell by cell, so a silently rounded image size or a dataset without
a single box (FGD's focal masks, CSKD's assigned anchors) gives a run that trains but distils nothing useful.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .errors import KDConfigError
from .files import list_image_files
from .ultra import find_dataset_yaml, label_paths

MIN_GRID = 32  # Ultralytics trains at multiples of max(largest model stride, 32) (BaseTrainer._setup_train)


def image_size(imgsz) -> int | None:
    """The training size Ultralytics uses for `imgsz` (int, '640', [h, w] -> max), or None when it is not a size."""
    if isinstance(imgsz, str) and imgsz.strip().isdigit():
        imgsz = int(imgsz)
    if isinstance(imgsz, (list, tuple)) and imgsz and all(isinstance(v, int) for v in imgsz):
        imgsz = max(imgsz)
    return imgsz if isinstance(imgsz, int) and not isinstance(imgsz, bool) else None


def size_fixes(imgsz, stride: int) -> str | None:
    """None when `imgsz` is a multiple of `stride` (or not a size at all), else the nearest valid sizes ('64 or 96')."""
    size = image_size(imgsz)
    if size is None or size % stride == 0:
        return None
    below, above = size // stride * stride, math.ceil(size / stride) * stride
    return " or ".join(str(v) for v in sorted({max(below, stride), above}))


def check_imgsz(imgsz, stride: int) -> None:
    """The student's `imgsz` must be a multiple of its grid; Ultralytics would round it up with a warning."""
    fixes = size_fixes(imgsz, stride)
    if fixes:
        raise KDConfigError(f"imgsz={imgsz} is not a multiple of the largest stride {stride}: use imgsz={fixes}")


def check_teacher_imgsz(name: str, imgsz, stride: int) -> None:
    """A teacher's own input size must be a multiple of its grid (max(largest stride, 32), as Ultralytics trains)."""
    fixes = size_fixes(imgsz, max(stride, MIN_GRID))
    if fixes:
        raise KDConfigError(f"teacher '{name}' imgsz={imgsz} is not a multiple of its largest stride "
                            f"{max(stride, MIN_GRID)}: set teacher_imgsz (or the recipe's teacher imgsz) to {fixes}")


def check_student_task(task, model) -> None:
    """yolo-kd distils detection students only (Ultralytics sets `task` from the model: yolov8n-seg.yaml -> segment)."""
    if task not in (None, "detect"):
        raise KDConfigError(f"the student {model} is a '{task}' model, but yolo-kd distils detection only "
                            "(task=detect): use a detect model such as yolov8n.yaml or yolo11n.yaml")


def locate_data(data: str) -> str:
    """The file behind `data=`: a local path, or a dataset yaml Ultralytics ships (coco8.yaml); KDConfigError when
    it is neither (Ultralytics would fail inside the trainer, after the run folder is made)."""
    if Path(data).exists():
        return data
    found = find_dataset_yaml(data)
    if found is None:
        raise KDConfigError(f"data={data} not found: no such file, and not a dataset Ultralytics ships (e.g. "
                            "coco8.yaml): pass the path of your data.yaml")
    return found


def check_train_labels(data: dict) -> None:
    """The train split must hold at least one non-empty YOLO label file (stops at the first one found)."""
    try:
        images = list_image_files(data.get("train") or [])
    except KDConfigError:
        return  # a missing path or no images: Ultralytics raises its own error for those
    labels = label_paths(images)
    for label in labels:
        try:
            if os.path.getsize(label) and Path(label).read_text(errors="ignore").strip():
                return
        except OSError:
            continue
    name = data.get("yaml_file") or data.get("path") or data.get("train")
    raise KDConfigError(
        f"dataset {name} has no labels in its train split ({len(images)} images, no non-empty label file such as "
        f"{labels[0]}): add YOLO .txt label files under labels/ next to images/, one 'class x y w h' line per box"
    )
