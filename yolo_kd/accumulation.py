"""When the optimizer steps, decided by the engine so a resumed run continues an accumulation in progress.

Ultralytics steps once `ni - last_opt_step >= accumulate` (ni: the batch's index in the run), with `last_opt_step` a
local of its training loop that restarts at -1, and the gradients since the last step zeroed, whenever a run starts:
a resumed run steps on its first batch, where the uninterrupted run went on accumulating. The engine keeps the same
rule with a counter of its own (`Accumulation`, saved in last.pt with the accumulated gradients) and lets
Ultralytics' test pass on every batch (`StepEveryBatch`); its `optimizer_step` wrapper steps only when due.
"""

from __future__ import annotations


class StepEveryBatch(int):
    """Ultralytics' `accumulate`, same value, that its step test `ni - last_opt_step >= accumulate` passes on every
    batch (an int subclass on the right of `>=`: Python asks its reflected `__le__` first)."""

    def __le__(self, other):
        return True


class Accumulation:
    """Ultralytics' step rule with the engine's own counter: `start_epoch` at each epoch's start, `next_batch` before
    each batch's step test (`accumulate`: Ultralytics' value for it), `due()` at it, `stepped()` after a step,
    `reset()` where Ultralytics restarts its counter (a rebuilt train loader, NaN recovery)."""

    def __init__(self):
        self.last_opt_step, self.ni, self.accumulate = -1, -1, 1

    def start_epoch(self, epoch: int, batches: int) -> None:
        self.ni = int(epoch) * int(batches) - 1  # the batch before this epoch's first: ni = i + batches * epoch

    def next_batch(self, accumulate: int) -> None:
        self.ni, self.accumulate = self.ni + 1, int(accumulate)

    def due(self) -> bool:
        return self.ni - self.last_opt_step >= self.accumulate

    def stepped(self) -> None:
        self.last_opt_step = self.ni

    def reset(self) -> None:
        self.last_opt_step = -1
