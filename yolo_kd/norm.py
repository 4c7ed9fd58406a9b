"""BatchNorm running statistics kept out of a forward (the unlabeled pool's, with `unlabeled_bn: labeled`)."""

from __future__ import annotations

from contextlib import contextmanager

from torch import nn


@contextmanager
def running_stats_frozen(model: nn.Module):
    """Within the block, every BatchNorm of `model` in training mode normalises with the batch's own statistics and
    leaves `running_mean`, `running_var` and `num_batches_tracked` as they were (track_running_stats off)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True
