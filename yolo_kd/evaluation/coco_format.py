"""YOLO dataset -> COCO ground truth, and model detections -> COCO results.

The ground truth is read with the same helpers Ultralytics' validator uses (`img2label_paths`,
`verify_image_label`), so the COCO json holds exactly the boxes Ultralytics scores against: exif-corrected image
sizes, duplicate rows removed, polygon labels reduced to their boxes, corrupt images skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from yolo_kd.errors import KDConfigError, first_line
from yolo_kd.files import list_image_files
from yolo_kd.ultra import label_paths, read_image_labels, resolve_dataset


def image_key(path: str | Path) -> str:
    """The key that matches an image file across tools: absolute and normalised, symlinks kept as they are."""
    return os.path.normpath(os.path.abspath(os.fspath(path)))


@dataclass
class EvalSet:
    """One evaluation split: its COCO ground truth and how to reach it from Ultralytics' side.

    Attributes:
        gt: COCO ground-truth dict (images, annotations, categories).
        image_ids: `image_key(image file)` -> COCO image id.
        category_ids: model class index -> COCO category id (contiguous 1..nc for YOLO datasets).
        names: class names in model index order.
        data_yaml: the YOLO data.yaml Ultralytics validates on (a converted one for COCO-format input).
        split: the data.yaml split evaluated.
    """

    gt: dict
    image_ids: dict[str, int]
    category_ids: list[int]
    names: list[str]
    data_yaml: str
    split: str = "val"
    notes: list[str] = field(default_factory=list)

    def class_index(self, category_id: int) -> int:
        """COCO category id -> model class index."""
        try:
            return self.category_ids.index(int(category_id))
        except ValueError:
            raise KDConfigError(f"category id {category_id} is not in the ground truth: use one of {self.category_ids}")


def yolo_labels_to_coco(
    image_files: Sequence[str | Path], names: Sequence[str], category_ids: Sequence[int] | None = None
) -> tuple[dict, dict[str, int]]:
    """COCO ground-truth dict from images and their YOLO label files (Ultralytics' /images/ -> /labels/ rule).

    Image ids are 1..N in the given order; category ids default to 1..nc (class index + 1). Boxes are COCO
    [x, y, w, h] in pixels of the original image, `area = w * h`, `iscrowd = 0`, annotation ids 1..M.

    Returns:
        (gt, image_ids) where image_ids maps `image_key(file)` -> image id.
    """
    category_ids = list(category_ids) if category_ids is not None else list(range(1, len(names) + 1))
    if len(category_ids) != len(names):
        raise KDConfigError(f"{len(names)} class names but {len(category_ids)} category ids: give one id per class")
    image_files = [str(f) for f in image_files]
    common = os.path.commonpath([os.path.dirname(image_key(f)) for f in image_files]) if image_files else ""
    images, annotations, image_ids = [], [], {}
    for image_file, label_file in zip(image_files, label_paths(image_files)):
        im_file, labels, shape, _, _, _, _, _, corrupt, msg = read_image_labels(image_file, label_file, len(names))
        if corrupt or im_file is None:  # Ultralytics drops these from validation too
            continue
        height, width = int(shape[0]), int(shape[1])
        image_id = len(images) + 1
        images.append(
            {
                "id": image_id,
                "file_name": Path(os.path.relpath(image_key(image_file), common)).as_posix(),
                "width": width,
                "height": height,
            }
        )
        image_ids[image_key(image_file)] = image_id
        for cls, cx, cy, w, h in np.asarray(labels, dtype=np.float64).reshape(-1, 5):
            bw, bh = w * width, h * height
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_ids[int(cls)],
                    "bbox": [(cx - w / 2) * width, (cy - h / 2) * height, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": cid, "name": str(n), "supercategory": ""} for cid, n in zip(category_ids, names)]
    gt = {"info": {"description": "yolo-kd ground truth"}, "images": images, "annotations": annotations,
          "categories": categories}
    return gt, image_ids


def resolve_yolo_data(data: str | Path, split: str = "val") -> dict:
    """Ultralytics' `check_det_dataset` on a data.yaml (offline-safe), with user mistakes as KDConfigError."""

    from yolo_kd.offline import install_local_fonts

    path = Path(data)
    if not path.is_file():
        raise KDConfigError(f"data={data} does not exist: pass the path of a YOLO data.yaml or a COCO instances_*.json")
    install_local_fonts()
    try:
        info = resolve_dataset(path)
    except Exception as e:  # Ultralytics raises FileNotFoundError/SyntaxError with multi-line text
        first = first_line(e)
        raise KDConfigError(f"data={data} cannot be used ({first}): fix the data.yaml paths/names") from e
    if not info.get(split):
        raise KDConfigError(f"data={data} has no '{split}:' split: add it to the data.yaml or pass split=<name>")
    return info


def yolo_dataset_to_coco(data: str | Path, split: str = "val") -> EvalSet:
    """COCO ground truth of one split of a YOLO data.yaml (resolved with Ultralytics' `check_det_dataset`)."""
    info = resolve_yolo_data(data, split)
    names = [str(info["names"][i]) for i in sorted(info["names"])]
    gt, image_ids = yolo_labels_to_coco(list_image_files(info[split]), names)
    return EvalSet(gt=gt, image_ids=image_ids, category_ids=list(range(1, len(names) + 1)), names=names,
                   data_yaml=str(data), split=split)


def detections_to_coco_results(
    detections: Iterable[dict[str, Any]], image_ids: dict[str, int], category_ids: Sequence[int]
) -> list[dict]:
    """Model detections -> COCO results list.

    Args:
        detections: one dict per image: `im_file`, `bboxes` (N, 4) xyxy pixels of the original image,
            `conf` (N,), `cls` (N,) model class indices.
        image_ids: `image_key(file)` -> COCO image id (from the ground truth).
        category_ids: model class index -> COCO category id.

    Returns:
        [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]
    """
    results = []
    for det in detections:
        key = image_key(det["im_file"])
        if key not in image_ids:
            raise KDConfigError(
                f"prediction for {det['im_file']} which is not in the ground truth: evaluate the same split"
            )
        image_id = image_ids[key]
        boxes = np.asarray(det["bboxes"], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(det["conf"], dtype=np.float64).reshape(-1)
        classes = np.asarray(det["cls"]).reshape(-1).astype(int)
        for (x1, y1, x2, y2), score, cls in zip(boxes.tolist(), scores.tolist(), classes.tolist()):
            if not 0 <= cls < len(category_ids):
                raise KDConfigError(
                    f"model predicted class {cls} but the data has {len(category_ids)} classes: "
                    "evaluate the model on the dataset it was trained for"
                )
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(category_ids[cls]),
                    "bbox": [round(x1, 4), round(y1, 4), round(x2 - x1, 4), round(y2 - y1, 4)],
                    "score": round(score, 6),
                }
            )
    return results
