"""Online pseudo-boxes on the unlabeled pool (`unlabeled_boxes: conf`, `match` or `match+conf`): the teacher's target
on the very pool images the student sees, decoded into boxes for the student's own detection loss (no label files).

Decoding reads the target in its declared encoding (`teacher_target`: the student's anchors, the data set's classes):
per anchor a of level l (cell centre c_a, stride s_l), score_a = max_k sigmoid(z_{k,a}), class = argmax_k; the box
is xyxy = (c_a - (l, t), c_a + (r, b)) * s_l with (l, t, r, b) the expected DFL bin, sum_j j * p_j (reg_max > 1), or
the distances themselves (reg_max 1). Anchors with score >= conf are kept, then class-wise NMS at IoU 0.7 (Ultralytics'
predict default), at most `max_det` per image. The boxes come back in Ultralytics' batch keys (`batch_idx`, `cls`,
`bboxes` as normalised xywh), so the student's criterion trains on them as on labels; an image without a box is
trained as background, as an unlabeled tile in a labeled mosaic would be.

`match` sets no threshold: the pool batch keeps as many boxes as the labeled batch beside it holds per image, the
teacher's highest-scoring ones across the batch (`top_boxes`), from each image's `max_det` best anchors after NMS. A
teacher's scores are calibrated by its training, not by the data (a weak teacher may score every object below 0.25
or every background patch above it); the labeled batch, made by the same augmentation, says how many objects such an
image holds. It is LabelMatch's label-matched threshold (Chen et al., CVPR 2022), class-agnostic and per step
(LabelMatch matches each class's share over the whole unlabeled set, a step of a few images is too few per class).

`match+conf` is the union of the two: the matched count of best boxes, and every box at score >= conf besides (a
teacher that scores its objects high keeps them all, one that scores low still gives the labeled count).
"""

from __future__ import annotations

import torch

from .taps import Taps, cell_centres

NMS_IOU = 0.7  # Ultralytics' predict default
MAX_DET = 300  # Ultralytics' predict default


def anchor_centres(grid: list[tuple[int, int]], image_hw: tuple[int, int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """((A, 2) cell centres in pixels as (x, y), (A, 1) strides) for the head's level grids, level by level."""
    h, w = image_hw
    centres = cell_centres(grid, device) * torch.tensor([w, h], device=device, dtype=torch.float32)
    strides = torch.cat([torch.full((gh * gw, 1), h / gh, device=device) for gh, gw in grid])
    return centres, strides


def side_distances(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4 * reg_max, A) encoded target boxes -> (N, 4, A) distances in cells: the expected bin of each side's DFL
    log-probabilities (reg_max > 1), or the distances as they are (reg_max 1)."""
    n, c, a = boxes.shape
    reg_max = c // 4
    if reg_max == 1:
        return boxes.float()
    probs = boxes.float().reshape(n, 4, reg_max, a).exp()
    bins = torch.arange(reg_max, device=boxes.device, dtype=torch.float32).view(1, 1, reg_max, 1)
    return (probs * bins).sum(2) / probs.sum(2).clamp_min(1e-12)


def decode(target: Taps, image_hw: tuple[int, int], conf: float | None, best: int = 0,
           max_det: int = MAX_DET) -> list[torch.Tensor]:
    """Per image, (n, 6) boxes [x1, y1, x2, y2, score, class] in pixels of the student's input: the anchors at score
    >= `conf` (None: none by score) and the image's `best` highest-scoring ones, then class-wise NMS, at most
    `max_det`."""
    from torchvision.ops import batched_nms

    centres, strides = anchor_centres(target.grid, image_hw, target.scores.device)
    scores, classes = torch.sigmoid(target.scores.float()).max(1)  # (N, A)
    ltrb = side_distances(target.boxes).transpose(1, 2) * strides  # (N, A, 4) in pixels
    xyxy = torch.cat([centres - ltrb[..., :2], centres + ltrb[..., 2:]], -1)
    out = []
    for box, score, cls in zip(xyxy, scores, classes):
        keep = score >= conf if conf is not None else torch.zeros_like(score, dtype=torch.bool)
        keep[torch.argsort(score, descending=True, stable=True)[:best]] = True
        box, score, cls = box[keep], score[keep], cls[keep]
        keep = batched_nms(box, score, cls, NMS_IOU)[:max_det]
        out.append(torch.cat([box[keep], score[keep, None], cls[keep, None].float()], 1))
    return out


def top_boxes(detections: list[torch.Tensor], count: int, conf: float | None = None) -> list[torch.Tensor]:
    """The `count` highest-scoring of all images' (n, 6) detections (ties: the earlier), and those at score >= `conf`
    besides, each left in its image."""
    scores = torch.cat([d[:, 4] for d in detections])
    if count >= len(scores):
        return detections
    keep = scores >= conf if conf is not None else torch.zeros(len(scores), dtype=torch.bool, device=scores.device)
    keep[torch.argsort(scores, descending=True, stable=True)[:count]] = True
    return [d[k] for d, k in zip(detections, keep.split([len(d) for d in detections]))]


def as_batch(detections: list[torch.Tensor], images: torch.Tensor) -> dict:
    """Ultralytics' training-batch keys for the detections of `images` (N, 3, H, W): boxes clipped to the image,
    as normalised xywh, with their image index and class."""
    h, w = images.shape[-2:]
    scale = torch.tensor([w, h, w, h], device=images.device, dtype=torch.float32)
    dets = torch.cat(detections)  # (n, 6): an image without a box contributes a (0, 6) tensor
    xyxy = torch.min(dets[:, :4].clamp_min(0), scale) / scale
    xywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
    counts = torch.tensor([len(d) for d in detections], device=images.device)
    index = torch.repeat_interleave(torch.arange(len(detections), device=images.device, dtype=torch.float32), counts)
    return {"img": images, "batch_idx": index, "cls": dets[:, 5:6], "bboxes": xywh}


def matched_count(labeled_boxes: int, labeled_images: int, pool_images: int) -> int:
    """`match`: the pool batch's box count, the labeled batch's boxes per image times its images, rounded."""
    return round(labeled_boxes * pool_images / labeled_images)


def pseudo_batch(target: Taps, images: torch.Tensor, conf: float | None, count: int | None = None) -> dict:
    """The pool images' batch for the student's detection loss: the teacher's boxes at score >= `conf` (count None),
    its `count` best boxes across the batch (`match`, conf None), or both (`match+conf`)."""
    hw = tuple(images.shape[-2:])
    if count is None:
        return as_batch(decode(target, hw, conf), images)
    return as_batch(top_boxes(decode(target, hw, conf, best=MAX_DET), count, conf), images)
