"""MGD: Yang et al., "Masked Generative Distillation", ECCV 2022 (code: yzd-v/MGD, det/ version).

F_S' = align(F_S) (1x1 conv only when channel counts differ); a random spatial mask M (N, 1, H, W) drops each
position with probability lambda_mgd: with r ~ U[0, 1), M = 0 where r > 1 - lambda_mgd, else 1 (the authors' rule,
so lambda_mgd is the MASKED ratio). A generator G = conv3x3-ReLU-conv3x3 on the teacher channels rebuilds the teacher:

    L = alpha * sum (G(F_S' * M) - F_T)^2 / N.

Differences from the authors' code: the teacher is detached here (they run it under no_grad); the random numbers are
drawn on the features' device (or on an explicit torch.Generator's device) instead of on the CPU then copied.
"""

from __future__ import annotations

import torch
from torch import nn

from ._fp32 import no_autocast


class MGDLoss(nn.Module):
    """Masked generative distillation for one feature level: forward(student (N, Cs, H, W), teacher (N, Ct, H, W)).

    Pass `generator` (a torch.Generator) to forward for a reproducible mask.
    """

    def __init__(self, student_channels: int, teacher_channels: int, alpha: float = 2e-5, lambda_mgd: float = 0.65):
        super().__init__()
        self.alpha = alpha
        self.lambda_mgd = lambda_mgd
        self.align = (nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
                      if student_channels != teacher_channels else nn.Identity())
        self.generation = nn.Sequential(
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1),
        )

    def random_mask(self, n: int, h: int, w: int, device: torch.device,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, 1, H, W) float mask: 0 where U[0, 1) > 1 - lambda_mgd (dropped), 1 elsewhere (kept)."""
        rand = torch.rand((n, 1, h, w), generator=generator,
                          device=generator.device if generator is not None else device)
        return (rand <= 1 - self.lambda_mgd).to(device, torch.float32)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        if student.shape[-2:] != teacher.shape[-2:] or student.shape[0] != teacher.shape[0]:
            raise ValueError(f"MGDLoss needs equal N, H, W, got {tuple(student.shape)} and {tuple(teacher.shape)}")
        n, _, h, w = teacher.shape
        with no_autocast(student):
            s = self.align(student.float())
            t = teacher.detach().float()
            rebuilt = self.generation(s * self.random_mask(n, h, w, s.device, generator))
            return self.alpha * (rebuilt - t).pow(2).sum() / n
