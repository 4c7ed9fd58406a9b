"""CWD against a loop over images and channels (float64)."""

import math

import pytest
import torch

from yolo_kd.losses import ChannelWiseDivergence

from reference import softmax


def ref_cwd(s, t, tau):
    n, c = s.shape[:2]
    s, t = s.reshape(n, c, -1).tolist(), t.reshape(n, c, -1).tolist()
    total = 0.0
    for i in range(n):
        for k in range(c):
            p_s = softmax([v / tau for v in s[i][k]])
            p_t = softmax([v / tau for v in t[i][k]])
            total += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    return tau**2 * total / (n * c)


def pair(shape=(2, 3, 4, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 2, torch.randn(shape, generator=g) * 2


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_value_matches_loop_reference(tau):
    s, t = pair()
    assert ChannelWiseDivergence(tau)(s, t).item() == pytest.approx(ref_cwd(s.double(), t.double(), tau), rel=1e-5)


def test_prediction_maps_and_equal_inputs():
    s, t = pair((2, 3, 20))
    assert ChannelWiseDivergence(2.0)(s, t).item() == pytest.approx(ref_cwd(s.double(), t.double(), 2.0), rel=1e-5)
    assert ChannelWiseDivergence()(t.clone(), t).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="equal"):
        ChannelWiseDivergence()(s[:1], t)


def test_gradients_zero_features_half_and_autocast():
    s, t = pair()
    s.requires_grad_(True)
    t.requires_grad_(True)
    ChannelWiseDivergence()(s, t).backward()
    assert t.grad is None and s.grad.abs().sum() > 0
    z = torch.zeros(2, 3, 4, 5, requires_grad=True)
    out = ChannelWiseDivergence()(z, torch.zeros(2, 3, 4, 5))
    out.backward()
    assert out.item() == pytest.approx(0.0, abs=1e-7) and torch.isfinite(z.grad).all()
    s, t = pair()
    ref = ChannelWiseDivergence()(s, t)
    half = ChannelWiseDivergence()(s.half(), t.half())
    assert half.dtype == torch.float32 and half.item() == pytest.approx(ref.item(), rel=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = ChannelWiseDivergence()(s, t)
    assert auto.dtype == torch.float32 and auto.item() == pytest.approx(ref.item(), rel=1e-6)
