"""How good a detector is the target a teacher gives the student? The teacher's class scores and DFL boxes, as the
distiller hands them to the student (on the student's grid, in the student's units), decoded with the student's
strides and scored with pycocotools on a split of the data.

Rows: the teacher fed the student's batch (what a teacher at the student's size teaches), and, for a teacher at its
own size, its target under each level pairing ("index", "area"), beside the teacher decoded on its own grid (the
upper bound the mapping can keep). The batches are made as the trainer makes them: letterboxed at the teacher's size,
the student's batch its area downsample. Decoding: per anchor, distances = sum_i i * softmax(bins)_i (cells), box =
(cell centre -/+ distances) * stride, score = sigmoid(class logit); top 300 per image after class-wise NMS at IoU 0.7.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .evaluation.coco_format import detections_to_coco_results, yolo_dataset_to_coco
from .evaluation.cocoeval import coco_evaluate
from .recipe import LEVEL_PAIRINGS
from .resolution import head_grid, level_pairs, resample, to_student_grid
from .taps import head_taps
from .ultra import detect_head, letterbox, load_model


def decode(scores: torch.Tensor, boxes: torch.Tensor, grids: list[tuple[int, int]], strides: list[float],
           reg_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-anchor logits (N, nc, A), (N, 4 * reg_max, A) on `grids` -> (xyxy pixels (N, A, 4), scores (N, A, nc))."""
    centres, scale = [], []
    for (h, w), s in zip(grids, strides):
        ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        centres.append(torch.stack([xs.flatten(), ys.flatten()], 1))
        scale.append(torch.full((h * w, 1), float(s)))
    centres, scale = torch.cat(centres), torch.cat(scale)
    n, _, a = boxes.shape
    if reg_max > 1:
        dist = (boxes.float().view(n, 4, reg_max, a).softmax(2) * torch.arange(reg_max).view(1, 1, -1, 1)).sum(2)
    else:
        dist = boxes.float().view(n, 4, a)
    dist = dist.transpose(1, 2)  # (N, A, ltrb)
    xyxy = torch.cat([centres - dist[..., :2], centres + dist[..., 2:]], -1) * scale
    return xyxy, scores.float().sigmoid().transpose(1, 2)


def top_detections(xyxy: torch.Tensor, scores: torch.Tensor, conf: float = 0.001, iou: float = 0.7,
                   max_det: int = 300) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image: every (anchor, class) above `conf`, class-wise NMS, the `max_det` best (boxes, scores, classes)."""
    from torchvision.ops import batched_nms

    anchor, cls = (scores > conf).nonzero(as_tuple=True)
    boxes, conf_values = xyxy[anchor], scores[anchor, cls]
    keep = batched_nms(boxes, conf_values, cls, iou)[:max_det]
    return boxes[keep], conf_values[keep], cls[keep]


def load_batches(images: list[str], size: int, batch: int = 16):
    """(files, letterboxed float batch (N, 3, size, size) in 0-1, per file (ratio, pad_w, pad_h)) in chunks."""
    import cv2

    for start in range(0, len(images), batch):
        files = images[start:start + batch]
        tensors, geometry = [], []
        for f in files:
            im = cv2.imread(f)
            h0, w0 = im.shape[:2]
            r = min(size / h0, size / w0)
            geometry.append((r, (size - round(w0 * r)) / 2, (size - round(h0 * r)) / 2))
            tensors.append(torch.from_numpy(np.ascontiguousarray(letterbox(im, (size, size))[:, :, ::-1])).permute(2, 0, 1))
        yield files, torch.stack(tensors).float() / 255, geometry


def target_map(teacher: str | Path, data: str | Path, imgsz: int, teacher_imgsz: int | None = None,
               split: str = "val") -> dict[str, dict]:
    """{row: COCO stats (mAP50-95, mAP50, ...)} for the rows of the module docstring."""
    evalset = yolo_dataset_to_coco(data, split)
    model = load_model(teacher).float().eval()
    head = detect_head(model)
    strides, reg_max = [float(s) for s in head.stride], int(head.reg_max)
    source_size = teacher_imgsz or imgsz
    rows: dict[str, list] = {}
    images = sorted(evalset.image_ids, key=evalset.image_ids.get)
    with torch.no_grad():
        for files, source, geometry in load_batches(images, source_size):
            student_img = resample(source, (imgsz, imgsz))
            s_grid = head_grid(strides, student_img)
            own = head_taps(model(student_img))
            targets = {f"teacher at {imgsz} (the student's size)": (own.scores, own.boxes, s_grid, imgsz)}
            if teacher_imgsz and teacher_imgsz != imgsz:
                big = head_taps(model(source))
                t_grid = head_grid(strides, source)
                targets[f"teacher at {teacher_imgsz}, its own grid (upper bound)"] = (big.scores, big.boxes, t_grid,
                                                                                     teacher_imgsz)
                for pairing in LEVEL_PAIRINGS:
                    pairs = level_pairs(strides, strides, teacher_imgsz / imgsz, pairing)
                    mapped = to_student_grid(big, [tuple(f.shape[-2:]) for f in big.feats], list(range(len(pairs))),
                                             s_grid, pairs, t_grid, reg_max)
                    targets[f"teacher at {teacher_imgsz} on the student's grid, levels: {pairing}"] = (
                        mapped.scores, mapped.boxes, s_grid, imgsz)
            for name, (scores, boxes, grid, size) in targets.items():
                xyxy, conf = decode(scores, boxes, grid, strides, reg_max)
                for i, f in enumerate(files):
                    b, c, k = top_detections(xyxy[i], conf[i])
                    r, pw, ph = geometry[i]
                    b = b * (source_size / size)  # to the letterboxed source, then to the original image
                    b = (b - torch.tensor([pw, ph, pw, ph])) / r
                    rows.setdefault(name, []).append({"im_file": f, "bboxes": b.numpy(), "conf": c.numpy(),
                                                      "cls": k.numpy()})
    return {name: coco_evaluate(evalset.gt, detections_to_coco_results(dets, evalset.image_ids,
                                                                       evalset.category_ids))["stats"]
            for name, dets in rows.items()}
