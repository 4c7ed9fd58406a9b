"""Quality-aware class KD: BCKD's per-class binary KD, scaled by how far the student's score is from the teacher's.

QualityClassKD (Yang et al., "Bridging Cross-task Protocol Inconsistency for Distillation in Dense Object
Detection", ICCV 2023; code TinyTigerPan/BCKD `mmdet/models/losses/kd_loss.py`, `novel_kd_loss`), for class logits
s, t of shape (N, nc, A), temperature T and focusing exponent beta:

    p_s = sigmoid(s / T),  p_t = sigmoid(t / T),  w_a = max_k sigmoid(t_{k,a}) (1 if conf_weighted=False)
    L = T^2 * sum_a w_a * sum_k BCE(p_s, p_t)_{k,a} * |p_t - p_s|_{k,a}^beta / sum_a w_a

The factor is not detached (as in BCKD and QFL), so it focuses the gradient on the classes where the student is
furthest from the teacher; at s == t the value and the gradient are 0 (the plain soft-label BCE keeps the teacher's
entropy). Differences from BCKD's code: BCKD has no temperature (ours at T = 1 is theirs per anchor) and sums over
all anchors divided by the number of positives; here anchors are weighted by the teacher's confidence and the sum is
normalised by the weight sum, as `ClassScoreKD`. BCKD's default beta is 1; PP-YOLOE+'s QFL distillation uses 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._fp32 import check_same_shape, no_autocast


class QualityClassKD(nn.Module):
    """Soft-label BCE times |p_t - p_s|^beta, teacher-confidence weighted, between class logits (N, nc, A)."""

    def __init__(self, beta: float = 1.0, temperature: float = 1.0, conf_weighted: bool = True):
        super().__init__()
        self.beta, self.temperature, self.conf_weighted = beta, temperature, conf_weighted

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        check_same_shape("QualityClassKD", student_logits, teacher_logits)
        temp = self.temperature
        with no_autocast(student_logits):
            s = student_logits.float() / temp
            t = teacher_logits.detach().float()
            p_t = torch.sigmoid(t / temp)
            focus = (p_t - torch.sigmoid(s)).abs().pow(self.beta)
            loss = (F.binary_cross_entropy_with_logits(s, p_t, reduction="none") * focus).sum(dim=1)
            weight = torch.sigmoid(t).amax(dim=1) if self.conf_weighted else torch.ones_like(loss)
            return temp**2 * (loss * weight).sum() / weight.sum().clamp(min=torch.finfo(torch.float32).eps)
