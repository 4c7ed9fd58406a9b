"""Dense pseudo-labels on unlabeled images (Dense Teacher: Zhou et al., "Dense Teacher: Dense Pseudo-Labels for
Semi-supervised Object Detection", ECCV 2022, code Megvii-BaseDetection/DenseTeacher): the teacher's per-location
scores teach the student, no boxes at a threshold; the top-k fraction of locations by teacher score is foreground,
everything else is pushed towards zero.

For student and teacher class logits s, t (N, nc, A) with q = sigmoid(.), m_a = max_k q_t{k,a}, and K the
max(1, int(k * N * A)) locations of the batch with the largest m_a (region selection over the whole batch):

    L_cls = [sum_{a not in K, k} BCE(q_s, 0) q_s^2 + sum_{a in K, k} BCE(q_s, q_t) (q_t - q_s)^2] / sum_{a in K} m_a
    L_box = mean_{a in K} (1 - GIoU(box_s,a, box_t,a))          (each head's boxes decoded from its own encoding)

L_cls is the authors' QFLv2 (beta 2) normalised by the foreground score sum, L_box their GIoU on the foreground, as in
their code. Differences: Dense Teacher's FCOS also distils centerness on K (BCE), which YOLO heads do not have; the
authors take int(k * N * A) locations, here at least one, because YOLO's grids are small (336 locations per 128 px
image) and int() would select none. Teacher inputs are detached; float32 with autocast off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._fp32 import check_same_shape, no_autocast
from .box import DecodedBoxKD

QFL_BETA = 2.0  # Dense Teacher's QFLv2 beta


def top_fraction(teacher_logits: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask (N, A) of the max(1, int(fraction * N * A)) locations with the highest max_k sigmoid(t), the sum of
    those scores): Dense Teacher's region selection over the batch."""
    n, _, a = teacher_logits.shape
    score = torch.sigmoid(teacher_logits.detach().float()).amax(1).reshape(-1)
    top = torch.topk(score, max(1, int(fraction * n * a)))
    mask = torch.zeros_like(score, dtype=torch.bool)
    mask[top.indices] = True
    return mask.reshape(n, a), top.values.sum()


def dense_class_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                     foreground: torch.Tensor) -> torch.Tensor:
    """L_cls: QFLv2 towards the teacher's scores on `mask` (N, A), towards zero elsewhere, / `foreground`."""
    check_same_shape("dense_class_loss", student_logits, teacher_logits)
    with no_autocast(student_logits):
        s = student_logits.float()
        q_s, q_t = torch.sigmoid(s), torch.sigmoid(teacher_logits.detach().float())
        fg = mask.unsqueeze(1)  # (N, 1, A), every class of a foreground location
        target = torch.where(fg, q_t, torch.zeros_like(q_t))
        focus = torch.where(fg, q_t - q_s, q_s).pow(QFL_BETA)
        loss = F.binary_cross_entropy_with_logits(s, target, reduction="none") * focus
        return loss.sum() / foreground.float().clamp(min=torch.finfo(torch.float32).eps)


def dense_box_loss(student_box: torch.Tensor, teacher_box: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_box: mean (1 - GIoU) over the `mask` (N, A) locations: `DecodedBoxKD` weighted by the mask, student and
    teacher boxes (N, 4 * reg_max, A) each in its own head's encoding (reg_max from the channels)."""
    return DecodedBoxKD(student_box.shape[1] // 4, teacher_box.shape[1] // 4)(student_box, teacher_box, mask.float())
