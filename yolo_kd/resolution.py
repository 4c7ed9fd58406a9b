"""A teacher at its own image size: which teacher level teaches which student level, and how its maps and DFL box
distributions are brought onto the student's grid and into the student's distance unit.

Pairing. A teacher at `ratio` x the student's input size sees, at stride t_k, cells of t_k / ratio student pixels.
Student level l (stride s_l) is paired with the teacher level whose cells cover the same image area, t_k = ratio * s_l
(at 2x: teacher P4 -> student P3, teacher P5 -> student P4, the level shift of multi-scale aligned distillation);
a student level with no such teacher level (the student's P5 at 2x) is paired with the teacher level of the same
index, whose map is resampled onto the student's grid (at 2x: teacher P5 area-pooled 2x2 -> student P5).

Boxes. DFL bins count distances in cells of the grid that predicts them. A teacher level of grid width w_t resampled
onto a student grid of width w_s predicts distances in units w_s / w_t times the student's cells (at 2x on the same
level: 0.5, so 6 teacher cells are 3 student cells; on a paired level: 1, nothing to convert). Each side's bin
distribution p is moved to the student's unit by linear interpolation of its bins, bin i -> position g * i split
between the two nearest bins (a soft two-bin encoding per source bin): the expected distance becomes exactly g times
the teacher's, and the distribution's spread scales with it. Positions past the last bin are clamped to it.
Distributions are resampled spatially as probabilities (a mixture), never as raw logits; the result is returned as
log-probabilities, which every loss here reads as logits (softmax(log p / T) = softmax(logits / T)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .taps import Taps, split_levels

PROB_FLOOR = 1e-30  # log-probability floor for bins a rescaled distribution leaves empty


def level_pairs(student_strides: list[float], teacher_strides: list[float], ratio: float) -> list[int]:
    """For each student level, the teacher level whose cells cover the same image area (t_k == ratio * s_l), or the
    level of the same index when none does."""
    pairs = []
    for i, s in enumerate(student_strides):
        match = [k for k, t in enumerate(teacher_strides) if abs(t - ratio * s) < 1e-6]
        pairs.append(match[0] if match else min(i, len(teacher_strides) - 1))
    return pairs


def head_grid(strides, img: torch.Tensor) -> list[tuple[int, int]]:
    """A Detect head's level grids (H / stride, W / stride) for an input batch `img`."""
    return [(int(img.shape[-2] // s), int(img.shape[-1] // s)) for s in [float(v) for v in strides]]


def resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) onto `size`: area averaging (anti-aliased, a box filter) when shrinking, bilinear when growing,
    unchanged when equal. Used for feature maps, per-anchor maps and image batches alike."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def bin_rescale_matrix(reg_max: int, gain: float, device=None) -> torch.Tensor:
    """(reg_max, reg_max) matrix M: a distribution p over bins 0..reg_max-1 becomes p @ M, with bin i moved to the
    position gain * i (clamped to the last bin) and split linearly between its two neighbouring bins."""
    pos = (torch.arange(reg_max, dtype=torch.float32, device=device) * gain).clamp(max=reg_max - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=reg_max - 1)
    w_hi = pos - lo.float()
    m = torch.zeros(reg_max, reg_max, device=device)
    rows = torch.arange(reg_max, device=device)
    m.index_put_((rows, lo), 1 - w_hi, accumulate=True)
    m.index_put_((rows, hi), w_hi, accumulate=True)
    return m


def boxes_to_student_grid(boxes: torch.Tensor, size: tuple[int, int], reg_max: int) -> torch.Tensor:
    """DFL logits of one teacher level, (N, 4 * reg_max, h, w), as log-probabilities on the student grid `size` and in
    the student's cells (left/right scaled by the width ratio, top/bottom by the height ratio)."""
    n, _, h, w = boxes.shape
    if (h, w) == tuple(size):
        return boxes
    probs = boxes.float().reshape(n, 4, reg_max, h, w).softmax(2).reshape(n, 4 * reg_max, h, w)
    probs = resample(probs, size).reshape(n, 4, reg_max, *size)
    gains = (size[1] / w, size[0] / h, size[1] / w, size[0] / h)  # ltrb
    sides = [torch.einsum("nbhw,bc->nchw", probs[:, i], bin_rescale_matrix(reg_max, g, probs.device))
             for i, g in enumerate(gains)]
    return torch.stack(sides, 1).clamp_min(PROB_FLOOR).log().reshape(n, 4 * reg_max, *size)


def distances_to_student_grid(boxes: torch.Tensor, size: tuple[int, int], reg_max: int = 1) -> torch.Tensor:
    """Direct ltrb distances in cells (reg_max = 1, YOLO26), (N, 4, h, w): resampled and scaled to student cells."""
    h, w = boxes.shape[-2:]
    gains = boxes.new_tensor([size[1] / w, size[0] / h, size[1] / w, size[0] / h]).view(1, 4, 1, 1)
    return resample(boxes, size) * gains


def to_student_grid(teacher: Taps, feat_sizes: list[tuple[int, int]], feat_pairs: list[int],
                    student_grid: list[tuple[int, int]], head_pairs: list[int], teacher_grid: list[tuple[int, int]],
                    reg_max: int) -> Taps:
    """The teacher's taps on the student's grids: feature tap l from teacher tap feat_pairs[l], resampled to
    feat_sizes[l]; per-anchor outputs of student level l from teacher level head_pairs[l], resampled to
    student_grid[l] (teacher_grid: the teacher's own level grids, how its per-anchor outputs split)."""
    feats = [resample(teacher.feats[k], size) for k, size in zip(feat_pairs, feat_sizes)]
    scores = boxes = None
    if teacher.scores is not None:
        maps = split_levels(teacher.scores, teacher_grid)
        scores = torch.cat([resample(maps[k], hw).flatten(2) for k, hw in zip(head_pairs, student_grid)], -1)
    if teacher.boxes is not None:
        maps = split_levels(teacher.boxes, teacher_grid)
        convert = boxes_to_student_grid if reg_max > 1 else distances_to_student_grid
        boxes = torch.cat([convert(maps[k], hw, reg_max).flatten(2) for k, hw in zip(head_pairs, student_grid)], -1)
    return Taps(feats=feats, scores=scores, boxes=boxes, head=teacher.head, head_levels=list(head_pairs))
