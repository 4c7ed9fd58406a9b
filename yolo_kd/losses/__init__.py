"""Distillation losses as pure tensor math: student first, teacher second, no Ultralytics inside.

Each loss can be reused in any training loop; the engine's methods (`yolo_kd.methods`) wire them to YOLO taps.
All of them detach the teacher themselves and compute in float32 with autocast switched off.
"""

from .box import DecodedBoxKD, decode_distances, giou
from .cskd import CosineGuidedLoss
from .cwd import ChannelWiseDivergence
from .dense import dense_box_loss, dense_class_loss, top_fraction
from .fgd import FGDLoss, GcBlock, fgd_attention, fgd_masks
from .head import ClassScoreKD, DFLDistillLoss
from .mgd import MGDLoss
from .mse import FeatureMSELoss
from .pkd import PearsonFeatureLoss, channel_standardize
from .quality import QualityClassKD
from .sl2 import ScoreWeightedL2

__all__ = [
    "ChannelWiseDivergence",
    "ClassScoreKD",
    "CosineGuidedLoss",
    "DFLDistillLoss",
    "DecodedBoxKD",
    "FGDLoss",
    "FeatureMSELoss",
    "GcBlock",
    "MGDLoss",
    "PearsonFeatureLoss",
    "QualityClassKD",
    "ScoreWeightedL2",
    "channel_standardize",
    "decode_distances",
    "dense_box_loss",
    "dense_class_loss",
    "fgd_attention",
    "fgd_masks",
    "giou",
    "top_fraction",
]
