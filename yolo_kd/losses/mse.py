"""Plain feature mimicking: mean squared error between aligned student and teacher maps."""

import torch
from torch import nn


class FeatureMSELoss(nn.Module):
    """L = mean((S - T)^2) over N, C, H, W, computed in float32; the teacher is detached. Shapes must match."""

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.shape != teacher.shape:
            raise ValueError(f"FeatureMSELoss needs equal shapes, got {tuple(student.shape)} and {tuple(teacher.shape)}")
        return (student.float() - teacher.detach().float()).pow(2).mean()
