"""CSKD: Park et al., "Cosine similarity-guided knowledge distillation for robust object detectors", Sci. Rep. 2024.

For student S and teacher T flattened to (N, C, P) (P = H*W, or the anchor axis of a prediction map):
cos_ch = cos(S_c, T_c) over P (N, C), cos_sp = cos(S_p, T_p) over C (N, P),
G = (1 - cos_ch)[:, :, None] * (1 - cos_sp)[:, None, :] and

    L = w_mse * mean(G * (S - T)^2) + w_cos * (mean(1 - cos_ch) + mean(1 - cos_sp)).

As in the authors' `_loss_mse_cos` (swkdn16/CSKD): the teacher is detached, G is NOT detached (its gradient flows
into the student through both cosines), |G| is taken (a guard against tiny negative values from rounding), and the
cosines use eps=1e-6. With a spatial `mask` the MSE term becomes sum(mask * G * (S - T)^2) / (C * sum(mask)), the
authors' avg_factor = mask.sum() * C; unlike the authors' fg/bg branches, which also zero the masked-out features
before the cosines, the cosine terms here stay plain means over all positions. The student's 1x1 mimic conv of
CSKD is the caller's job (the shapes here must be equal). The defaults (1, 0.5) are the paper's usual pair; the
authors' FCOS head uses other (w_mse, w_cos) per branch: neck (2, 2), towers (1, 2)/(3, 2), predictions (1, 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._fp32 import check_same_shape, no_autocast

_COS_EPS = 1e-6


class CosineGuidedLoss(nn.Module):
    """Cosine-similarity-guided MSE + cosine loss; inputs (N, C, H, W) or (N, C, A), equal shapes."""

    def __init__(self, w_mse: float = 1.0, w_cos: float = 0.5):
        super().__init__()
        self.w_mse = w_mse
        self.w_cos = w_cos

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        check_same_shape("CosineGuidedLoss", student, teacher)
        if student.dim() not in (3, 4):
            raise ValueError(f"CosineGuidedLoss needs (N, C, H, W) or (N, C, A) inputs, got {tuple(student.shape)}")
        n, c = student.shape[:2]
        with no_autocast(student):
            s = student.float().flatten(2)
            t = teacher.detach().float().flatten(2)
            cos_ch = F.cosine_similarity(s, t, dim=2, eps=_COS_EPS)  # (N, C)
            cos_sp = F.cosine_similarity(s, t, dim=1, eps=_COS_EPS)  # (N, P)
            guidance = ((1 - cos_ch)[:, :, None] * (1 - cos_sp)[:, None, :]).abs()
            weighted = guidance * (s - t).pow(2)
            if mask is None:
                mse = weighted.mean()
            else:
                if mask.numel() != n * s.shape[2]:
                    raise ValueError(f"CosineGuidedLoss mask must hold N*positions = {n * s.shape[2]} values, "
                                     f"got shape {tuple(mask.shape)}")
                m = mask.detach().float().reshape(n, 1, -1)
                mse = (weighted * m).sum() / (m.sum() * c).clamp(min=torch.finfo(torch.float32).eps)
            return self.w_mse * mse + self.w_cos * ((1 - cos_ch).mean() + (1 - cos_sp).mean())
