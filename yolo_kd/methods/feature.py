"""Feature-mimicking methods on the neck features (Detect inputs, or the chosen layers)."""

from __future__ import annotations

import torch
from torch import nn

from ..losses import FeatureMSELoss
from . import Method, register


def channel_aligners(student_channels: list[int], teacher_channels: list[int]) -> nn.ModuleList:
    """Per level, a 1x1 conv from student to teacher channels, or identity when they already match."""
    return nn.ModuleList(
        nn.Identity() if cs == ct else nn.Conv2d(cs, ct, kernel_size=1)
        for cs, ct in zip(student_channels, teacher_channels)
    )


@register("mse")
class FeatureMSE(Method):
    """L = mean over levels of mean((align(S_l) - T_l)^2): plain FitNets-style mimicking, the spine's reference."""

    terms = ("mse",)

    def __init__(self, student, teacher):
        super().__init__(student, teacher)
        self.align = channel_aligners(student.channels, teacher.channels)
        self.loss = FeatureMSELoss()

    def forward(self, s, t, targets) -> dict[str, torch.Tensor]:
        values = [self.loss(a(fs), ft) for a, fs, ft in zip(self.align, s.feats, t.feats)]
        return {"mse": torch.stack(values).mean()}
