"""Float32 guard shared by the losses: distillation math must not run in half precision under autocast."""

import torch


def no_autocast(x: torch.Tensor) -> torch.autocast:
    """Context manager that switches autocast off on the device of `x`, so ops inside run in the inputs' dtype."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def check_same_shape(name: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    """Raise a one-line ValueError when student and teacher shapes differ."""
    if student.shape != teacher.shape:
        raise ValueError(f"{name} needs equal student/teacher shapes, got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}")
