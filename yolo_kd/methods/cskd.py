"""CSKD: cosine-similarity-guided distillation of features and predictions (Park et al., Sci. Rep. 2024).

The paper applies L = w_mse * mean(G * (S - T)^2) + w_cos * (mean(1 - cos_ch) + mean(1 - cos_sp)) (`losses.cskd`)
to neck features, head towers and predictions "class logits after sigmoid, box outputs". Here the prediction map
per anchor is [sigmoid(class logits), box] with box, for DFL heads (reg_max > 1), the per-side bin DISTRIBUTION:
softmax over the bins of the student's raw logits against exp of the teacher target's log-probabilities
(`teacher_target` encoding), so both sides are probabilities in [0, 1] on the same scale as the class sigmoids,
whatever grid the teacher ran on. Where ours differs from the paper: the paper's FCOS/GFL box outputs are
compared as raw regression values (no DFL there); raw DFL logits would differ by a per-side constant even for
identical distributions, so we compare the distributions. For reg_max 1 (YOLO26) boxes are ltrb distances in
student cells on both sides. No head-tower term (YOLO heads have no shared tower).
"""

from __future__ import annotations

import torch
from torch import nn

from ..losses import CosineGuidedLoss
from ..needs import SAME_BOXES, SCORES
from ..teacher_target import dfl_probs
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
        self.nc, self.reg_max, self.box_ch = student.nc, student.reg_max, 4 * student.reg_max
        self.assistant = AssistantHead(student.channels, self.nc + self.box_ch) if assistant else None
        if not assistant:
            self.terms = ("cskd_feat", "cskd_pred")

    def predictions(self, scores: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(N, nc + 4 * reg_max, A): class sigmoids and per-side DFL bin probabilities (reg_max 1: the distances)."""
        boxes = boxes.float()
        return torch.cat([scores.float().sigmoid(), dfl_probs(boxes, self.reg_max) if self.reg_max > 1 else boxes], 1)

    def forward(self, s, t, targets) -> dict[str, torch.Tensor]:
        feat = sum(self.loss(m(fs), ft) for m, fs, ft in zip(self.mimic, s.feats, t.feats)) / len(s.feats)
        t_boxes = t.boxes.exp() if self.reg_max > 1 else t.boxes  # target log-probabilities -> probabilities
        t_pred = torch.cat([t.scores.sigmoid(), t_boxes], 1)
        out = {"cskd_feat": feat, "cskd_pred": self.loss(self.predictions(s.scores, s.boxes), t_pred)}
        if self.assistant is not None:
            aux = self.assistant(s.feats)
            out["cskd_aux"] = self.loss(self.predictions(aux[:, : self.nc], aux[:, self.nc:]), t_pred)
        return out
