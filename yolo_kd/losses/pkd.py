"""PKD: Cao et al., "PKD: General Distillation Framework for Object Detectors via Pearson Correlation Coefficient",
NeurIPS 2022 (code: mmrazor `PKDLoss`, PaddleDetection `PKDFeatureLoss`).

Each map is normalised per channel over (N, H, W) to zero mean and unit variance, student and teacher alike:

    norm(F)_c = (F_c - mean(F_c)) / (std(F_c) + 1e-6)       (unbiased std, as torch.std and the reference code)
    L = mean( (norm(S) - norm(T))^2 ) / 2                    (= 1 - Pearson r per channel, averaged)

The normalisation removes the teacher's magnitude and offset, so a teacher of another width or family can be imitated
without tuning the weight to its activation scale. Matches the reference code, including the division by 2; the
reference loss_weight is left to the caller.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ._fp32 import check_same_shape, no_autocast


def channel_standardize(feat: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(N, C, H, W) -> the same map with each channel at zero mean, unit (unbiased) std over N, H, W."""
    n, c = feat.shape[:2]
    flat = feat.transpose(0, 1).reshape(c, -1)
    flat = (flat - flat.mean(dim=1, keepdim=True)) / (flat.std(dim=1, keepdim=True) + eps)
    return flat.reshape(c, n, *feat.shape[2:]).transpose(0, 1)


class PearsonFeatureLoss(nn.Module):
    """PKD between student and teacher maps of equal shape (N, C, H, W); the teacher is detached."""

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        check_same_shape("PearsonFeatureLoss", student, teacher)
        with no_autocast(student):
            s = channel_standardize(student.float())
            t = channel_standardize(teacher.detach().float())
            return F.mse_loss(s, t) / 2
