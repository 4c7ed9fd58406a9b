"""Head prediction distillation: class-score BCE and LD on DFL bins, against loops over anchors (float64)."""

import math

import pytest
import torch

from yolo_kd.errors import KDConfigError
from yolo_kd.losses import ClassScoreKD, DFLDistillLoss

from reference import sigmoid, softmax


def ref_cls(s, t, temp, conf_weighted):
    n, nc, a = s.shape
    s, t = s.tolist(), t.tolist()
    num = den = 0.0
    for i in range(n):
        for j in range(a):
            bce = 0.0
            for k in range(nc):
                p, q = sigmoid(s[i][k][j] / temp), sigmoid(t[i][k][j] / temp)
                bce -= q * math.log(p) + (1 - q) * math.log(1 - p)
            w = max(sigmoid(t[i][k][j]) for k in range(nc)) if conf_weighted else 1.0
            num += w * bce
            den += w
    return temp**2 * num / den


def ref_ld(s, t, reg_max, temp, weight=None):
    n, _, a = s.shape
    s, t = s.tolist(), t.tolist()
    num = den = 0.0
    for i in range(n):
        for j in range(a):
            kl = 0.0
            for side in range(4):
                bins = range(side * reg_max, (side + 1) * reg_max)
                p_s = softmax([s[i][b][j] / temp for b in bins])
                p_t = softmax([t[i][b][j] / temp for b in bins])
                kl += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s)) / 4
            w = 1.0 if weight is None else float(weight[i][j])
            num += w * kl
            den += w
    return temp**2 * num / den


def logits(shape, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale, torch.randn(shape, generator=g) * scale


@pytest.mark.parametrize("temp,conf", [(1.0, True), (2.0, True), (3.0, False)])
def test_class_score_matches_reference(temp, conf):
    s, t = logits((2, 3, 7))
    out = ClassScoreKD(temp, conf)(s, t)
    assert out.item() == pytest.approx(ref_cls(s.double(), t.double(), temp, conf), rel=1e-5)


def test_class_score_scale_ignores_anchor_count_and_equal_inputs_give_teacher_entropy():
    s, t = logits((2, 3, 7))
    loss = ClassScoreKD(2.0)
    assert loss(s.repeat(1, 1, 3), t.repeat(1, 1, 3)).item() == pytest.approx(loss(s, t).item(), rel=1e-5)
    q = torch.sigmoid(t.double() / 2.0)
    entropy = -(q * q.log() + (1 - q) * (1 - q).log()).sum(1)  # (N, A)
    w = torch.sigmoid(t.double()).amax(1)
    assert loss(t.clone(), t).item() == pytest.approx((4 * (entropy * w).sum() / w.sum()).item(), rel=1e-5)


@pytest.mark.parametrize("temp", [1.0, 10.0])
def test_ld_matches_reference(temp):
    s, t = logits((2, 4 * 5, 6), scale=3.0)
    assert DFLDistillLoss(5, temp)(s, t).item() == pytest.approx(ref_ld(s.double(), t.double(), 5, temp), rel=1e-5)
    weight = torch.tensor([[0.0, 0.5, 1.0, 0.2, 0.0, 0.9], [0.3, 0.0, 0.0, 1.0, 0.7, 0.1]])
    out = DFLDistillLoss(5, temp)(s, t, weight)
    assert out.item() == pytest.approx(ref_ld(s.double(), t.double(), 5, temp, weight.tolist()), rel=1e-5)


def test_ld_equal_inputs_scale_and_reg_max_one():
    s, t = logits((2, 64, 9))
    loss = DFLDistillLoss()
    assert loss(t.clone(), t).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(s.repeat(1, 1, 2), t.repeat(1, 1, 2)).item() == pytest.approx(loss(s, t).item(), rel=1e-5)
    assert loss(s, t, torch.zeros(2, 9)).item() == 0.0  # no weighted anchor: nothing to distil
    with pytest.raises(ValueError, match="64 box channels"):
        loss(s[:, :60], t[:, :60])
    with pytest.raises(KDConfigError, match="YOLO26 heads have reg_max=1"):
        DFLDistillLoss(reg_max=1)
    assert issubclass(KDConfigError, ValueError)


@pytest.mark.parametrize("make", [lambda: ClassScoreKD(2.0), lambda: DFLDistillLoss(4, 10.0)])
def test_gradients_zero_inputs_half_and_autocast(make):
    loss = make()
    s, t = logits((2, 16, 5))
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss(s, t).backward()
    assert t.grad is None and s.grad.abs().sum() > 0
    z = torch.zeros(2, 16, 5, requires_grad=True)
    out = loss(z, torch.zeros(2, 16, 5))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()
    s, t = logits((2, 16, 5))
    ref = loss(s, t)
    half = loss(s.half(), t.half())
    assert half.dtype == torch.float32 and half.item() == pytest.approx(ref.item(), rel=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = loss(s, t)
    assert auto.dtype == torch.float32 and auto.item() == pytest.approx(ref.item(), rel=1e-6)
