"""Score-weighted L2 on features: the loss of Ultralytics' built-in KD (`ultralytics/nn/distill_model.py`,
`DistillationModel.loss_sl2`, 8.4.190).

For projected student features S and teacher features T (N, C, H, W) and the teacher's per-cell confidence
s (N, 1, H, W), the max class sigmoid of the teacher at that cell:

    L = sum_{n,c,h,w} s_{n,h,w} * (S - T)^2 / (C * sum_{n,h,w} s_{n,h,w} + 1e-9)

Cells where the teacher sees an object dominate; background cells count little. Same formula as the built-in; the
built-in's weight (`dis`, default 6) is the caller's.
"""

import torch
from torch import nn

from ._fp32 import check_same_shape, no_autocast


class ScoreWeightedL2(nn.Module):
    """forward(student (N, C, H, W), teacher (N, C, H, W), score (N, 1, H, W) or (N, H*W)) -> scalar."""

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        check_same_shape("ScoreWeightedL2", student, teacher)
        n, c = student.shape[:2]
        with no_autocast(student):
            s = score.detach().float().reshape(n, 1, -1)
            mse = (student.float().reshape(n, c, -1) - teacher.detach().float().reshape(n, c, -1)).pow(2)
            return (mse * s).sum() / (s.sum() * c + 1e-9)
