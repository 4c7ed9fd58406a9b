"""Box KD on decoded boxes: GIoU between the student's and the teacher's boxes, for any head (DFL or reg_max = 1).

Decoding, per anchor a and side (l, t, r, b), in cells of the anchor's grid:
    reg_max > 1 (DFL, YOLOv8/11): d = sum_i i * softmax_i(box_side,a)   (expectation over bins 0..reg_max-1; the
        softmax makes logits and log-probabilities decode alike)
    reg_max = 1 (YOLO26):         d = box_side,a                       (the head predicts the distance itself)
    box_a = (-l, -t, r, b): xyxy relative to the anchor point. Both models' boxes of one anchor share that point and
    GIoU is invariant to a common shift and scale, so anchor points and strides are not needed.

DecodedBoxKD, with per-anchor weights w_a (the caller's: e.g. the teacher's max class score on its confident cells):

    L = sum_a w_a * (1 - GIoU(box_s,a, box_t,a)) / sum_a w_a,
    GIoU = IoU - (C - U) / C   (U: union area, C: area of the smallest box enclosing both)

The teacher's boxes and the weights are detached; float32 with autocast off. Student and teacher may decode from
different encodings (a DFL teacher and a reg_max = 1 student), which is what LD cannot do.

Differences from the papers' code: PP-YOLOE+ (PaddleDetection `ppdet/slim/distill_loss.py`, `bbox_loss`) takes the
GIoU on the student assigner's positives, weighted by their assigned IoU-aware score targets, normalised by the
weight sum; BCKD (TinyTigerPan/BCKD `ld_head.py`, `loss_score_kd`) takes it on all anchors weighted by
max_c |sigmoid(t) - sigmoid(s)|, normalised by the number of positives. Here the region and weights come from the
teacher alone (no assigner run), normalised by the weight sum so the scale does not depend on the number of anchors.
"""

from __future__ import annotations

import torch
from torch import nn

from ._fp32 import no_autocast

EPS = 1e-7


def decode_distances(boxes: torch.Tensor, reg_max: int) -> torch.Tensor:
    """(N, 4 * reg_max, A) box outputs (side-major bins) -> (N, 4, A) ltrb distances in cells (module docstring)."""
    if reg_max == 1:
        return boxes.float()
    n, _, a = boxes.shape
    probs = boxes.float().reshape(n, 4, reg_max, a).softmax(2)
    bins = torch.arange(reg_max, device=boxes.device, dtype=torch.float32).view(1, 1, reg_max, 1)
    return (probs * bins).sum(2)


def ltrb_to_xyxy(dist: torch.Tensor) -> torch.Tensor:
    """(N, 4, A) ltrb distances -> (N, 4, A) boxes x1 y1 x2 y2 relative to the anchor point."""
    return torch.cat([-dist[:, :2], dist[:, 2:]], 1)


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of aligned boxes (N, 4, A) xyxy -> (N, A); an inverted box has area 0."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    union = area_a + area_b - inter + EPS
    cw = torch.maximum(a[:, 2], b[:, 2]) - torch.minimum(a[:, 0], b[:, 0])
    ch = torch.maximum(a[:, 3], b[:, 3]) - torch.minimum(a[:, 1], b[:, 1])
    enclose = cw.clamp(min=0) * ch.clamp(min=0) + EPS
    return inter / union - (enclose - union) / enclose


class DecodedBoxKD(nn.Module):
    """forward(student_box (N, 4 * s_reg_max, A), teacher_box (N, 4 * t_reg_max, A), weight (N, A)) -> scalar."""

    def __init__(self, student_reg_max: int, teacher_reg_max: int):
        super().__init__()
        self.student_reg_max, self.teacher_reg_max = student_reg_max, teacher_reg_max

    def forward(self, student_box: torch.Tensor, teacher_box: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        for who, box, reg in (("student", student_box, self.student_reg_max),
                              ("teacher", teacher_box, self.teacher_reg_max)):
            if box.shape[1] != 4 * reg:
                raise ValueError(f"DecodedBoxKD: {who} boxes need {4 * reg} channels (reg_max={reg}), got {box.shape[1]}")
        if student_box.shape[-1] != teacher_box.shape[-1]:
            raise ValueError(f"DecodedBoxKD needs equal anchors, got {student_box.shape[-1]} and {teacher_box.shape[-1]}")
        with no_autocast(student_box):
            s = ltrb_to_xyxy(decode_distances(student_box, self.student_reg_max))
            t = ltrb_to_xyxy(decode_distances(teacher_box.detach(), self.teacher_reg_max))
            w = weight.detach().float()
            return ((1 - giou(s, t)) * w).sum() / w.sum().clamp(min=torch.finfo(torch.float32).eps)
