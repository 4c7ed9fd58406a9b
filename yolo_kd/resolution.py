"""A teacher at its own image size: which teacher level teaches which student level, and how its maps and DFL box
distributions are brought onto the student's grid and into the student's distance unit.

Pairing. By default (`levels: index`) student level l is taught by the teacher's level l, whose finer map is brought
onto the student's grid (blocks, below). The alternative (`levels: area`) pairs student level l (stride s_l) with the
teacher level whose cells cover the same image area, t_k = ratio * s_l (at 2x: teacher P4 -> student P3, P5 -> P4, the
level shift of multi-scale aligned distillation; the student's P5 gets the teacher's P5). It assumes scale-specialised
levels, and YOLOv8-family teachers are not: the task-aligned assigner has no scale ranges, and a teacher trained at
128-160 px scores its objects on P3 alone (its P4/P5 max class sigmoid below 0.005 on the defect and pedestrian
sets), so decoded on the student's grid the level-shifted target is an empty detector (mAP 0.000 on both sets, where
the index-paired target scores 0.32 and 0.08; `tools/teacher_target_map.py`).

Boxes. DFL bins count distances in cells of the grid that predicts them. A teacher level of grid width w_t resampled
onto a student grid of width w_s predicts distances in units w_s / w_t times the student's cells (at 2x on the same
level: 0.5, so 6 teacher cells are 3 student cells; on a paired level: 1, nothing to convert). Each side's bin
distribution p is moved to the student's unit by linear interpolation of its bins, bin i -> position g * i split
between the two nearest bins (a soft two-bin encoding per source bin): the expected distance becomes exactly g times
the teacher's, and the distribution's spread scales with it. Positions past the last bin are clamped to it.
Distributions are resampled spatially as probabilities (a mixture), never as raw logits; the result is returned as
log-probabilities, which every loss here reads as logits (softmax(log p / T) = softmax(logits / T)).

Blocks. When a teacher level's grid is an exact multiple m of the student's (index pairing at 2x: 16x16 -> 8x8), each
student cell covers an m x m block of teacher cells, and averaging would dilute a detection in one of them. Instead
each student cell takes the block's cell with the highest class score (`block_select`): its class logits as they are,
and its box re-expressed from the student cell's centre. A teacher cell at offset (dx, dy) from that centre (in student
cells) predicting ltrb in its own cells gives l_s = l_t / m - dx, t_s = t_t / m - dy, r_s = r_t / m + dx,
b_s = b_t / m + dy: decoded, the same image box.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .taps import Taps, split_levels

PROB_FLOOR = 1e-30  # log-probability floor for bins a rescaled distribution leaves empty


def level_pairs(student_strides: list[float], teacher_strides: list[float], ratio: float,
                pairing: str = "area") -> list[int]:
    """For each student level, the teacher level whose cells cover the same image area (t_k == ratio * s_l), or the
    level of the same index when none does. `pairing="index"` ignores the ratio (a teacher at its own size is paired
    as one at the student's size: level with level of the same stride)."""
    if pairing == "index":
        ratio = 1.0
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


def bin_rescale_matrix(reg_max: int, gain: float, device=None, offset: float = 0.0) -> torch.Tensor:
    """(reg_max, reg_max) matrix M: a distribution p over bins 0..reg_max-1 becomes p @ M, with bin i moved to the
    position gain * i + offset (clamped to the bins) and split linearly between its two neighbouring bins."""
    pos = (torch.arange(reg_max, dtype=torch.float32, device=device) * gain + offset).clamp(0, reg_max - 1)
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


def block_multiple(teacher_hw: tuple[int, int], student_hw: tuple[int, int]) -> int:
    """m when the teacher grid is exactly m x the student grid in both directions (m >= 2), else 0."""
    m = teacher_hw[0] // student_hw[0]
    return m if m >= 2 and tuple(teacher_hw) == (student_hw[0] * m, student_hw[1] * m) else 0


def block_offsets(m: int, device=None) -> torch.Tensor:
    """(m * m, 2) offsets (dx, dy) of the cells of an m x m block from the block's centre, in block (student) cells,
    row-major like `block_select`'s unfolding."""
    centre = (torch.arange(m, dtype=torch.float32, device=device) + 0.5) / m - 0.5
    dy, dx = torch.meshgrid(centre, centre, indexing="ij")
    return torch.stack([dx.flatten(), dy.flatten()], 1)


@functools.lru_cache(maxsize=64)
def block_moves(m: int, reg_max: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Constants of `block_select`, built once per (m, reg_max, device) instead of at every training step: each block
    position's offset per side, (4, m*m) in student cells (ltrb: l -= dx, t -= dy, r += dx, b += dy), and, for DFL
    heads, the bin matrices that apply it, (m*m, 4, reg_max, reg_max). Read-only: callers must not modify them."""
    offsets = block_offsets(m, device)  # (m*m, 2)
    signs = offsets.new_tensor([[-1, 0], [0, -1], [1, 0], [0, 1]])
    side_offsets = signs @ offsets.T
    if reg_max == 1:
        return side_offsets, None
    matrices = [[bin_rescale_matrix(reg_max, 1 / m, device, float(o)) for o in side_offsets[:, j]] for j in range(m * m)]
    return side_offsets, torch.stack([torch.stack(sides) for sides in matrices])


def _blocks(x: torch.Tensor, m: int) -> torch.Tensor:
    """(N, C, h*m, w*m) -> (N, C, h, w, m*m): each student cell's block of teacher cells, row-major."""
    n, c, hh, ww = x.shape
    h, w = hh // m, ww // m
    return x.reshape(n, c, h, m, w, m).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h, w, m * m)


def block_select(scores: torch.Tensor | None, boxes: torch.Tensor | None, m: int, reg_max: int):
    """One teacher level (scores (N, nc, h*m, w*m), boxes (N, 4 * reg_max, h*m, w*m)) onto the student grid (h, w):
    per student cell, the block cell with the highest class logit, its scores unchanged and its box from the student
    cell's centre (module docstring). DFL boxes come back as log-probabilities, direct distances (reg_max 1) as
    distances. Without scores the block's first cell is taken."""
    ref = scores if scores is not None else boxes
    n, _, hh, ww = ref.shape
    h, w = hh // m, ww // m
    if scores is not None:
        blocks = _blocks(scores, m)
        pick = blocks.amax(1, keepdim=True).argmax(-1, keepdim=True)  # (N, 1, h, w, 1)
        scores = blocks.gather(-1, pick.expand(-1, blocks.shape[1], -1, -1, -1)).squeeze(-1)
    else:
        pick = torch.zeros(n, 1, h, w, 1, dtype=torch.long, device=ref.device)
    if boxes is None:
        return scores, None
    side_offsets, matrices = block_moves(m, reg_max, boxes.device)
    if reg_max == 1:
        dist = _blocks(boxes.float(), m) / m + side_offsets.view(1, 4, 1, 1, -1)
        return scores, dist.gather(-1, pick.expand(-1, 4, -1, -1, -1)).squeeze(-1).clamp_min(0)
    probs = _blocks(boxes.float().reshape(n, 4, reg_max, hh, ww).softmax(2).reshape(n, 4 * reg_max, hh, ww), m)
    probs = probs.reshape(n, 4, reg_max, h, w, m * m)
    chosen = probs.gather(-1, pick.view(n, 1, 1, h, w, 1).expand(-1, 4, reg_max, -1, -1, -1)).squeeze(-1)
    out = torch.zeros_like(chosen)  # (N, 4, reg_max, h, w)
    for j in range(m * m):  # each block position moves each side's bins by its own offset
        out = out + torch.einsum("nsbhw,sbc->nschw", chosen, matrices[j]) * (pick.view(n, 1, 1, h, w) == j)
    return scores, out.clamp_min(PROB_FLOOR).log().reshape(n, 4 * reg_max, h, w)


def to_student_grid(teacher: Taps, feat_sizes: list[tuple[int, int]], feat_pairs: list[int],
                    student_grid: list[tuple[int, int]], head_pairs: list[int], teacher_grid: list[tuple[int, int]],
                    reg_max: int) -> Taps:
    """The teacher's taps on the student's grids: feature tap l from teacher tap feat_pairs[l], resampled to
    feat_sizes[l]; per-anchor outputs of student level l from teacher level head_pairs[l], resampled to
    student_grid[l] (teacher_grid: the teacher's own level grids, how its per-anchor outputs split)."""
    feats = [resample(teacher.feats[k], size) for k, size in zip(feat_pairs, feat_sizes)]
    score_maps = split_levels(teacher.scores, teacher_grid) if teacher.scores is not None else None
    box_maps = split_levels(teacher.boxes, teacher_grid) if teacher.boxes is not None else None
    convert = boxes_to_student_grid if reg_max > 1 else distances_to_student_grid
    scores, boxes = [], []
    for k, hw in zip(head_pairs, student_grid):
        s_map = score_maps[k] if score_maps is not None else None
        b_map = box_maps[k] if box_maps is not None else None
        m = block_multiple(teacher_grid[k], hw)
        if m:
            s_map, b_map = block_select(s_map, b_map, m, reg_max)
        else:
            s_map = resample(s_map, hw) if s_map is not None else None
            b_map = convert(b_map, hw, reg_max) if b_map is not None else None
        scores.append(s_map.flatten(2) if s_map is not None else None)
        boxes.append(b_map.flatten(2) if b_map is not None else None)
    scores = torch.cat(scores, -1) if score_maps is not None else None
    boxes = torch.cat(boxes, -1) if box_maps is not None else None
    return Taps(feats=feats, scores=scores, boxes=boxes, head=teacher.head, head_levels=list(head_pairs))
