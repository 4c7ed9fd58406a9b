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
"""

from __future__ import annotations

import heapq
from pathlib import Path

import numpy as np

from .label import predictions, result_boxes
from .ultra import progress

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


def teacher_labels(teacher: str, images: list[str], conf: float | None, imgsz: int, device: str, batch: int,
                   class_map: dict[int, int] | None = None, count: int = 0,
                   floor: float = FLOOR) -> dict[str, np.ndarray]:
    """{image path as given: (n, 5) float32 [class, x, y, w, h], normalised xywh} of the teacher's boxes on each image
    at `imgsz`: the `count` best across `images` and every box at score >= `conf` (None: the count alone), never
    below `floor`; an image without a box maps to a (0, 5) array, one Ultralytics cannot decode is left out (the
    pool's dataset skips it when drawn)."""
    from .evaluation.predict import load_detector

    model = load_detector(teacher)
    given = {str(Path(p).absolute()): p for p in images}
    threshold = conf if conf is not None else 1.0
    predict = {"conf": min(threshold, floor) if count else threshold, "imgsz": imgsz, "device": device,
               "batch": batch}
    best, kept = BestScores(count), {}
    for result in progress(predictions(model, list(given), predict), total=len(images),
                           desc="yolo-kd: the teacher labels the pool"):
        scores = result.boxes.conf.cpu().numpy()
        best.add(scores.tolist())
        rows = np.array(result_boxes(result, class_map, keep=scores >= min(threshold, best.lowest())),
                        dtype=np.float32).reshape(-1, 6)
        kept[given[result.path]] = rows
    cut = min(threshold, best.lowest())
    return {path: rows[rows[:, 5] >= cut, :5].copy() for path, rows in kept.items()}
