"""Issue 32: dense selection on the pool (`unlabeled_topk`, Dense Teacher's dense pseudo-labels): the region selection
takes the batch's top fraction of locations by teacher score; the class term matches the authors' QFLv2 written on
probabilities, pulls foreground towards the teacher and background towards zero; the box term counts foreground
locations only and is zero on the teacher's own boxes; in the engine `pool_dense` reads the pool rows only, leaves the
labeled detection terms alone, and trains in a real run whose pool comes from data.yaml (`unlabeled:`)."""

import copy
import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_TRAIN, read_results
from ultralytics import YOLO

import yolo_kd
from yolo_kd import KDConfigError
from yolo_kd.distiller import POOL_DENSE_TERM, POOL_DETECTION_TERM
from yolo_kd.losses.dense import dense_box_loss, dense_class_loss, top_fraction
from yolo_kd.recipe import Recipe

from test_unlabeled import distiller, labeled_batch, student_with_args


def published_qflv2(student_logits, teacher_logits, mask, beta=2.0):
    """The authors' QFLv2 (reduction sum) on probabilities, for (N, nc, A) logits and an (N, A) foreground mask."""
    pred = student_logits.sigmoid().permute(0, 2, 1).reshape(-1, student_logits.shape[1])
    teacher = teacher_logits.sigmoid().permute(0, 2, 1).reshape(-1, teacher_logits.shape[1])
    pos = mask.reshape(-1)
    loss = F.binary_cross_entropy(pred, torch.zeros_like(pred), reduction="none") * pred.pow(beta)
    gap = teacher[pos] - pred[pos]
    loss[pos] = F.binary_cross_entropy(pred[pos], teacher[pos], reduction="none") * gap.pow(beta)
    return loss.sum()


def test_the_selection_is_the_batchs_top_fraction_by_teacher_score():
    logits = torch.full((2, 3, 10), -6.0)
    logits[1, 2, 7], logits[1, 0, 2], logits[0, 1, 4] = 3.0, 2.0, 1.0  # the three best locations, two in image 1
    mask, foreground = top_fraction(logits, 0.1)  # int(0.1 * 2 * 10) = 2 locations of the batch, not 1 per image
    assert mask.nonzero().tolist() == [[1, 2], [1, 7]]
    assert foreground == pytest.approx(float(torch.sigmoid(torch.tensor(3.0)) + torch.sigmoid(torch.tensor(2.0))))
    mask, _ = top_fraction(logits, 0.01)  # int(0.2) = 0: still the single best location
    assert mask.nonzero().tolist() == [[1, 7]]


def test_the_class_term_is_the_published_qflv2_over_the_foreground_score():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 40) * 2, torch.randn(2, 3, 40) * 2
    mask, foreground = top_fraction(teacher, 0.1)
    ours = dense_class_loss(student, teacher, mask, foreground)
    assert ours == pytest.approx(float(published_qflv2(student, teacher, mask) / foreground), rel=1e-5)


def test_the_class_term_pulls_foreground_to_the_teacher_and_background_to_zero():
    teacher = torch.full((1, 2, 6), -4.0)
    teacher[0, 0, 1] = 2.0  # one confident teacher location: the foreground at fraction 1/6
    mask, foreground = top_fraction(teacher, 1 / 6)
    student = torch.zeros(1, 2, 6, requires_grad=True)  # 0.5 everywhere
    dense_class_loss(student, teacher, mask, foreground).backward()
    grad = student.grad[0]
    assert grad[0, 1] < 0  # foreground, the teacher's class: up towards sigmoid(2) = 0.88
    assert grad[1, 1] > 0  # foreground, a class the teacher scores 0.018: down towards it
    assert (grad[:, [0, 2, 3, 4, 5]] > 0).all()  # background, every class: down towards zero
    at_teacher = teacher.clone().requires_grad_(True)
    value = dense_class_loss(at_teacher, teacher, mask, foreground)  # foreground at the teacher: no pull left there
    value.backward()
    assert at_teacher.grad[0, 0, 1].abs() < 1e-7 and at_teacher.grad[0, 1, 1].abs() < 1e-7


def test_the_box_term_counts_foreground_locations_only():
    torch.manual_seed(1)
    teacher = torch.randn(1, 64, 8)  # DFL logits, reg_max 16
    mask = torch.zeros(1, 8, dtype=torch.bool)
    mask[0, 3] = True
    assert dense_box_loss(teacher.clone(), teacher, mask) == pytest.approx(0.0, abs=1e-6)
    background_moved, foreground_moved = teacher.clone(), teacher.clone()
    background_moved[0, :16, 5] += torch.linspace(-4, 4, 16)  # another left side at a background location
    foreground_moved[0, :16, 3] += torch.linspace(-4, 4, 16)
    assert dense_box_loss(background_moved, teacher, mask) == pytest.approx(0.0, abs=1e-6)
    assert dense_box_loss(foreground_moved, teacher, mask) > 0.01


def test_the_box_term_compares_decoded_boxes_across_encodings():
    """A DFL student against a reg_max 1 teacher (YOLO26) whose distances are the student's expected bins: zero."""
    torch.manual_seed(2)
    student = torch.randn(2, 64, 5)
    expected = (student.reshape(2, 4, 16, 5).softmax(2) * torch.arange(16.0).view(1, 1, 16, 1)).sum(2)
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert dense_box_loss(student, expected, mask) == pytest.approx(0.0, abs=1e-5)
    assert dense_box_loss(student, expected * 1.5, mask) > 0.01


def test_pool_dense_reads_the_pool_rows_only(tiny_teacher):
    """`pool_dense` is positive with pool images, leaves the labeled detection terms bit-identical, does not change
    when the labeled images change, and sends a gradient into the student."""
    student = student_with_args()
    plain, _ = distiller(tiny_teacher, student, unlabeled=["pool"]).loss(labeled_batch(pool_images=2))
    d = distiller(tiny_teacher, student, unlabeled=["pool"], unlabeled_topk=0.05)
    loss, items = d.loss(labeled_batch(pool_images=2))
    assert torch.equal(loss[:3], plain[:3]) and items[POOL_DENSE_TERM] > 0
    other = labeled_batch(pool_images=2)
    other["img"] = torch.flip(other["img"], dims=[-1])  # other labeled pixels, the same pool images
    _, other_items = distiller(tiny_teacher, student, unlabeled=["pool"], unlabeled_topk=0.05).loss(other)
    assert not torch.isclose(other_items["pred_cls"], items["pred_cls"])  # the labeled rows did change
    assert torch.allclose(other_items[POOL_DENSE_TERM], items[POOL_DENSE_TERM], rtol=1e-5)
    _, no_pool = distiller(tiny_teacher, student, unlabeled=["pool"], unlabeled_topk=0.05).loss(labeled_batch())
    assert no_pool[POOL_DENSE_TERM] == 0
    grads = []
    for topk in (None, 0.05):  # the KD part's gradient into the student changes with the dense term
        d = distiller(tiny_teacher, student, unlabeled=["pool"], unlabeled_topk=topk)
        d.loss(labeled_batch(pool_images=2))[0][3].backward()
        grads.append(torch.cat([p.grad.flatten() for p in d.student.parameters() if p.grad is not None]))
    assert not torch.allclose(grads[0], grads[1])


def test_the_pool_terms_train_when_data_yaml_holds_the_pool(tiny_data, tiny_teacher, tiny_pool, tmp_path):
    """The pool named by data.yaml (`unlabeled:`), not by the option: `unlabeled_boxes` and `unlabeled_topk` get their
    columns and train."""
    root = tmp_path / "set"
    shutil.copytree(tiny_data.parent, root)
    shutil.copytree(tiny_pool, root / "unlabeled")
    text = tiny_data.read_text().replace(str(tiny_data.parent), str(root))
    (root / "data.yaml").write_text(text + "unlabeled: unlabeled\n")
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher), unlabeled_boxes=0.01, unlabeled_topk=0.02)
    model.train(data=str(root / "data.yaml"), epochs=1, project=str(tmp_path / "runs"), name="run", **TINY_TRAIN)
    (row,) = read_results(tmp_path / "runs" / "run")
    assert float(row[f"train/{POOL_DETECTION_TERM}"]) > 0 and float(row[f"train/{POOL_DENSE_TERM}"]) > 0


@pytest.mark.parametrize("value", [0, 1.0, 2, "1%", True])
def test_a_bad_fraction_is_refused_in_one_line(value):
    with pytest.raises(KDConfigError, match="unlabeled_topk.*fraction between 0 and 1") as err:
        Recipe.from_kwargs(teacher="t.pt", unlabeled_topk=value)
    assert "\n" not in str(err.value)


def test_the_fraction_is_kept_in_the_recipe_for_resume():
    recipe = Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], unlabeled_topk=0.02)
    assert Recipe.from_dict(copy.deepcopy(recipe.to_dict())).unlabeled_topk == 0.02
    assert Recipe.from_kwargs(teacher="t.pt").unlabeled_topk is None
