"""CWD: Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction", ICCV 2021.

Each channel's map is turned into a distribution over positions, phi(y_c) = softmax_{hw}(y_c / tau), and

    L = tau^2 / (N * C) * sum_{n, c} KL( phi(T_{n,c}) || phi(S_{n,c}) ).

Matches the reference implementations (mmrazor `ChannelWiseDivergence`, irfanICMLL/TorchDistiller), which divide the
summed KL by N * C; the paper writes tau^2 / C per image. The loss weight of those APIs is left to the caller.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ._fp32 import check_same_shape, no_autocast


class ChannelWiseDivergence(nn.Module):
    """Channel-wise KL divergence between spatial softmaxes; inputs (N, C, H, W) or (N, C, A), equal shapes."""

    def __init__(self, tau: float = 1.0):
        super().__init__()
        self.tau = tau

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        check_same_shape("ChannelWiseDivergence", student, teacher)
        n, c = student.shape[:2]
        with no_autocast(student):
            log_p_s = F.log_softmax(student.float().flatten(2) / self.tau, dim=2)
            log_p_t = F.log_softmax(teacher.detach().float().flatten(2) / self.tau, dim=2)
            kl = F.kl_div(log_p_s, log_p_t, reduction="sum", log_target=True)
            return kl * self.tau**2 / (n * c)
