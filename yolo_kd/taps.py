"""What the losses read: Detect-head features and raw predictions, or chosen layers, plus the batch's GT boxes.

Default taps need no hooks: a YOLO head's raw output already carries its inputs (`feats`, P3/P4/P5), class logits
(`scores`, N x nc x A) and box outputs (`boxes`, N x 4*reg_max x A). For YOLO26 these are the dense `one2many` branch's,
and the `one2one` branch's scores and boxes ride in `Taps.one2one`.
Other layers are read with `record_layers`, picklable hooks that exist only inside its `with` block.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn

from .ultra import head_outputs, one2one_outputs


@dataclass
class Taps:
    """One model's view of one batch: feature maps per level, class logits and raw box outputs (or None)."""

    feats: list[torch.Tensor]
    scores: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    head: nn.Module | None = None  # the model's Detect head (teachers only: CrossKD runs student features through it)
    head_levels: list[int] | None = None  # head level that produced each level of scores/boxes (None: 0, 1, 2, ...)
    grid: list[tuple[int, int]] | None = None  # (H, W) of each level of scores/boxes (the head's grids, not `feats`')
    one2one: Taps | None = None  # YOLO26: the one-to-one branch's scores/boxes (feats empty; None without the branch)


@dataclass
class TapShapes:
    """Static facts about a model's taps, known before training: channels per level, classes, DFL bins."""

    channels: list[int]
    nc: int
    reg_max: int
    strides: tuple[float, ...] = ()  # Detect level strides (pairing levels for a teacher at its own size)
    one2one: bool = False  # the head has a one-to-one branch (YOLO26)


@dataclass
class Targets:
    """Ground truth of a batch: per image, boxes (n_i, 4) xyxy normalised to [0, 1] and class indices (n_i,)."""

    boxes: list[torch.Tensor]
    cls: list[torch.Tensor]

    @classmethod
    def from_batch(cls, batch: dict) -> Targets:
        """Split Ultralytics' flat `bboxes` (normalised xywh), `cls` and `batch_idx` into per-image lists."""
        n = batch["img"].shape[0]
        xywh = batch["bboxes"].float()
        xyxy = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1).clamp(0, 1)
        idx = batch["batch_idx"].long().view(-1)
        labels = batch["cls"].long().view(-1)
        return cls(boxes=[xyxy[idx == i] for i in range(n)], cls=[labels[idx == i] for i in range(n)])


def head_taps(output, layer_feats: list[torch.Tensor] | None = None) -> Taps:
    """Taps from a model's output; `layer_feats` (from `record_layers`) replaces the head inputs when given (`grid`
    keeps the head's own level grids, which the per-anchor scores and boxes follow)."""
    feats, scores, boxes = head_outputs(output)
    grid = [tuple(f.shape[-2:]) for f in feats]
    o2o = one2one_outputs(output)
    one2one = Taps(feats=[], scores=o2o[0], boxes=o2o[1], grid=grid) if o2o is not None else None
    return Taps(feats=list(layer_feats) if layer_feats else feats, scores=scores, boxes=boxes, grid=grid,
                one2one=one2one)


def take_rows(taps: Taps, n: int) -> Taps:
    """The first `n` images of a batch's taps (the labeled rows when unlabeled images follow them)."""
    if taps.feats and len(taps.feats[0]) == n:
        return taps
    scores = taps.scores[:n] if taps.scores is not None else None
    boxes = taps.boxes[:n] if taps.boxes is not None else None
    one2one = take_rows(taps.one2one, n) if taps.one2one is not None else None
    return replace(taps, feats=[f[:n] for f in taps.feats], scores=scores, boxes=boxes, one2one=one2one)


def cat_rows(a: Taps, b: Taps) -> Taps:
    """Two batches' taps as one batch: `a`'s images first, then `b`'s (same model, same grids)."""
    def cat(x, y):
        return torch.cat([x, y]) if x is not None else None

    one2one = cat_rows(a.one2one, b.one2one) if a.one2one is not None else None
    return replace(a, feats=[cat(x, y) for x, y in zip(a.feats, b.feats)], scores=cat(a.scores, b.scores),
                   boxes=cat(a.boxes, b.boxes), one2one=one2one)


def split_levels(x: torch.Tensor, grids: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Per-anchor tensor (N, K, A) -> per level (N, K, H_l, W_l), for the level grids (H_l, W_l) in head order."""
    parts = torch.split(x, [h * w for h, w in grids], dim=-1)
    return [p.reshape(*p.shape[:2], *hw) for p, hw in zip(parts, grids)]


def cell_centres(grid: list[tuple[int, int]], device=None) -> torch.Tensor:
    """(A, 2) anchor cell centres (x, y) normalised to [0, 1], ordered as the Detect head flattens its level grids
    `grid` (H, W): level by level, row-major within a level."""
    centres = []
    for h, w in grid:
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        centres.append(torch.stack([gx.flatten(), gy.flatten()], 1))
    return torch.cat(centres)


def anchors_in_boxes(grid: list[tuple[int, int]], boxes: list[torch.Tensor], device=None) -> torch.Tensor:
    """(N, A) float mask: 1 where an anchor's cell centre (`cell_centres`) lies inside one of its image's GT boxes
    (xyxy in [0, 1])."""
    c = cell_centres(grid, device)  # (A, 2)
    mask = torch.zeros(len(boxes), len(c), device=c.device)
    for i, b in enumerate(boxes):
        if len(b):
            b = b.to(c.device).float()
            inside = ((c[None, :, 0] > b[:, None, 0]) & (c[None, :, 0] < b[:, None, 2])
                      & (c[None, :, 1] > b[:, None, 1]) & (c[None, :, 1] < b[:, None, 3]))
            mask[i] = inside.any(0).float()
    return mask


class RecordingHook:
    """Picklable forward hook: stores a layer's output under its slot in a shared dict."""

    def __init__(self, outputs: dict, slot: int):
        self.outputs, self.slot = outputs, slot

    def __call__(self, module, inputs, output):
        self.outputs[self.slot] = output


@contextmanager
def record_layers(model: nn.Module, layers: list[int] | None):
    """Yield a list that holds the outputs of `model.model[i]` for `layers`, in order, once the block exits.

    Hooks exist only inside the block, so EMA copies, checkpoints and exports never carry them.
    """
    outputs: dict[int, torch.Tensor] = {}
    feats: list[torch.Tensor] = []
    handles = [model.model[i].register_forward_hook(RecordingHook(outputs, s)) for s, i in enumerate(layers or [])]
    try:
        yield feats
    finally:
        for h in handles:
            h.remove()
        feats.extend(outputs[s] for s in sorted(outputs))
