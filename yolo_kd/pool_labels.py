"""`unlabeled_boxes: label` / `label+conf`: the teacher labels the clean pool images once, at the start of training,
through Ultralytics' predictor as `yolo-kd label` does (letterbox at the teacher's size, NMS at IoU 0.7, boxes clipped
to the original image and normalised by it), kept in memory: nothing is written next to the user's images. The pool's
dataset then carries the boxes through the run's augmentation like labels (mosaic, affine, flips), so the student's
detection loss on a pool image reads boxes the teacher found on the whole clean image, moved with it, rather than
boxes decoded from its target on the augmented batch (`pseudo_boxes`, the online rules).

Which boxes: `label` keeps as many as the labeled images hold per image, the teacher's best across the whole pool
(LabelMatch's label-matched threshold over the unlabeled set, Chen et al., CVPR 2022, class-agnostic as `match` is):
count = round(labeled boxes / labeled images x pool images); `label+conf` keeps those and every box at score >= conf
besides (a teacher that scores its objects high keeps them all, as `yolo-kd label conf=` would; one that scores low
still gives the labeled count). Boxes below FLOOR are never kept. The union is one threshold, min(conf, the count-th
best score), found in one streaming pass: a min-heap of the count best scores, and per image only the boxes at or
above the heap's running minimum (which only rises), so memory holds the kept boxes, not every prediction.

This is the pseudo-label route (`yolo-kd label`, then a plain run on labeled + pseudo-labeled images) inside the
engine: the labeled stream stays the user's, the dense KD terms still read every pool image, and a resumed run labels
the pool again with the same frozen teacher (the same boxes: prediction is deterministic on one machine).

Under `teacher_guard: relabel` the student's EMA takes over the labeling once it has passed its teacher (`guard`):
`relabel_pool` runs the same rule with the EMA at the run's size; those boxes are kept in last.pt's continuation
(`checkpoints.resumed_pool_boxes`), as the EMA that made them is gone by the time a run resumes.
"""

from __future__ import annotations

import heapq
from pathlib import Path

import numpy as np

from .label import predictions, result_boxes
from .preflight import image_size
from .pseudo_boxes import matched_count
from .recipe import box_selection
from .ultra import RANK, progress
from .unlabeled import rank_share
from .unlabeled_loader import RandomStreams

FLOOR = 0.01  # the lowest teacher score a pool box may have: the predictor's threshold for the count rule


class BestScores:
    """The `count` highest scores seen so far (a min-heap); `lowest()` is the lowest of them once there are `count`,
    else 0 (every box may still be among them); with `count` 0, infinity (no box is)."""

    def __init__(self, count: int):
        self.count, self.heap = count, []

    def add(self, scores) -> None:
        if not self.count:
            return
        for s in scores:
            if len(self.heap) < self.count:
                heapq.heappush(self.heap, s)
            elif s > self.heap[0]:
                heapq.heapreplace(self.heap, s)

    def lowest(self) -> float:
        if not self.count:
            return float("inf")
        return self.heap[0] if len(self.heap) >= self.count else 0.0


def teacher_labels(teacher, images: list[str], conf: float | None, imgsz: int, device: str, batch: int,
                   class_map: dict[int, int] | None = None, count: int = 0, floor: float = FLOOR,
                   who: str = "the teacher") -> dict[str, np.ndarray]:
    """{image path as given: (n, 5) float32 [class, x, y, w, h], normalised xywh} of the teacher's boxes on each image
    at `imgsz`: the `count` best across `images` and every box at score >= `conf` (None: the count alone), never
    below `floor`; an image without a box maps to a (0, 5) array, one Ultralytics cannot decode is left out (the
    pool's dataset skips it when drawn). `teacher`: a checkpoint path, or a detection model in memory (the student's
    EMA under `teacher_guard: relabel`)."""
    from .evaluation.predict import load_detector

    model = load_detector(teacher) if isinstance(teacher, (str, Path)) else teacher
    given = {str(Path(p).absolute()): p for p in images}
    threshold = conf if conf is not None else 1.0
    predict = {"conf": min(threshold, floor) if count else threshold, "imgsz": imgsz, "device": device,
               "batch": batch}
    best, kept = BestScores(count), {}
    for result in progress(predictions(model, list(given), predict), total=len(images),
                           desc=f"yolo-kd: {who} labels the pool"):
        scores = result.boxes.conf.cpu().numpy()
        best.add(scores.tolist())
        rows = np.array(result_boxes(result, class_map, keep=scores >= min(threshold, best.lowest())),
                        dtype=np.float32).reshape(-1, 6)
        kept[given[result.path]] = rows
    cut = min(threshold, best.lowest())
    return {path: rows[rows[:, 5] >= cut, :5].copy() for path, rows in kept.items()}


def label_pool(trainer, files: list[str], labeled, model=None) -> dict:
    """`unlabeled_boxes: label[+conf]`: the boxes of `model` (default: the first teacher, at its own size, else the
    run's; a model in memory labels at the run's size, in the data set's classes) on this rank's pool `files`: as
    many over the pool as the `labeled` train set (an Ultralytics dataset) holds per image (`matched_count`, the
    online `match` rule's count), and every box at the threshold; on the run's device, with a random state of its
    own (the labeled stream is the same with and without it); one log line counts them."""
    from ultralytics.utils import LOGGER

    recipe = trainer.yolo_kd.recipe
    conf, _ = box_selection(recipe.unlabeled_boxes)
    if model is None:
        teacher = recipe.teachers[(recipe.stages[0].teachers or list(recipe.teachers))[0]]
        model, imgsz, who = teacher.model, teacher.imgsz or image_size(trainer.args.imgsz), "the teacher"
        to_dataset = {t: d for d, t in recipe.class_map.items()} if recipe.class_map else None  # dataset -> teacher
    else:
        imgsz, who, to_dataset = image_size(trainer.args.imgsz), "the student's EMA", None
    labeled_boxes, labeled_images = sum(len(label["cls"]) for label in labeled.labels), max(1, len(labeled.labels))
    count, per_image = matched_count(labeled_boxes, labeled_images, len(files)), labeled_boxes / labeled_images
    with RandomStreams():
        boxes = teacher_labels(model, files, conf, imgsz, str(trainer.device), max(1, int(trainer.args.batch)),
                               to_dataset, count, who=who)
    if RANK in {-1, 0}:
        kept = sum(len(b) for b in boxes.values())
        LOGGER.info(f"yolo-kd: {who} labeled {len(boxes):,} pool images: {kept:,} boxes "
                    f"({kept / max(1, len(boxes)):.2f} per image; the labeled images hold {per_image:.2f}), "
                    f"{sum(not len(b) for b in boxes.values()):,} images without one (unlabeled_boxes)")
    return boxes


def relabel_pool(trainer) -> dict:
    """`teacher_guard: relabel`: the student's EMA labels the pool by the same rule (`label_pool`), each rank its
    share, gathered so every rank (and rank 0's last.pt) holds the whole pool's boxes; they replace the pool loader's
    from its next restart (the next epoch's start)."""
    import torch.distributed as dist

    run = trainer.yolo_kd
    boxes = label_pool(trainer, rank_share(run.unlabeled), trainer.train_loader.dataset,
                       model=trainer.ema.ema.student)
    if dist.is_available() and dist.is_initialized():
        shares = [None] * dist.get_world_size()
        dist.all_gather_object(shares, boxes)
        boxes = {path: rows for share in shares for path, rows in share.items()}
    run.pool_boxes = boxes
    run.unlabeled_loader.set_boxes(boxes)
    return boxes
