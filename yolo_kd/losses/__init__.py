"""Distillation losses as pure tensor math: student first, teacher second, no Ultralytics inside.

Each loss can be reused in any training loop; the engine's methods (`yolo_kd.methods`) wire them to YOLO taps.
"""

from .mse import FeatureMSELoss

__all__ = ["FeatureMSELoss"]
