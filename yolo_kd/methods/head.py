"""Prediction distillation of YOLO heads: class scores and DFL box distributions."""

from __future__ import annotations

import torch

from ..losses import ClassScoreKD, DFLDistillLoss
from . import Method, register


@register("pred")
class HeadPrediction(Method):
    """Class-score KD (teacher sigmoid targets, temperature, teacher-confidence weighting) + LD on DFL bins.

    LD is weighted per anchor by the teacher's max class score, so confident teacher boxes teach most.
    YOLO26 heads have reg_max=1 (no DFL distribution): LD is skipped there and only `pred_cls` is logged.
    """

    terms = ("pred_cls", "pred_ld")
    needs_head = True

    def __init__(self, student, teacher, temperature=1.0, conf_weighted=True, ld_temperature=10.0, ld_weight=1.0):
        super().__init__(student, teacher)
        self.cls_loss = ClassScoreKD(temperature=temperature, conf_weighted=conf_weighted)
        self.has_dfl = student.reg_max > 1
        self.ld_weight = ld_weight
        if self.has_dfl:
            self.ld_loss = DFLDistillLoss(reg_max=student.reg_max, temperature=ld_temperature)
        else:
            from ultralytics.utils import LOGGER

            LOGGER.warning("yolo-kd pred: this head has no DFL (reg_max=1, e.g. YOLO26): LD skipped, class KD only")
            self.terms = ("pred_cls",)

    def forward(self, s, t, targets) -> dict[str, torch.Tensor]:
        out = {"pred_cls": self.cls_loss(s.scores, t.scores)}
        if self.has_dfl:
            weight = torch.sigmoid(t.scores.detach().float()).amax(dim=1)
            out["pred_ld"] = self.ld_weight * self.ld_loss(s.boxes, t.boxes, weight)
        return out
