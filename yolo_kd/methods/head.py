"""Prediction distillation of YOLO heads: class scores, DFL box distributions and decoded boxes, on each branch."""

from __future__ import annotations

import torch

from ..losses import ClassScoreKD, DecodedBoxKD, DFLDistillLoss, QualityClassKD
from ..needs import DECODED_BOXES, DFL_BINS, ONE2ONE, SCORES, offers
from ..taps import anchors_in_boxes
from .registry import Method, register

LD_REGIONS = ("all", "gt")
BRANCHES = ("both", "one2many", "one2one")
#: `box_weight` when none is given and LD cannot apply (a reg_max = 1 head on either side): box KD on decoded boxes
#: stands in for LD there (PP-YOLOE+'s iou:class weight 2.5:1; docs/benchmarks.md, per head family)
BOX_WEIGHT_WITHOUT_LD = 2.5


def default_box_weight(student, teacher) -> float:
    """`box_weight=None`: BOX_WEIGHT_WITHOUT_LD where the pair has no DFL bins for LD (a YOLO26 head), else 0 (LD
    already teaches boxes; box KD on top did not help YOLO11 in the family bench)."""
    return 0.0 if DFL_BINS in offers(student, teacher) else BOX_WEIGHT_WITHOUT_LD


def class_kd(temperature: float, conf_weighted: bool, quality_beta: float | None):
    """The class term: soft-label BCE (ClassScoreKD), or BCKD's quality-focused one when `quality_beta` is given."""
    if quality_beta is None:
        return ClassScoreKD(temperature=temperature, conf_weighted=conf_weighted)
    return QualityClassKD(beta=quality_beta, temperature=temperature, conf_weighted=conf_weighted)


@register("pred")
class HeadPrediction(Method):
    """Class-score KD (teacher sigmoid targets, temperature, teacher-confidence weighting) + LD on DFL bins, and,
    optionally, GIoU box KD on decoded boxes (`box_weight` > 0) and BCKD's quality factor (`quality_beta`).

    LD is weighted per anchor by the teacher's max class score, so confident teacher boxes teach most.
    `ld_region="gt"` restricts LD to the anchors whose cell centre lies inside a GT box (the LD paper's main
    distillation region is the assigner's positives; inside-a-GT-box is the candidate set YOLO's task-aligned
    assigner picks them from), so LD stops spending its weight on background cells nothing else trains.
    LD needs DFL bins on both heads: with a YOLO26 (reg_max=1) head on either side it is dropped (logged).
    `pred_box` = box_weight * DecodedBoxKD with w_a = max_k sigmoid(t_{k,a}) where that is >= box_conf, else 0 (the
    teacher's confident region, weighted by its score); it works across head families (DFL teacher, reg_max 1 student).
    `box_weight=None` (default) is per family (`default_box_weight`): 2.5 where LD cannot apply, else 0.
    `quality_beta` (None: off) turns the class term into QualityClassKD: BCE * |p_t - p_s|^beta (BCKD: beta 1).
    YOLO26 students also have a one-to-one branch (the deployed, NMS-free one, fed detached features): with
    `branches="both"` (default) or "one2one" it gets the same class (and box) terms towards the teacher's one-to-one
    branch (`pred_cls_o2o`, `pred_box_o2o`); a teacher without that branch drops them (logged).
    """

    terms = ("pred_cls", "pred_ld", "pred_box", "pred_cls_o2o", "pred_box_o2o")
    needs = {"pred_cls": frozenset({SCORES}), "pred_ld": frozenset({SCORES, DFL_BINS}),
             "pred_box": frozenset({SCORES, DECODED_BOXES}), "pred_cls_o2o": frozenset({SCORES, ONE2ONE}),
             "pred_box_o2o": frozenset({SCORES, DECODED_BOXES, ONE2ONE})}
    drops_terms = True

    @classmethod
    def reads_ground_truth(cls, params: dict) -> bool:
        return params.get("ld_region") == "gt"

    def __init__(self, student, teacher, temperature=1.0, conf_weighted=True, ld_temperature=10.0, ld_weight=1.0,
                 ld_region="all", box_weight=None, box_conf=0.05, quality_beta=None, branches="both"):
        super().__init__(student, teacher)
        if ld_region not in LD_REGIONS:
            raise ValueError(f"ld_region={ld_region!r} is unknown: use one of {list(LD_REGIONS)}")
        if branches not in BRANCHES:
            raise ValueError(f"branches={branches!r} is unknown: use one of {list(BRANCHES)}")
        self.ld_region = ld_region
        self.reads_gt = self.reads_ground_truth({"ld_region": ld_region})
        self.cls_loss = class_kd(temperature, conf_weighted, quality_beta)
        auto_box = box_weight is None
        if auto_box:
            box_weight = default_box_weight(student, teacher)
        self.ld_weight, self.box_weight, self.box_conf = ld_weight, box_weight, box_conf
        self.box_loss = DecodedBoxKD(student.reg_max, teacher.reg_max)
        many = ("pred_cls", "pred_ld") + (("pred_box",) if box_weight else ())
        one = (("pred_cls_o2o",) + (("pred_box_o2o",) if box_weight else ())) if student.one2one else ()
        self.keep_terms({"both": many + one, "one2many": many, "one2one": one}[branches])
        if auto_box and {"pred_box", "pred_box_o2o"} & set(self.terms):
            from ultralytics.utils import LOGGER

            LOGGER.info(f"yolo-kd pred: box KD on decoded boxes (box_weight={box_weight:g}) stands in for LD, which "
                        "needs DFL bins on both heads; pred box_weight=0 turns it off")
        if "pred_ld" in self.terms:
            self.ld_loss = DFLDistillLoss(reg_max=student.reg_max, temperature=ld_temperature)

    def forward(self, s, t, targets) -> dict[str, torch.Tensor]:
        out = {}
        if "pred_cls" in self.terms:
            out["pred_cls"] = self.cls_loss(s.scores, t.scores)
        if "pred_ld" in self.terms:
            weight = torch.sigmoid(t.scores.detach().float()).amax(dim=1)
            if self.ld_region == "gt":
                weight = weight * anchors_in_boxes(s.grid, targets.boxes, weight.device)
            out["pred_ld"] = self.ld_weight * self.ld_loss(s.boxes, t.boxes, weight)
        if "pred_box" in self.terms:
            out["pred_box"] = self.box_weight * self.box_loss(s.boxes, t.boxes, self.box_region(t.scores))
        if "pred_cls_o2o" in self.terms:
            out["pred_cls_o2o"] = self.cls_loss(s.one2one.scores, t.one2one.scores)
        if "pred_box_o2o" in self.terms:
            out["pred_box_o2o"] = self.box_weight * self.box_loss(s.one2one.boxes, t.one2one.boxes,
                                                                  self.box_region(t.one2one.scores))
        return out

    def box_region(self, teacher_scores: torch.Tensor) -> torch.Tensor:
        """(N, A) box KD weights: the teacher's max class score where it is >= box_conf, else 0."""
        conf = torch.sigmoid(teacher_scores.detach().float()).amax(dim=1)
        return conf * (conf >= self.box_conf)
