"""CrossKD (Wang et al., "CrossKD: Cross-Head Knowledge Distillation for Object Detection", CVPR 2024; code
jbwang1997/CrossKD): the student's head inputs are run through the frozen teacher's head, and those cross-head
predictions are distilled towards the teacher's own predictions. The student's own head is trained by the ground
truth alone, so the detection target and the distillation target no longer pull one set of outputs two ways.

Here, per level: student P3-P5 (1x1 adapter to the teacher's width when widths differ) -> the teacher's Detect head,
dense (one-to-many) branch (for a teacher at 2x its size, the head level of the same image area: student P3 through
the teacher's P4 convolutions) -> class logits and DFL box logits on the student's grid; terms:
- crosskd_cls: ClassScoreKD(cross scores, teacher scores) (soft-label BCE, teacher-confidence weighted), or with
  `quality_beta` BCKD's QualityClassKD (BCE * |p_t - p_s|^beta);
- crosskd_ld: LD on the DFL bins (T = 10), weighted by the teacher's confidence; dropped (logged) for a reg_max = 1
  teacher (YOLO26). Both terms compare teacher-head outputs with the teacher's, so any student head family fits.
Differences from the paper's GFL code: the cross point is the head input (the whole teacher head is reused, not its
last tower layers), the class term is our soft-label BCE instead of a quality-focal KD, and the box term is LD on
bins only (no GIoU on decoded boxes). The teacher head is never trained: it stays outside the student's module tree
(it arrives with the teacher's taps) and its parameters have requires_grad False.
"""

from __future__ import annotations

import torch

from ..losses import DFLDistillLoss
from ..needs import SCORES, TEACHER_DFL
from ..ultra import dense_predictions
from .registry import Method, register
from .feature import channel_aligners
from .head import class_kd


@register("crosskd")
class CrossHead(Method):
    """Student features through the teacher's head, matched to the teacher's predictions."""

    terms = ("crosskd_cls", "crosskd_ld")
    needs = {"crosskd_cls": frozenset({SCORES}), "crosskd_ld": frozenset({SCORES, TEACHER_DFL})}
    drops_terms = True  # the cross-head outputs are the teacher head's: any student head family fits
    needs_head_inputs = True  # feeds the teacher's Detect head, so the taps must be its inputs (no custom layers)

    def __init__(self, student, teacher, temperature=1.0, ld_temperature=10.0, quality_beta=None):
        super().__init__(student, teacher)
        self.align = channel_aligners(student.channels, teacher.channels)
        self.cls_loss = class_kd(temperature, True, quality_beta)
        self.has_dfl = "crosskd_ld" in self.keep_terms(self.terms)
        self.ld_loss = DFLDistillLoss(reg_max=teacher.reg_max, temperature=ld_temperature) if self.has_dfl else None

    def forward(self, s, t, targets) -> dict[str, torch.Tensor]:
        feats = [a(f) for a, f in zip(self.align, s.feats)]
        head_dtype = next(t.head.parameters()).dtype
        scores, boxes = dense_predictions(t.head, [f.to(head_dtype) for f in feats], t.head_levels)
        out = {"crosskd_cls": self.cls_loss(scores, t.scores)}
        if self.has_dfl:
            weight = torch.sigmoid(t.scores.detach().float()).amax(dim=1)
            out["crosskd_ld"] = self.ld_loss(boxes, t.boxes, weight)
        return out
