"""Distillation methods by name: each is a trainable connector (adapters) plus a pure loss from `yolo_kd.losses`.

A method is an `nn.Module` built for one (student, teacher) pair from their `TapShapes`, and called with the
student's taps, the teacher's taps and the batch targets. It returns named terms (one logged column each); its
class attribute `terms` lists those names before the first batch. Register a new one with ``@register("name")``.
"""

from .registry import METHODS, Method, build_method, check_method, method_weight, register
from . import crosskd, cskd, feature, head  # noqa: E402,F401,I001  (registers the built-in methods)

__all__ = ["METHODS", "Method", "build_method", "check_method", "method_weight", "register"]
