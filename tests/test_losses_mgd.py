"""MGD against an explicit reference: same-seed mask, 3x3 convolutions written as loops over kernel offsets."""

import numpy as np
import pytest
import torch

from yolo_kd.losses import MGDLoss

from reference import conv1x1, conv3x3


def ref_mgd(loss, s, t, seed):
    s, t = s.double().numpy(), t.double().numpy()
    if isinstance(loss.align, torch.nn.Conv2d):
        s = conv1x1(s, loss.align)
    n, _, h, w = t.shape
    rand = torch.rand((n, 1, h, w), generator=torch.Generator().manual_seed(seed)).double().numpy()
    keep = np.where(rand > 1 - loss.lambda_mgd, 0.0, 1.0)  # the authors' rule: drop where rand > 1 - lambda
    conv1, _, conv2 = loss.generation
    rebuilt = conv3x3(np.maximum(conv3x3(s * keep, conv1), 0), conv2)
    return loss.alpha * ((rebuilt - t) ** 2).sum() / n


def feats(cs=3, ct=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, cs, 5, 6, generator=g), torch.randn(2, ct, 5, 6, generator=g)


@pytest.mark.parametrize("cs", [3, 4])
def test_value_matches_reference_with_the_same_seed(cs):
    torch.manual_seed(0)
    loss = MGDLoss(cs, 4, alpha=1e-2)
    assert isinstance(loss.align, torch.nn.Conv2d) == (cs != 4)
    s, t = feats(cs)
    out = loss(s, t, generator=torch.Generator().manual_seed(7))
    assert out.item() == pytest.approx(ref_mgd(loss, s, t, 7), rel=1e-5)


def test_mask_drops_lambda_of_positions_and_seed_is_reproducible():
    loss = MGDLoss(4, 4)
    mask = loss.random_mask(4, 64, 64, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert mask.shape == (4, 1, 64, 64) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert (1 - mask.mean().item()) == pytest.approx(0.65, abs=0.02)
    s, t = feats(4)
    first = loss(s, t, generator=torch.Generator().manual_seed(3))
    assert loss(s, t, generator=torch.Generator().manual_seed(3)).item() == first.item()
    assert loss(s, t, generator=torch.Generator().manual_seed(4)).item() != first.item()


def test_gradients_reach_student_align_and_generator_not_teacher():
    loss = MGDLoss(3, 4)
    s, t = feats()
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss(s, t, generator=torch.Generator().manual_seed(0)).backward()
    assert t.grad is None and s.grad.abs().sum() > 0
    for name, p in loss.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_zero_features_half_inputs_and_autocast():
    loss = MGDLoss(3, 4)
    z = torch.zeros(2, 3, 5, 6, requires_grad=True)
    out = loss(z, torch.zeros(2, 4, 5, 6))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()
    s, t = feats()
    ref = loss(s, t, generator=torch.Generator().manual_seed(1))
    half = loss(s.half(), t.half(), generator=torch.Generator().manual_seed(1))
    assert half.dtype == torch.float32 and half.item() == pytest.approx(ref.item(), rel=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = loss(s, t, generator=torch.Generator().manual_seed(1))
    assert auto.dtype == torch.float32 and auto.item() == pytest.approx(ref.item(), rel=1e-6)
    with pytest.raises(ValueError, match="equal N, H, W"):
        loss(s[:, :, :4], t)


def _mgd_method():
    from yolo_kd.methods import build_method
    from yolo_kd.taps import TapShapes

    torch.manual_seed(0)
    return build_method("mgd", {}, TapShapes([4, 8, 8], nc=2, reg_max=16), TapShapes([8, 8, 16], nc=2, reg_max=16))


def _feats(channels, imgsz, gen):
    return [torch.randn(2, c, imgsz // s, imgsz // s, generator=gen) for c, s in zip(channels, (8, 16, 32))]


def test_mgd_method_rescales_the_published_sum_by_feature_positions():
    from yolo_kd.taps import Taps

    method, gen = _mgd_method(), torch.Generator().manual_seed(1)
    s, t = Taps(_feats([4, 8, 8], 256, gen)), Taps(_feats([8, 8, 16], 256, gen))
    torch.manual_seed(5)
    term = method(s, t, None)["mgd"]
    torch.manual_seed(5)
    published = sum(level(fs, ft) for level, fs, ft in zip(method.levels, s.feats, t.feats))
    positions = 32 * 32 + 16 * 16 + 8 * 8
    assert term.item() == pytest.approx(published.item() * method.REF_POSITIONS / positions, rel=1e-6)


def test_mgd_method_term_keeps_its_size_from_64_to_512_px():
    """The published sum grows 64x from 64 to 512 px on stationary features; the method's term stays put."""
    from yolo_kd.taps import Taps

    method, gen = _mgd_method(), torch.Generator().manual_seed(2)
    terms = {}
    for imgsz in (64, 512):
        s, t = Taps(_feats([4, 8, 8], imgsz, gen)), Taps(_feats([8, 8, 16], imgsz, gen))
        terms[imgsz] = method(s, t, None)["mgd"].item()
    assert 0.7 < terms[512] / terms[64] < 1.4, terms
