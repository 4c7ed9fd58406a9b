"""Prediction distillation of YOLO heads: class scores and DFL box distributions."""

from __future__ import annotations

import torch

from ..losses import ClassScoreKD, DFLDistillLoss
from ..taps import anchors_in_boxes
from .registry import Method, register

LD_REGIONS = ("all", "gt")


@register("pred")
class HeadPrediction(Method):
    """Class-score KD (teacher sigmoid targets, temperature, teacher-confidence weighting) + LD on DFL bins.

    LD is weighted per anchor by the teacher's max class score, so confident teacher boxes teach most.
    `ld_region="gt"` restricts LD to the anchors whose cell centre lies inside a GT box (the LD paper's main
    distillation region is the assigner's positives; inside-a-GT-box is the candidate set YOLO's task-aligned
    assigner picks them from), so LD stops spending its weight on background cells nothing else trains.
    YOLO26 heads have reg_max=1 (no DFL distribution): LD is skipped there and only `pred_cls` is logged.
    """

    terms = ("pred_cls", "pred_ld")
    needs_head = True

    def __init__(self, student, teacher, temperature=1.0, conf_weighted=True, ld_temperature=10.0, ld_weight=1.0,
                 ld_region="all"):
        super().__init__(student, teacher)
        if ld_region not in LD_REGIONS:
            raise ValueError(f"ld_region={ld_region!r} is unknown: use one of {list(LD_REGIONS)}")
        self.ld_region = ld_region
        self.reads_gt = ld_region == "gt"
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
            if self.ld_region == "gt":
                weight = weight * anchors_in_boxes(s.grid, targets.boxes, weight.device)
            out["pred_ld"] = self.ld_weight * self.ld_loss(s.boxes, t.boxes, weight)
        return out
