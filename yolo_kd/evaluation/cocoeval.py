"""Run pycocotools' COCOeval (bbox) and return its 12 standard stats by name plus a per-class AP table."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np

#: Names of `COCOeval.stats` in order (maxDets=100 unless stated; -1 means "no ground truth in that range").
STAT_NAMES = (
    "mAP50-95",
    "mAP50",
    "mAP75",
    "mAP_small",
    "mAP_medium",
    "mAP_large",
    "AR_max1",
    "AR_max10",
    "AR_max100",
    "AR_small",
    "AR_medium",
    "AR_large",
)

#: What pycocotools' summarize() prints for each stat.
STAT_DESCRIPTIONS = dict(
    zip(
        STAT_NAMES,
        (
            "AP @[IoU=0.50:0.95 | area=all    | maxDets=100]",
            "AP @[IoU=0.50      | area=all    | maxDets=100]",
            "AP @[IoU=0.75      | area=all    | maxDets=100]",
            "AP @[IoU=0.50:0.95 | area=small  | maxDets=100]",
            "AP @[IoU=0.50:0.95 | area=medium | maxDets=100]",
            "AP @[IoU=0.50:0.95 | area=large  | maxDets=100]",
            "AR @[IoU=0.50:0.95 | area=all    | maxDets=1]",
            "AR @[IoU=0.50:0.95 | area=all    | maxDets=10]",
            "AR @[IoU=0.50:0.95 | area=all    | maxDets=100]",
            "AR @[IoU=0.50:0.95 | area=small  | maxDets=100]",
            "AR @[IoU=0.50:0.95 | area=medium | maxDets=100]",
            "AR @[IoU=0.50:0.95 | area=large  | maxDets=100]",
        ),
    )
)


def _load(obj):
    if isinstance(obj, (str, Path)):
        return json.loads(Path(obj).read_text(encoding="utf-8"))
    return obj


def _coco_api(dataset: dict):
    from pycocotools.coco import COCO

    api = COCO()
    api.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    return api


def _mean_valid(x: np.ndarray) -> float:
    valid = x[x > -1]
    return float(valid.mean()) if valid.size else -1.0


def coco_evaluate(gt: dict | str | Path, results: list | str | Path) -> dict:
    """Evaluate COCO results against COCO ground truth with pycocotools (iouType='bbox', default params).

    Args:
        gt: ground-truth dict or path to its json.
        results: list of {"image_id", "category_id", "bbox" [x, y, w, h], "score"} or path to its json.

    Returns:
        {"stats": {name: value} (STAT_NAMES order), "per_class": [{"category_id", "name", "instances",
        "AP50-95", "AP50"}], "summary": pycocotools' printed summary, "n_images", "n_detections"}.
        A class without ground truth gets -1 (pycocotools' convention).
    """
    from pycocotools.cocoeval import COCOeval

    gt = copy.deepcopy(_load(gt))
    results = list(_load(results))
    gt.setdefault("info", {})
    gt.setdefault("licenses", [])
    coco_gt = _coco_api(gt)
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(copy.deepcopy(results))
    else:  # loadRes cannot take an empty list; an empty result set scores 0 wherever there is ground truth
        coco_dt = _coco_api({"images": gt["images"], "categories": gt["categories"], "annotations": []})

    evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats)}

    # precision: [T iou thresholds, R recall points, K categories, A area ranges, M maxDets]; area 'all', maxDets 100
    precision = evaluator.eval["precision"]
    instances = {}
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0):
            instances[a["category_id"]] = instances.get(a["category_id"], 0) + 1
    per_class = []
    for k, cat_id in enumerate(evaluator.params.catIds):
        per_class.append(
            {
                "category_id": int(cat_id),
                "name": coco_gt.cats[cat_id].get("name", str(cat_id)),
                "instances": instances.get(cat_id, 0),
                "AP50-95": _mean_valid(precision[:, :, k, 0, -1]),
                "AP50": _mean_valid(precision[0, :, k, 0, -1]),
            }
        )
    return {
        "stats": stats,
        "per_class": per_class,
        "summary": buffer.getvalue().strip(),
        "n_images": len(gt["images"]),
        "n_detections": len(results),
    }
