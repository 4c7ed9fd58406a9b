"""COCO-style evaluation for yolo-kd: YOLO/COCO datasets -> COCO json, pycocotools metrics, `yolo-kd val`."""

from yolo_kd.evaluation.coco_dataset import CategoryMap, load_coco_dataset
from yolo_kd.evaluation.coco_format import (
    EvalSet,
    detections_to_coco_results,
    yolo_dataset_to_coco,
    yolo_labels_to_coco,
)
from yolo_kd.evaluation.cocoeval import STAT_NAMES, coco_evaluate
from yolo_kd.evaluation.validate import evaluate_checkpoint, load_eval_set, val_command

__all__ = [
    "STAT_NAMES",
    "CategoryMap",
    "EvalSet",
    "coco_evaluate",
    "detections_to_coco_results",
    "evaluate_checkpoint",
    "load_coco_dataset",
    "load_eval_set",
    "val_command",
    "yolo_dataset_to_coco",
    "yolo_labels_to_coco",
]
