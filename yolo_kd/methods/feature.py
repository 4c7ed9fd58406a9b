"""Feature-mimicking methods on the neck features (Detect inputs, or the chosen layers)."""

from __future__ import annotations

import torch
from torch import nn

from ..losses import ChannelWiseDivergence, FeatureMSELoss, FGDLoss, MGDLoss, PearsonFeatureLoss, ScoreWeightedL2
from ..needs import SCORES
from ..resolution import resample
from ..taps import split_levels
from .registry import Method, register


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


@register("fgd")
class FocalGlobal(Method):
    """FGD (Yang et al., CVPR 2022) per level, summed over levels; GT boxes give the focal masks.

    Each level has its own FGDLoss (1x1 align when channels differ, student and teacher GcBlocks): all trainable.
    Published coefficients are kept; `scale` rescales all four together (the authors' own tuning advice), since
    FGD's sums grow with the feature area and YOLO grids differ from the detectors FGD was tuned on.
    """

    terms = ("fgd",)
    reads_gt = True

    def __init__(self, student, teacher, temp=0.5, alpha=1e-3, beta=5e-4, gamma=1e-3, lam=5e-6, scale=1.0):
        super().__init__(student, teacher)
        self.levels = nn.ModuleList(
            FGDLoss(cs, ct, temp=temp, alpha=alpha * scale, beta=beta * scale, gamma=gamma * scale, lam=lam * scale)
            for cs, ct in zip(student.channels, teacher.channels)
        )

    def forward(self, s, t, targets) -> dict[str, torch.Tensor]:
        return {"fgd": sum(loss(fs, ft, targets.boxes) for loss, fs, ft in zip(self.levels, s.feats, t.feats))}


@register("cwd")
class ChannelWise(Method):
    """CWD (Shu et al., ICCV 2021): per level, align then tau^2/(N*C) sum KL of per-channel spatial softmaxes."""

    terms = ("cwd",)
    default_weight = 5.0  # weight 1 lost 0.21 points, weight 5 gained 1.19 (3 seeds, README Benchmark)

    def __init__(self, student, teacher, tau=1.0):
        super().__init__(student, teacher)
        self.align = channel_aligners(student.channels, teacher.channels)
        self.loss = ChannelWiseDivergence(tau=tau)

    def forward(self, s, t, targets) -> dict[str, torch.Tensor]:
        return {"cwd": sum(self.loss(a(fs), ft) for a, fs, ft in zip(self.align, s.feats, t.feats))}


@register("mgd")
class MaskedGenerative(Method):
    """MGD (Yang et al., ECCV 2022): per level, align, mask 65% of positions, regenerate the teacher map.

    term = sum_l MGDLoss_l * REF_POSITIONS / sum_l H_l * W_l. The published loss sums over positions, so it grows with
    the input area while the detection loss does not; the factor keeps its share of the loss at any image size, equal
    to the published sum at REF_POSITIONS (P3-P5 at 128 px, where the default weight was measured).
    """

    terms = ("mgd",)
    default_weight = 10.0  # weight 1 lost 0.57 points, weight 10 gained 1.00 (3 seeds at 128 px, README Benchmark)
    REF_POSITIONS = 16 * 16 + 8 * 8 + 4 * 4

    def __init__(self, student, teacher, alpha=2e-5, lambda_mgd=0.65):
        super().__init__(student, teacher)
        self.levels = nn.ModuleList(MGDLoss(cs, ct, alpha=alpha, lambda_mgd=lambda_mgd)
                                    for cs, ct in zip(student.channels, teacher.channels))

    def forward(self, s, t, targets) -> dict[str, torch.Tensor]:
        positions = sum(f.shape[-2] * f.shape[-1] for f in t.feats)
        total = sum(loss(fs, ft) for loss, fs, ft in zip(self.levels, s.feats, t.feats))
        return {"mgd": total * (self.REF_POSITIONS / positions)}


@register("pkd")
class PearsonImitation(Method):
    """PKD (Cao et al., NeurIPS 2022): per level, align (1x1 conv when widths differ), standardise each channel of
    both maps, MSE / 2; MEAN over the L levels. Insensitive to the teacher's activation scale, so it suits teachers of
    another width or family.

    mmrazor (`configs/distill/mmdet/pkd`) applies one PKDLoss per FPN level and SUMS them: its value is L x ours
    (3 x on P3-P5), so mmrazor's loss_weight w corresponds to our weight w * L (their 6 on 5 RetinaNet levels = our
    30). The mean keeps the default weight 1 meaning the same whatever the number of tapped levels."""

    terms = ("pkd",)

    def __init__(self, student, teacher):
        super().__init__(student, teacher)
        self.align = channel_aligners(student.channels, teacher.channels)
        self.loss = PearsonFeatureLoss()

    def forward(self, s, t, targets) -> dict[str, torch.Tensor]:
        return {"pkd": torch.stack([self.loss(a(fs), ft) for a, fs, ft in zip(self.align, s.feats, t.feats)]).mean()}


@register("sl2")
class ScoreWeightedImitation(Method):
    """Ultralytics' built-in KD loss as a method: per level, a Conv1x1-ReLU-Conv1x1 projector (always, as the
    built-in) then L2 weighted per cell by the teacher's max class sigmoid; summed over levels. A YOLO26 teacher's
    cell score is that of the mean of its one2many and one2one class logits, as the built-in's.

    With weight 6 (the built-in's `dis`) it is the built-in's loss term for term, so the bench separates the loss from
    the engine, and it combines with head methods (`sl2+pred`).
    """

    terms = ("sl2",)
    needs = {"sl2": frozenset({SCORES})}  # the teacher's class scores weight the cells
    default_weight = 6.0  # the built-in's dis

    def __init__(self, student, teacher):
        super().__init__(student, teacher)
        self.projector = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cs, ct, 1), nn.ReLU(inplace=True), nn.Conv2d(ct, ct, 1))
            for cs, ct in zip(student.channels, teacher.channels)
        )
        self.loss = ScoreWeightedL2()

    def forward(self, s, t, targets) -> dict[str, torch.Tensor]:
        logits = t.scores if t.one2one is None else (t.scores + t.one2one.scores) / 2  # YOLO26: as the built-in
        scores = split_levels(logits.detach().float().sigmoid().amax(1, keepdim=True), t.grid)
        scores = [resample(sc, tuple(ft.shape[-2:])) for sc, ft in zip(scores, t.feats)]  # custom layers' grids
        return {"sl2": sum(self.loss(p(fs), ft, sc) for p, fs, ft, sc in zip(self.projector, s.feats, t.feats, scores))}
