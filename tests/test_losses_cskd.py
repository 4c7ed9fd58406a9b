"""CSKD cosine-guided loss against an explicit loop reference (float64), including its gradient."""

import math

import numpy as np
import pytest
import torch

from yolo_kd.losses import CosineGuidedLoss


def _cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / max(math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)), 1e-12)


def ref_cskd(s, t, w_mse=1.0, w_cos=0.5, mask=None):
    """L = w_mse * mean(G (S-T)^2) + w_cos * (mean(1-cos_ch) + mean(1-cos_sp)), loops over n, c, p."""
    s = np.asarray(s, dtype=float).reshape(s.shape[0], s.shape[1], -1)
    t = np.asarray(t, dtype=float).reshape(s.shape)
    n, c, p = s.shape
    m = np.ones((n, p)) if mask is None else np.asarray(mask, dtype=float).reshape(n, p)
    mse = cos_terms_ch = cos_terms_sp = 0.0
    for i in range(n):
        cos_ch = [_cos(s[i, k], t[i, k]) for k in range(c)]
        cos_sp = [_cos(s[i, :, j], t[i, :, j]) for j in range(p)]
        cos_terms_ch += sum(1 - v for v in cos_ch)
        cos_terms_sp += sum(1 - v for v in cos_sp)
        for k in range(c):
            for j in range(p):
                mse += m[i, j] * (1 - cos_ch[k]) * (1 - cos_sp[j]) * (s[i, k, j] - t[i, k, j]) ** 2
    return w_mse * mse / (c * m.sum()) + w_cos * (cos_terms_ch / (n * c) + cos_terms_sp / (n * p))


def pair(shape=(2, 3, 4, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g)
    return t + 0.7 * torch.randn(shape, generator=g), t


def test_value_matches_loop_reference():
    s, t = pair()
    loss = CosineGuidedLoss()
    assert loss(s, t).item() == pytest.approx(ref_cskd(s.numpy(), t.numpy()), rel=1e-5)
    loss = CosineGuidedLoss(w_mse=2.0, w_cos=0.25)
    assert loss(s, t).item() == pytest.approx(ref_cskd(s.numpy(), t.numpy(), 2.0, 0.25), rel=1e-5)


def test_mask_weights_the_mse_term_only():
    s, t = pair()
    loss = CosineGuidedLoss()
    mask = (torch.arange(20).reshape(1, 20) % 3 == 0).float().repeat(2, 1) * torch.tensor([[1.0], [0.5]])
    ref = ref_cskd(s.numpy(), t.numpy(), mask=mask.numpy())
    assert loss(s, t, mask).item() == pytest.approx(ref, rel=1e-5)
    assert loss(s, t, mask.reshape(2, 1, 4, 5)).item() == pytest.approx(ref, rel=1e-5)
    assert loss(s, t, torch.ones(2, 20)).item() == pytest.approx(loss(s, t).item(), rel=1e-6)
    empty = loss(s, t, torch.zeros(2, 20))  # only the cosine terms remain
    assert empty.item() == pytest.approx(CosineGuidedLoss(w_mse=0.0)(s, t).item(), rel=1e-6)
    with pytest.raises(ValueError, match="mask"):
        loss(s, t, torch.ones(2, 19))


def test_prediction_maps_use_anchors_as_positions():
    s, t = pair((2, 3, 20))
    loss = CosineGuidedLoss()
    assert loss(s, t).item() == pytest.approx(ref_cskd(s.numpy(), t.numpy()), rel=1e-5)
    assert loss(s, t).item() == pytest.approx(loss(s.reshape(2, 3, 4, 5), t.reshape(2, 3, 4, 5)).item(), rel=1e-6)


def test_equal_inputs_give_zero_and_shapes_must_match():
    _, t = pair()
    assert CosineGuidedLoss()(t.clone(), t).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="equal"):
        CosineGuidedLoss()(t[:, :2], t)


def test_guidance_is_not_detached_gradient_matches_finite_differences():
    s, t = pair((1, 2, 2, 3), seed=3)
    s64, t64 = s.double().numpy(), t.double().numpy()
    s.requires_grad_(True)
    t.requires_grad_(True)
    CosineGuidedLoss()(s, t).backward()
    assert t.grad is None
    eps = 1e-6
    for idx in [(0, 0, 0, 0), (0, 1, 1, 2), (0, 0, 1, 1)]:
        up, down = s64.copy(), s64.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric = (ref_cskd(up, t64) - ref_cskd(down, t64)) / (2 * eps)
        assert s.grad[idx].item() == pytest.approx(numeric, rel=1e-3, abs=1e-6)


def test_zero_features_half_inputs_and_autocast():
    s = torch.zeros(2, 3, 4, 5, requires_grad=True)
    out = CosineGuidedLoss()(s, torch.zeros(2, 3, 4, 5))
    out.backward()
    assert out.item() == pytest.approx(1.0)  # cosines are 0: w_cos * (1 + 1)
    assert torch.isfinite(s.grad).all()
    s, t = pair()
    ref = CosineGuidedLoss()(s, t)
    half = CosineGuidedLoss()(s.half(), t.half())
    assert half.dtype == torch.float32 and half.item() == pytest.approx(ref.item(), rel=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = CosineGuidedLoss()(s, t)
    assert auto.dtype == torch.float32 and auto.item() == pytest.approx(ref.item(), rel=1e-6)
