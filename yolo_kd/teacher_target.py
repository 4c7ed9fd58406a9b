"""The teacher target: the teachers' raw taps -> the one target the methods read, in one declared encoding.

`teacher_target` is the stage between the teachers' forwards and the methods: class map -> the student's grid ->
average over the teachers (combine: mean). It always runs in float32 with autocast off, so a mixed-precision step
(fp16 or bf16) cannot round the target or underflow its box probabilities (fp16: p < 6e-8 -> 0, log -> -inf, NaN in LD).

Encoding of every target `Taps` (whatever the teachers' sizes):
  feats   float32 (N, C_t, h, w) on the student's tapped grids (feature tap l from teacher tap `feat_pairs[l]`);
  scores  float32 class logits (N, nc, A) in the data set's class order, A the student's anchors;
  boxes   reg_max > 1: float32 DFL log-probabilities (N, 4 * reg_max, A): per side, log p over the bins in student
          cells (log_softmax of the teacher's logits on its own grid, the converted distribution floored at
          log(1e-30) on another grid, `resolution`). softmax(boxes / T) == softmax(teacher logits / T), so a loss that
          takes logits (LD) reads them unchanged; one that compares distributions takes exp(boxes).
          reg_max == 1 (YOLO26): float32 ltrb distances in student cells;
  grid    the student's head level grids; head, head_levels: the teacher's Detect head and its level per student level;
  one2one a YOLO26 teacher's one-to-one branch (scores, boxes; no feats) in the same encoding, else None.
combine: mean averages feats and scores (logits) with the teacher weights, and boxes as probabilities (the mixture
sum_i w_i p_i / sum_i w_i, re-encoded as log-probabilities; distances for reg_max 1).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .resolution import PROB_FLOOR, to_student_grid
from .taps import Taps


@dataclass(frozen=True)
class TeacherView:
    """How one teacher's taps reach the student, fixed at construction: dataset -> teacher class index (or None),
    teacher feature tap per student tap, teacher head level per student head level, DFL bins."""

    class_index: list[int] | None
    feat_pairs: list[int]
    head_pairs: list[int]
    reg_max: int


def dfl_log_probs(boxes: torch.Tensor, reg_max: int) -> torch.Tensor:
    """(N, 4 * reg_max, A) DFL logits (or log-probabilities) -> float32 log-probabilities per side."""
    n, _, a = boxes.shape
    return F.log_softmax(boxes.float().reshape(n, 4, reg_max, a), dim=2).reshape(n, 4 * reg_max, a)


def dfl_probs(boxes: torch.Tensor, reg_max: int) -> torch.Tensor:
    """(N, 4 * reg_max, A) DFL logits (or log-probabilities) -> probabilities per side (each side sums to 1)."""
    n, _, a = boxes.shape
    return boxes.reshape(n, 4, reg_max, a).softmax(2).reshape(n, 4 * reg_max, a)


def encode(raw: Taps, view: TeacherView, student: Taps) -> Taps:
    """One teacher's raw taps (its own grids, `raw.grid`) as a target in the declared encoding (module docstring)."""
    t = Taps(feats=[f.float() for f in raw.feats], head=raw.head, grid=raw.grid,
             scores=None if raw.scores is None else raw.scores.float(),
             boxes=None if raw.boxes is None else raw.boxes.float())
    if view.class_index is not None and t.scores is not None:
        t = replace(t, scores=t.scores[:, view.class_index])
    if list(t.grid) != list(student.grid) or [f.shape[-2:] for f in t.feats] != [f.shape[-2:] for f in student.feats]:
        t = to_student_grid(t, [tuple(f.shape[-2:]) for f in student.feats], view.feat_pairs, list(student.grid),
                            view.head_pairs, list(t.grid), view.reg_max)
    if t.boxes is not None and view.reg_max > 1:
        t = replace(t, boxes=dfl_log_probs(t.boxes, view.reg_max))
    t = replace(t, grid=list(student.grid))
    if raw.one2one is not None:  # YOLO26: the one-to-one branch's scores and boxes, moved alike (it has no feats)
        t = replace(t, one2one=encode(raw.one2one, view, Taps(feats=[], grid=student.grid)))
    return t


def average(targets: list[Taps], weights: list[float], reg_max: int) -> Taps:
    """Weighted mean of encoded targets (equal shapes): logits and features linearly, DFL boxes as probabilities."""
    total = sum(weights)

    def mean(xs):
        return None if any(x is None for x in xs) else sum(w * x for w, x in zip(weights, xs)) / total

    boxes = [t.boxes for t in targets]
    if reg_max > 1 and boxes[0] is not None:
        box = mean([b.exp() for b in boxes]).clamp_min(PROB_FLOOR).log()
    else:
        box = mean(boxes)
    first = targets[0]
    branches = [t.one2one for t in targets]
    one2one = average(branches, weights, reg_max) if all(b is not None for b in branches) else None
    return replace(first, feats=[mean(list(f)) for f in zip(*(t.feats for t in targets))],
                   scores=mean([t.scores for t in targets]), boxes=box, one2one=one2one)


def teacher_target(raw: dict[str, Taps], views: dict[str, TeacherView], student: Taps, teachers: list[str],
                   weights: list[float], combine: str = "sum") -> list[tuple[str, Taps, float]]:
    """Per method-owning teacher: (its target in the declared encoding, its weight). combine="sum": every teacher in
    `teachers` with its weight; combine="mean": one weighted-mean target owned by the first teacher, weight 1.
    `raw`: each teacher's taps as its forward gave them; `student`: the student's taps (its grids)."""
    device = student.feats[0].device.type
    with torch.autocast(device_type=device, enabled=False):
        targets = {n: encode(raw[n], views[n], student) for n in teachers}
        if combine == "mean":
            return [(teachers[0], average([targets[n] for n in teachers], weights, views[teachers[0]].reg_max), 1.0)]
    return [(n, targets[n], w) for n, w in zip(teachers, weights)]
