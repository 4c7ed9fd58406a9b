"""FGD: Yang et al., "Focal and Global Knowledge Distillation for Detectors", CVPR 2022 (code: yzd-v/FGD).

With F_S' = align(F_S) (1x1 conv only when channel counts differ), temperature T and, for a map F (N, C, H, W),
A_S(F) = H*W * softmax_hw(mean_c |F| / T) and A_C(F) = C * softmax_c(mean_hw |F| / T):

    L_fg   = 1/N sum M_fg * A_S(F_T) * A_C(F_T) * (F_S' - F_T)^2
    L_bg   = 1/N sum M_bg * A_S(F_T) * A_C(F_T) * (F_S' - F_T)^2
    L_at   = 1/N [ sum |A_C(F_S') - A_C(F_T)| + sum |A_S(F_S') - A_S(F_T)| ]
    L_glob = 1/N sum (GC_s(F_S') - GC_t(F_T))^2          (GC: a GcBlock each for student and teacher)
    L      = alpha L_fg + beta L_bg + gamma L_at + lambda L_glob

Masks (`fgd_masks`) follow the authors' code after its fix to [h, w] indexing. Where paper and code differ the code
is followed: the paper's scale mask is 1/(H_r W_r) of the box size, the code's 1/((hmax+1-hmin)(wmax+1-wmin)) counts
the covered cells plus one row and column; the paper writes one relation module R, the code trains one GcBlock for
the student and one for the teacher. Differences from the authors' code:
- Box coordinates are clamped to [0, 1] of the network input before scaling. The authors' slicing already clips the
  far edge to the grid but a negative index would wrap around; for in-range boxes the masks are identical (including
  the "+1" cell on the far side and the area term that counts it even when it lies outside the grid).
- The masks are built for all boxes at once by comparing grid indices with the box bounds instead of slice loops.
- The teacher features are detached here (the authors rely on the teacher running under no_grad). The teacher's
  GcBlock is still a trainable part of this loss, as in the authors' code.
- (S*sqrt(w) - T*sqrt(w))^2 in the code is written as w*(S - T)^2 here: the same value up to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._fp32 import no_autocast


def fgd_masks(boxes: list[torch.Tensor], h: int, w: int,
              device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground and background masks of FGD for an H x W grid.

    `boxes` holds one (n_i, 4) tensor per image, xyxy normalised to [0, 1] of the network input. For each box,
    x1' = x1*W, x2' = x2*W, y1' = y1*H, y2' = y2*H; wmin = floor(x1'), wmax = ceil(x2'), hmin = floor(y1'),
    hmax = ceil(y2'); cells [hmin..hmax] x [wmin..wmax] (inclusive, clipped to the grid) get
    max(current, 1 / ((hmax + 1 - hmin) * (wmax + 1 - wmin))). The background mask is 1 where the foreground is 0,
    divided by the number of such cells of the image. Returns two float32 (N, H, W) tensors on `device` (default:
    the boxes' device).
    """
    if device is None:
        device = boxes[0].device if boxes else torch.device("cpu")
    n = len(boxes)
    lengths = [len(b) for b in boxes]
    m = max(lengths + [1])
    valid = torch.arange(m, device=device)[None, :] < torch.tensor(lengths, device=device).reshape(n, 1)  # (N, M)
    padded = torch.zeros(n, m, 4, device=device)
    if n:
        padded[valid] = torch.cat([b.reshape(-1, 4) for b in boxes]).to(device, torch.float32)
    xyxy = padded.clamp(0.0, 1.0) * torch.tensor([w, h, w, h], device=device, dtype=torch.float32)
    wmin, hmin = xyxy[..., 0].floor(), xyxy[..., 1].floor()
    wmax, hmax = xyxy[..., 2].ceil(), xyxy[..., 3].ceil()
    area = 1.0 / ((hmax + 1 - hmin).clamp(min=1) * (wmax + 1 - wmin).clamp(min=1))  # (N, M)
    rows = torch.arange(h, device=device, dtype=torch.float32)
    cols = torch.arange(w, device=device, dtype=torch.float32)
    in_rows = (rows >= hmin[..., None]) & (rows <= hmax[..., None])  # (N, M, H)
    in_cols = (cols >= wmin[..., None]) & (cols <= wmax[..., None])  # (N, M, W)
    inside = in_rows[..., :, None] & in_cols[..., None, :] & valid[..., None, None]  # (N, M, H, W)
    mask_fg = torch.where(inside, area[..., None, None], torch.zeros((), device=device)).amax(dim=1)
    mask_bg = (mask_fg == 0).float()
    mask_bg = mask_bg / mask_bg.sum(dim=(1, 2), keepdim=True).clamp(min=1)
    return mask_fg, mask_bg


def fgd_attention(feat: torch.Tensor, temp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial (N, H, W) and channel (N, C) attention of FGD: H*W*softmax_hw(mean_c|F|/T), C*softmax_c(mean_hw|F|/T)."""
    n, c, h, w = feat.shape
    value = feat.abs()
    spatial = h * w * F.softmax(value.mean(dim=1).reshape(n, -1) / temp, dim=1).reshape(n, h, w)
    channel = c * F.softmax(value.mean(dim=(2, 3)) / temp, dim=1)
    return spatial, channel


class GcBlock(nn.Module):
    """Global-context block of FGD: R(F) = F + W2(ReLU(LN(W1(sum_j softmax_j(W_k F) F_j)))).

    W_k (conv_mask, C -> 1) is kaiming-normal fan-in initialised, the last conv of W2 starts at zero (so R(F) = F at
    initialisation), as in the authors' reset_parameters.
    """

    def __init__(self, channels: int):
        super().__init__()
        if channels < 2:
            raise ValueError(f"GcBlock needs at least 2 channels, got {channels}")
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=1),
            nn.LayerNorm([channels // 2, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 2, channels, kernel_size=1),
        )
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_add[-1].weight)
        nn.init.zeros_(self.channel_add[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        weights = F.softmax(self.conv_mask(x).reshape(n, -1, 1), dim=1)  # (N, HW, 1)
        context = torch.bmm(x.reshape(n, c, -1), weights).reshape(n, c, 1, 1)
        return x + self.channel_add(context)


class FGDLoss(nn.Module):
    """Focal and global distillation for one feature level; see the module docstring for the formula.

    forward(student_feat (N, Cs, H, W), teacher_feat (N, Ct, H, W), boxes: N tensors (n_i, 4) xyxy in [0, 1])
    returns the weighted total; `self.terms` then holds the detached weighted parts {"fg", "bg", "at", "glob"}.
    """

    def __init__(self, student_channels: int, teacher_channels: int, temp: float = 0.5, alpha: float = 1e-3,
                 beta: float = 5e-4, gamma: float = 1e-3, lam: float = 5e-6):
        super().__init__()
        self.temp, self.alpha, self.beta, self.gamma, self.lam = temp, alpha, beta, gamma, lam
        self.align = (nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
                      if student_channels != teacher_channels else nn.Identity())
        self.gc_student = GcBlock(teacher_channels)
        self.gc_teacher = GcBlock(teacher_channels)
        self.terms: dict[str, torch.Tensor] = {}

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                boxes: list[torch.Tensor]) -> torch.Tensor:
        if student_feat.shape[-2:] != teacher_feat.shape[-2:] or student_feat.shape[0] != teacher_feat.shape[0]:
            raise ValueError(f"FGDLoss needs equal N, H, W, got {tuple(student_feat.shape)} and "
                             f"{tuple(teacher_feat.shape)}")
        n, _, h, w = teacher_feat.shape
        if len(boxes) != n:
            raise ValueError(f"FGDLoss got {len(boxes)} box tensors for a batch of {n} images")
        with no_autocast(student_feat):
            s = self.align(student_feat.float())
            t = teacher_feat.detach().float()
            mask_fg, mask_bg = (m[:, None] for m in fgd_masks(boxes, h, w, t.device))
            sp_s, ch_s = fgd_attention(s, self.temp)
            sp_t, ch_t = fgd_attention(t, self.temp)
            sq = (s - t).pow(2) * sp_t[:, None] * ch_t[:, :, None, None]
            fg = (sq * mask_fg).sum() / n
            bg = (sq * mask_bg).sum() / n
            at = ((ch_s - ch_t).abs().sum() + (sp_s - sp_t).abs().sum()) / n
            glob = (self.gc_student(s) - self.gc_teacher(t)).pow(2).sum() / n
            parts = {"fg": self.alpha * fg, "bg": self.beta * bg, "at": self.gamma * at, "glob": self.lam * glob}
            self.terms = {k: v.detach() for k, v in parts.items()}
            return sum(parts.values())
