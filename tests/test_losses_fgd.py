"""FGD: masks cell by cell, every term against an explicit per-box / per-element float64 reference."""

import math

import numpy as np
import pytest
import torch

from yolo_kd.losses import FGDLoss, fgd_masks

from reference import conv1x1

H, W = 4, 6  # non-square on purpose: a transposed [w, h] mask would show up

# Coordinates are dyadic so x*W, y*H are exact in float32 and float64 alike.
BOXES = [
    # image 0: two overlapping boxes (the smaller one wins the overlap)
    [[0.125, 0.25, 0.5, 0.625],     # x 0.75..3.0 -> w 0..3, y 1.0..2.5 -> h 1..3, area 1/(3*4)
     [0.375, 0.5, 0.625, 0.75]],    # x 2.25..3.75 -> w 2..4, y 2.0..3.0 -> h 2..3, area 1/(2*3)
    # image 1: a box on the right/bottom border and one smaller than a cell
    [[0.75, 0.5, 1.0, 1.0],         # x 4.5..6 -> w 4..6, y 2..4 -> h 2..4, area 1/(3*3), clipped to the grid
     [0.0625, 0.0625, 0.09375, 0.125]],  # x 0.375..0.5625 -> w 0..1, y 0.25..0.5 -> h 0..1, area 1/(2*2)
    # image 2: no boxes
    [],
]


def boxes_t(boxes=BOXES):
    return [torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]


def ref_masks(boxes, h, w):
    """The published rule with one slice assignment per box (float32 scaling as the implementation does)."""
    fg = np.zeros((len(boxes), h, w))
    for i, img in enumerate(boxes):
        for x1, y1, x2, y2 in np.clip(np.asarray(img, dtype=np.float32).reshape(-1, 4), 0, 1):
            wmin, wmax = math.floor(x1 * np.float32(w)), math.ceil(x2 * np.float32(w))
            hmin, hmax = math.floor(y1 * np.float32(h)), math.ceil(y2 * np.float32(h))
            area = 1.0 / ((hmax + 1 - hmin) * (wmax + 1 - wmin))
            fg[i, hmin:hmax + 1, wmin:wmax + 1] = np.maximum(fg[i, hmin:hmax + 1, wmin:wmax + 1], area)
    bg = (fg == 0).astype(float)
    for i in range(len(boxes)):
        if bg[i].sum():
            bg[i] /= bg[i].sum()
    return fg, bg


def test_mask_cells_follow_the_rule():
    fg, bg = fgd_masks(boxes_t(), H, W)
    assert fg.shape == bg.shape == (3, H, W) and fg.dtype == torch.float32
    f = fg.numpy()
    # image 0
    assert f[0, 1, 0] == pytest.approx(1 / 12) and f[0, 1, 3] == pytest.approx(1 / 12)
    assert f[0, 2, 2] == pytest.approx(1 / 6) and f[0, 3, 3] == pytest.approx(1 / 6)  # overlap: max
    assert f[0, 3, 4] == pytest.approx(1 / 6) and f[0, 2, 1] == pytest.approx(1 / 12)
    assert f[0, 0, 0] == 0 and f[0, 1, 4] == 0 and f[0, 3, 5] == 0
    assert (f[0] > 0).sum() == 14
    np.testing.assert_allclose(bg[0].numpy(), (f[0] == 0) / 10, rtol=1e-6)
    # image 1: border box clipped, sub-cell box covers 2 x 2 cells
    assert f[1, 3, 5] == pytest.approx(1 / 9) and f[1, 2, 4] == pytest.approx(1 / 9)
    assert f[1, 0, 0] == pytest.approx(1 / 4) and f[1, 1, 1] == pytest.approx(1 / 4)
    assert f[1, 2, 1] == 0 and f[1, 0, 2] == 0 and f[1, 1, 4] == 0
    assert (f[1] > 0).sum() == 8
    np.testing.assert_allclose(bg[1].numpy(), (f[1] == 0) / 16, rtol=1e-6)
    # image 2: all background
    assert f[2].sum() == 0
    np.testing.assert_allclose(bg[2].numpy(), np.full((H, W), 1 / 24), rtol=1e-6)
    ref_fg, ref_bg = ref_masks(BOXES, H, W)
    np.testing.assert_allclose(f, ref_fg, rtol=1e-6)
    np.testing.assert_allclose(bg.numpy(), ref_bg, rtol=1e-6)


def test_masks_match_loop_on_random_boxes_and_clamp_out_of_range():
    rng = np.random.default_rng(0)
    boxes = []
    for n in (0, 1, 7, 20):
        xy = rng.uniform(-0.1, 1.1, (n, 2, 2))
        boxes.append(np.concatenate([xy.min(1), xy.max(1)], axis=1).astype(np.float32))
    fg, bg = fgd_masks([torch.from_numpy(b) for b in boxes], 5, 7)
    ref_fg, ref_bg = ref_masks(boxes, 5, 7)
    np.testing.assert_allclose(fg.numpy(), ref_fg, rtol=1e-6)
    np.testing.assert_allclose(bg.numpy(), ref_bg, rtol=1e-6)
    out = fgd_masks([torch.tensor([[-0.25, -0.25, 0.25, 0.25]])], H, W)
    inside = fgd_masks([torch.tensor([[0.0, 0.0, 0.25, 0.25]])], H, W)
    assert torch.equal(out[0], inside[0]) and torch.equal(out[1], inside[1])


def test_full_image_box_leaves_no_background():
    fg, bg = fgd_masks([torch.tensor([[0.0, 0.0, 1.0, 1.0]])], H, W)
    assert torch.allclose(fg, torch.full_like(fg, 1 / ((H + 1) * (W + 1))))  # the published area counts H+1, W+1
    assert bg.sum() == 0


def _np(p):
    return p.detach().double().numpy()


def _attention(x, temp):
    """Spatial and channel attention of one image x (C, H, W), element by element."""
    c, h, w = x.shape
    fea = np.abs(x).mean(axis=0) / temp
    sp = h * w * np.exp(fea - fea.max()) / np.exp(fea - fea.max()).sum()
    ch_map = np.abs(x).mean(axis=(1, 2)) / temp
    ch = c * np.exp(ch_map - ch_map.max()) / np.exp(ch_map - ch_map.max()).sum()
    return sp, ch


def _gcblock(x, gc):
    c = x.shape[0]
    logits = conv1x1(x[None], gc.conv_mask).reshape(-1)
    soft = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    context = (x.reshape(c, -1) * soft[None]).sum(axis=1)  # (C,)
    conv1, ln, _, conv2 = gc.channel_add
    y = _np(conv1.weight)[:, :, 0, 0] @ context + _np(conv1.bias)
    y = (y - y.mean()) / np.sqrt(y.var() + ln.eps) * _np(ln.weight)[:, 0, 0] + _np(ln.bias)[:, 0, 0]
    y = _np(conv2.weight)[:, :, 0, 0] @ np.maximum(y, 0) + _np(conv2.bias)
    return x + y[:, None, None]


def ref_fgd(loss, s, t, boxes):
    """Every FGD term with explicit loops over images, channels and cells (float64)."""
    s, t = _np(s), _np(t)
    if isinstance(loss.align, torch.nn.Conv2d):
        s = conv1x1(s, loss.align)
    n, c, h, w = t.shape
    fg_m, bg_m = ref_masks(boxes, h, w)
    fg = bg = at = glob = 0.0
    for i in range(n):
        sp_t, ch_t = _attention(t[i], loss.temp)
        sp_s, ch_s = _attention(s[i], loss.temp)
        for k in range(c):
            for y in range(h):
                for x in range(w):
                    d = sp_t[y, x] * ch_t[k] * (s[i, k, y, x] - t[i, k, y, x]) ** 2
                    fg += fg_m[i, y, x] * d
                    bg += bg_m[i, y, x] * d
        at += np.abs(ch_s - ch_t).sum() + np.abs(sp_s - sp_t).sum()
        glob += ((_gcblock(s[i], loss.gc_student) - _gcblock(t[i], loss.gc_teacher)) ** 2).sum()
    return {"fg": loss.alpha * fg / n, "bg": loss.beta * bg / n, "at": loss.gamma * at / n,
            "glob": loss.lam * glob / n}


def randomise_gcblocks(loss, seed=1):
    """Give the zero-initialised last convs (and everything else) non-trivial values so `glob` is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(loss.gc_student.parameters()) + list(loss.gc_teacher.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def feats(cs=3, ct=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, cs, H, W, generator=g), torch.randn(3, ct, H, W, generator=g)


@pytest.mark.parametrize("cs", [3, 4])
def test_terms_match_reference_and_sum_to_total(cs):
    torch.manual_seed(0)
    loss = FGDLoss(cs, 4, alpha=2e-3, beta=1e-3, gamma=3e-3, lam=4e-2)
    assert isinstance(loss.align, torch.nn.Conv2d) == (cs != 4)
    randomise_gcblocks(loss)
    s, t = feats(cs)
    total = loss(s, t, boxes_t())
    ref = ref_fgd(loss, s, t, BOXES)
    assert set(loss.terms) == {"fg", "bg", "at", "glob"}
    for key, value in ref.items():
        assert loss.terms[key].item() == pytest.approx(value, rel=1e-4), key
        assert loss.terms[key].dim() == 0 and not loss.terms[key].requires_grad
    assert total.item() == pytest.approx(sum(v.item() for v in loss.terms.values()), rel=1e-6)
    assert total.item() == pytest.approx(sum(ref.values()), rel=1e-4)


def test_gcblock_init_is_identity_and_equal_inputs_give_zero():
    loss = FGDLoss(4, 4)
    for gc in (loss.gc_student, loss.gc_teacher):
        assert torch.all(gc.channel_add[-1].weight == 0) and torch.all(gc.channel_add[-1].bias == 0)
        assert torch.all(gc.conv_mask.bias == 0)
        std = gc.conv_mask.weight.std().item()  # kaiming normal fan_in, relu gain: std = sqrt(2 / C)
        assert 0.2 < std < 2.0
    _, t = feats()
    assert loss(t.clone(), t, boxes_t()).item() == 0.0


def test_gradients_reach_student_and_loss_parameters_not_teacher():
    loss = FGDLoss(3, 8)  # 8 channels: a LayerNorm over C/2 = 2 values has a zero gradient
    s, t = feats(ct=8)
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss(s, t, boxes_t()).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert loss.align.weight.grad.abs().sum() > 0
    for gc in (loss.gc_student, loss.gc_teacher):  # at init only the zero-initialised last conv sees a gradient
        assert gc.channel_add[-1].weight.grad.abs().sum() > 0
    loss.zero_grad()
    randomise_gcblocks(loss)
    loss(s, t, boxes_t()).backward()
    assert t.grad is None
    for name, p in loss.named_parameters():
        assert p.grad is not None, name
        # softmax over positions ignores a constant shift, so the context conv's bias gradient is exactly zero
        assert name.endswith("conv_mask.bias") or p.grad.abs().sum() > 0, name


def test_zero_features_empty_images_half_inputs_and_autocast():
    loss = FGDLoss(3, 4)
    s = torch.zeros(3, 3, H, W, requires_grad=True)
    out = loss(s, torch.zeros(3, 4, H, W), [torch.zeros(0, 4)] * 3)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(s.grad).all()
    assert all(torch.isfinite(v) for v in loss.terms.values()) and loss.terms["fg"] == 0
    s, t = feats()
    ref = loss(s, t, boxes_t())
    half = loss(s.half(), t.half(), boxes_t())
    assert half.dtype == torch.float32 and torch.isfinite(half)
    assert half.item() == pytest.approx(ref.item(), rel=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = loss(s, t, boxes_t())
    assert auto.dtype == torch.float32 and auto.item() == pytest.approx(ref.item(), rel=1e-6)


def test_rejects_mismatched_inputs():
    loss = FGDLoss(3, 4)
    s, t = feats()
    with pytest.raises(ValueError, match="box tensors"):
        loss(s, t, boxes_t()[:2])
    with pytest.raises(ValueError, match="equal N, H, W"):
        loss(s[:, :, :3], t, boxes_t())
