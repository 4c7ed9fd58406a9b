"""Issue 23: box KD on decoded boxes (GIoU) and quality-aware class KD, against hand-computed values."""

import math

import pytest
import torch

from yolo_kd.losses import DecodedBoxKD, QualityClassKD, decode_distances, giou


def boxes(*xyxy):
    """(1, 4, A) boxes from A xyxy tuples."""
    return torch.tensor(xyxy, dtype=torch.float32).T.unsqueeze(0)


def test_giou_of_two_overlapping_boxes_by_hand():
    # (0,0,2,2) and (1,1,3,3): intersection 1, union 7, enclosing box 9 -> 1/7 - 2/9 = -5/63
    g = giou(boxes((0, 0, 2, 2)), boxes((1, 1, 3, 3)))
    assert g.item() == pytest.approx(-5 / 63, abs=1e-6)
    assert giou(boxes((0, 0, 2, 2)), boxes((0, 0, 2, 2))).item() == pytest.approx(1.0, abs=1e-6)
    # disjoint (0,0,1,1) and (2,0,3,1): IoU 0, union 2, enclosing 3 -> -1/3
    assert giou(boxes((0, 0, 1, 1)), boxes((2, 0, 3, 1))).item() == pytest.approx(-1 / 3, abs=1e-6)


def test_dfl_decodes_by_expectation_over_bins_from_logits_or_log_probabilities():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])  # expectation 0.2 + 0.6 + 1.2 = 2.0
    side = probs.log()
    box = torch.stack([side, side.roll(1), side + 5.0, side.flip(0)]).reshape(1, 16, 1)  # +5: logits, not log-probs
    d = decode_distances(box, reg_max=4).flatten().tolist()
    expected = [2.0, 0.4 * 0 + 0.1 * 1 + 0.2 * 2 + 0.3 * 3, 2.0, 0.4 * 0 + 0.3 * 1 + 0.2 * 2 + 0.1 * 3]
    assert d == pytest.approx(expected, abs=1e-6)
    direct = torch.tensor([[[1.5], [0.5], [2.0], [3.0]]])
    assert decode_distances(direct, reg_max=1).flatten().tolist() == [1.5, 0.5, 2.0, 3.0]


def test_box_kd_between_a_dfl_teacher_and_a_reg_max_1_student_by_hand():
    """Anchor 0: student ltrb equals the teacher's expected distances (loss 0). Anchor 1: the student's box relative to
    its anchor is (-1,-1,1,1), the teacher's (0,0,2,2) (the two boxes of the GIoU test shifted): 1 - GIoU = 68/63."""
    reg = 4
    one_hot = lambda k: torch.full((reg,), -30.0).index_fill(0, torch.tensor(k), 30.0)  # noqa: E731
    teacher = torch.zeros(1, 4 * reg, 2)
    for side, k in enumerate([1, 2, 3, 0]):  # anchor 0 expects (1, 2, 3, 0)
        teacher[0, side * reg:(side + 1) * reg, 0] = one_hot(k)
    for side, k in enumerate([0, 0, 2, 2]):  # anchor 1 expects (0, 0, 2, 2)
        teacher[0, side * reg:(side + 1) * reg, 1] = one_hot(k)
    student = torch.tensor([[[1.0, 1.0], [2.0, 1.0], [3.0, 1.0], [0.0, 1.0]]], requires_grad=True)
    weight = torch.tensor([[1.0, 3.0]])
    loss = DecodedBoxKD(student_reg_max=1, teacher_reg_max=reg)(student, teacher, weight)
    assert loss.item() == pytest.approx(3 * (68 / 63) / 4, abs=1e-5)
    loss.backward()
    assert student.grad[0, :, 1].abs().sum() > 0
    with pytest.raises(ValueError, match="16 channels"):
        DecodedBoxKD(student_reg_max=1, teacher_reg_max=reg)(student, teacher[:, :4], weight)


def test_quality_factor_on_two_scores_by_hand():
    """Anchor 0: s = 0, t = log 3 -> p_s = 0.5, p_t = 0.75, BCE = ln 2, factor 0.25^beta; anchor 1: s = t (factor 0).
    Both anchors have teacher confidence 0.75, so the weighted mean halves anchor 0's value."""
    t = torch.tensor([[[math.log(3), math.log(3)]]])
    s = torch.tensor([[[0.0, math.log(3)]]], requires_grad=True)
    assert QualityClassKD(beta=2.0)(s, t).item() == pytest.approx(math.log(2) / 16 / 2, rel=1e-5)
    loss = QualityClassKD(beta=1.0)(s, t)
    assert loss.item() == pytest.approx(math.log(2) / 4 / 2, rel=1e-5)
    loss.backward()
    assert s.grad[0, 0, 0] < 0 and s.grad[0, 0, 1].abs() < 1e-7  # pushed up towards the teacher; no pull at s == t
