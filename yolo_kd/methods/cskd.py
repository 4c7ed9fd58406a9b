"""CSKD: cosine-similarity-guided distillation of features and predictions (Park et al., Sci. Rep. 2024)."""

from __future__ import annotations

import torch
from torch import nn

from ..losses import CosineGuidedLoss
from ..needs import SAME_BOXES, SCORES
from .registry import Method, register
from .feature import channel_aligners


class AssistantHead(nn.Module):
    """The published assistant prediction branch: from the student's level features to teacher-shaped outputs.

    Trained on teacher outputs only; it shapes the student's features and is dropped before saving and export
    (it lives in the method, never in the student).
    """

    def __init__(self, channels: list[int], outputs: int):
        super().__init__()
        self.levels = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.SiLU(), nn.Conv2d(c, outputs, 1)) for c in channels
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([m(f).flatten(2) for m, f in zip(self.levels, feats)], dim=-1)


@register("cskd")
class CosineGuided(Method):
    """Three CSKD terms: neck features (1x1 mimic when channels differ), predictions (class sigmoids and box
    outputs, anchor by anchor), and the assistant branch's predictions against the teacher's."""

    terms = ("cskd_feat", "cskd_pred", "cskd_aux")
    needs = {"cskd_pred": frozenset({SCORES, SAME_BOXES}), "cskd_aux": frozenset({SCORES, SAME_BOXES})}

    def __init__(self, student, teacher, w_mse=1.0, w_cos=0.5, assistant=True):
        super().__init__(student, teacher)
        self.mimic = channel_aligners(student.channels, teacher.channels)
        self.loss = CosineGuidedLoss(w_mse=w_mse, w_cos=w_cos)
        self.nc, self.box_ch = student.nc, 4 * student.reg_max
        self.assistant = AssistantHead(student.channels, self.nc + self.box_ch) if assistant else None
        if not assistant:
            self.terms = ("cskd_feat", "cskd_pred")

    def forward(self, s, t, targets) -> dict[str, torch.Tensor]:
        feat = sum(self.loss(m(fs), ft) for m, fs, ft in zip(self.mimic, s.feats, t.feats)) / len(s.feats)
        t_pred = torch.cat([t.scores.sigmoid(), t.boxes], 1)
        pred = self.loss(torch.cat([s.scores.sigmoid(), s.boxes], 1), t_pred)
        out = {"cskd_feat": feat, "cskd_pred": pred}
        if self.assistant is not None:
            aux = self.assistant(s.feats)
            out["cskd_aux"] = self.loss(torch.cat([aux[:, : self.nc].sigmoid(), aux[:, self.nc:]], 1), t_pred)
        return out
