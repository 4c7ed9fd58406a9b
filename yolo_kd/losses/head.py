"""Prediction distillation for YOLO heads: class scores and DFL box distributions.

ClassScoreKD (soft-label BCE with temperature T, confidence-weighted), for logits s, t of shape (N, nc, A):

    p_t = sigmoid(t / T),  w_a = max_k sigmoid(t_{k,a}) (teacher confidence at T = 1; 1 if conf_weighted=False)
    L = T^2 * sum_a w_a * sum_k BCE(sigmoid(s_{k,a} / T), p_t{k,a}) / sum_a w_a

BCE is summed over classes per anchor (as Ultralytics' own classification loss) and averaged over anchors with the
weights, so the scale does not depend on the number of anchors. At s == t the value is the teacher's Bernoulli
entropy, not 0; the gradient is that of the Bernoulli KL.

DFLDistillLoss (LD: Zheng et al., "Localization Distillation for Dense Object Detection", CVPR 2022, code
HikariTJU/LD), for box logits (N, 4 * reg_max, A) in Ultralytics' DFL layout (side-major, reg_max bins per side):

    L = T^2 * sum_a w_a * mean_side KL(softmax(t_side,a / T) || softmax(s_side,a / T)) / sum_a w_a

(w_a = 1 when no weight is given). Differences from the LD code: the authors' KnowledgeDistillationKLDivLoss takes
the MEAN over the reg_max + 1 bins instead of the KL's sum (their value is ours / number of bins), and LD sums over
positive anchors weighted by the student's detached max class score without dividing by the weight sum; here the
anchor selection and weights are the caller's `weight`, and the sum is normalised by the weight sum so the scale
does not depend on the number of anchors. Teacher logits and weights are detached. The teacher side may be
DFL logits z or log-probabilities log_softmax(z) (the teacher target's encoding): softmax(log_softmax(z) / T) ==
softmax(z / T), so both give the same value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import KDConfigError
from ._fp32 import check_same_shape, no_autocast


class ClassScoreKD(nn.Module):
    """Confidence-weighted soft-label BCE between student and teacher class logits (N, nc, A)."""

    def __init__(self, temperature: float = 1.0, conf_weighted: bool = True):
        super().__init__()
        self.temperature = temperature
        self.conf_weighted = conf_weighted

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        check_same_shape("ClassScoreKD", student_logits, teacher_logits)
        temp = self.temperature
        with no_autocast(student_logits):
            s = student_logits.float()
            t = teacher_logits.detach().float()
            bce = F.binary_cross_entropy_with_logits(s / temp, torch.sigmoid(t / temp), reduction="none").sum(dim=1)
            weight = torch.sigmoid(t).amax(dim=1) if self.conf_weighted else torch.ones_like(bce)
            return temp**2 * (bce * weight).sum() / weight.sum().clamp(min=torch.finfo(torch.float32).eps)


class DFLDistillLoss(nn.Module):
    """LD on DFL box distributions: forward(student_box, teacher_box (N, 4 * reg_max, A), weight (N, A) or None)."""

    def __init__(self, reg_max: int = 16, temperature: float = 10.0):
        super().__init__()
        if reg_max <= 1:
            raise KDConfigError(f"DFLDistillLoss needs reg_max > 1, got {reg_max}: YOLO26 heads have reg_max=1 "
                                "(no DFL): LD does not apply; use ClassScoreKD/CosineGuidedLoss on boxes instead")
        self.reg_max = reg_max
        self.temperature = temperature

    def forward(self, student_box: torch.Tensor, teacher_box: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        check_same_shape("DFLDistillLoss", student_box, teacher_box)
        n, ch, a = student_box.shape
        if ch != 4 * self.reg_max:
            raise ValueError(f"DFLDistillLoss(reg_max={self.reg_max}) needs {4 * self.reg_max} box channels, got {ch}")
        temp = self.temperature
        with no_autocast(student_box):
            log_s = F.log_softmax(student_box.float().reshape(n, 4, self.reg_max, a) / temp, dim=2)
            log_t = F.log_softmax(teacher_box.detach().float().reshape(n, 4, self.reg_max, a) / temp, dim=2)
            kl = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(dim=2).mean(dim=1)  # (N, A)
            if weight is None:
                return temp**2 * kl.mean()
            w = weight.detach().float().reshape(n, a)
            return temp**2 * (kl * w).sum() / w.sum().clamp(min=torch.finfo(torch.float32).eps)
