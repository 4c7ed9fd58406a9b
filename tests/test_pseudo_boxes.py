"""Issue 32: online pseudo-boxes on the pool (`unlabeled_boxes`): the teacher target decoded into boxes equals
Ultralytics' own decoding and NMS of the teacher's output; a hand-made box comes back at its pixels; the student's
detection loss on them joins the KD terms as `pool_det`, reads the boxes (a threshold above every score trains the pool
as background), leaves the labeled detection terms alone, and trains in a real run; `unlabeled_weight` multiplies the
pool's own terms and nothing else; `unlabeled_boxes: match` keeps as many of the teacher's best boxes per pool image
as the labeled batch holds per image."""

import copy

import pytest
import torch
from conftest import TINY_TRAIN, read_results
from ultralytics import YOLO
from ultralytics.utils.nms import non_max_suppression

import yolo_kd
from yolo_kd import KDConfigError
from yolo_kd.distiller import POOL_DENSE_TERM, POOL_DETECTION_TERM
from yolo_kd.pseudo_boxes import NMS_IOU, decode, matched_count, pseudo_batch, top_boxes
from yolo_kd.recipe import DEFAULT_UNLABELED_BOXES, Recipe, TeacherSpec
from yolo_kd.taps import Taps, head_taps
from yolo_kd.teacher_target import TeacherView, encode
from yolo_kd.teachers import load_teacher

from test_unlabeled import distiller, labeled_batch, student_with_args


def test_a_known_target_decodes_to_its_box():
    """One anchor of a 64 px image's stride-8 level (cell (x 3, y 2): centre (28, 20) px) is class 1 at score 0.9, its
    DFL sides sit on bins l=2, t=1, r=3, b=4 (cells): the box is (12, 12, 52, 52) px, normalised xywh
    (0.5, 0.5, 0.625, 0.625); every other anchor scores 0.1 and is dropped at conf 0.5."""
    grid, reg_max = [(8, 8), (4, 4), (2, 2)], 16
    anchors = sum(h * w for h, w in grid)
    a = 2 * 8 + 3
    scores = torch.full((1, 2, anchors), -2.1972)  # sigmoid: 0.1
    scores[0, 1, a] = 2.1972  # sigmoid: 0.9
    logp = torch.full((1, 4, reg_max, anchors), -60.0)
    logp[:, :, 0] = 0.0  # every other anchor: a zero-size box
    for side, b in enumerate((2, 1, 3, 4)):
        logp[0, side, :, a] = -60.0
        logp[0, side, b, a] = 0.0
    target = Taps(feats=[], scores=scores, boxes=logp.reshape(1, 4 * reg_max, anchors), grid=grid)
    (boxes,) = decode(target, (64, 64), conf=0.5)
    assert boxes.tolist() == [pytest.approx([12.0, 12.0, 52.0, 52.0, 0.9, 1.0], abs=1e-3)]
    batch = pseudo_batch(target, torch.zeros(1, 3, 64, 64), conf=0.5)
    assert batch["bboxes"].tolist() == [pytest.approx([0.5, 0.5, 0.625, 0.625], abs=1e-5)]
    assert batch["cls"].tolist() == [[1.0]] and batch["batch_idx"].tolist() == [0.0]


def test_decoded_target_equals_ultralytics_predictions(tiny_teacher, tiny_data):
    """The teacher's output on two real images, as the distiller encodes it, decodes to the boxes, scores and classes
    Ultralytics' own NMS keeps from the same output (same anchors, strides, threshold and IoU)."""
    import cv2

    images = sorted((tiny_data.parent / "images" / "train").iterdir())[:2]
    img = torch.stack([torch.from_numpy(cv2.imread(str(p))[..., ::-1].copy()).permute(2, 0, 1) for p in images])
    img = img.float() / 255
    teacher = load_teacher("teacher", TeacherSpec(model=str(tiny_teacher)))
    with torch.no_grad():
        out = teacher(img)
    raw = head_taps(out)
    target = encode(raw, TeacherView(None, [0, 1, 2], [0, 1, 2], 16), raw)
    conf = float(torch.sigmoid(raw.scores).amax(1).flatten().sort(descending=True).values[30])  # ~30 candidates
    ours = decode(target, (64, 64), conf)
    theirs = non_max_suppression(out, conf_thres=conf, iou_thres=NMS_IOU)
    assert sum(len(d) for d in theirs) > 2
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-3)


def test_pool_detection_loss_reads_the_teachers_boxes(tiny_teacher):
    """With `unlabeled_boxes`, `pool_det` is the student's detection loss on the pool images' pseudo-boxes: positive,
    different when the threshold keeps boxes or none (background), with a gradient into the student; the labeled
    detection terms are bit-identical to a step without it."""
    student = student_with_args()
    plain, plain_items = distiller(tiny_teacher, student, unlabeled=["pool"], unlabeled_boxes=False).loss(
        labeled_batch(pool_images=2))
    assert POOL_DETECTION_TERM not in plain_items
    with torch.no_grad():  # a threshold under the teacher's best score on these pool images keeps boxes
        best = torch.sigmoid(head_taps(load_teacher("t", TeacherSpec(model=str(tiny_teacher)))(
            labeled_batch(pool_images=2)["unlabeled_img"])).scores).max()
    low = float(best) / 2
    values = {}
    for conf in (low, 0.99):
        d = distiller(tiny_teacher, student, unlabeled=["pool"], unlabeled_boxes=conf)
        loss, items = d.loss(labeled_batch(pool_images=2))
        values[conf] = items[POOL_DETECTION_TERM]
        assert torch.equal(loss[:3], plain[:3])
    assert values[low] > 0 and values[0.99] > 0 and not torch.isclose(values[low], values[0.99])
    grads = []
    for boxes in (False, low):  # the KD part's gradient into the student changes with the pool's boxes
        d = distiller(tiny_teacher, student, unlabeled=["pool"], unlabeled_boxes=boxes)
        d.loss(labeled_batch(pool_images=2))[0][3].backward()
        grads.append(torch.cat([p.grad.flatten() for p in d.student.parameters() if p.grad is not None]))
    assert not torch.allclose(grads[0], grads[1])


def test_top_boxes_keeps_the_best_across_images_each_in_its_image():
    first = torch.tensor([[0, 0, 4, 4, 0.9, 0], [1, 1, 5, 5, 0.2, 1]], dtype=torch.float32)
    second = torch.tensor([[2, 2, 6, 6, 0.5, 0], [3, 3, 7, 7, 0.7, 2], [4, 4, 8, 8, 0.1, 1]], dtype=torch.float32)
    kept = top_boxes([first, second], 3)
    assert kept[0].tolist() == first[:1].tolist() and kept[1].tolist() == second[:2].tolist()
    assert [len(d) for d in top_boxes([first, second], 0)] == [0, 0]
    assert [len(d) for d in top_boxes([first, second], 9)] == [2, 3]


def test_match_takes_the_best_anchors_of_a_known_target():
    """No threshold: of three boxes scored 0.9, 0.3 and 0.05 on two images, a count of 2 keeps the 0.9 and 0.3 ones,
    in their images (`pseudo_batch` with a count); the count is the labeled boxes per image times the pool images."""
    grid, reg_max = [(8, 8), (4, 4), (2, 2)], 16
    anchors = sum(h * w for h, w in grid)
    scores = torch.full((2, 2, anchors), -30.0)
    for image, anchor, logit in ((0, 2 * 8 + 3, 2.1972), (1, 5 * 8 + 5, -0.8473), (1, 1, -2.9444)):  # 0.9, 0.3, 0.05
        scores[image, 1, anchor] = logit
    logp = torch.full((2, 4, reg_max, anchors), -60.0)
    logp[:, :, 2] = 0.0  # every box: 2 cells on each side of its anchor
    target = Taps(feats=[], scores=scores, boxes=logp.reshape(2, 4 * reg_max, anchors), grid=grid)
    batch = pseudo_batch(target, torch.zeros(2, 3, 64, 64), None, count=2)
    assert batch["batch_idx"].tolist() == [0.0, 1.0] and batch["cls"].tolist() == [[1.0], [1.0]]
    assert batch["bboxes"][:, :2].tolist() == [pytest.approx([28 / 64, 20 / 64]), pytest.approx([44 / 64, 44 / 64])]
    assert len(pseudo_batch(target, torch.zeros(2, 3, 64, 64), None, count=3)["cls"]) == 3
    assert matched_count(labeled_boxes=12, labeled_images=8, pool_images=16) == 24
    assert matched_count(labeled_boxes=5, labeled_images=8, pool_images=8) == 5


def test_match_plus_a_threshold_keeps_the_count_and_every_box_above_it():
    """`match+conf`: the union. Of boxes scored 0.9, 0.3 and 0.05, a count of 1 with 0.25 keeps 0.9 and 0.3 (match
    alone keeps one, 0.25 alone two, both the same two); a count of 3 keeps all three, whatever the threshold."""
    grid, reg_max = [(8, 8), (4, 4), (2, 2)], 16
    anchors = sum(h * w for h, w in grid)
    scores = torch.full((2, 2, anchors), -30.0)
    for image, anchor, logit in ((0, 2 * 8 + 3, 2.1972), (1, 5 * 8 + 5, -0.8473), (1, 1, -2.9444)):
        scores[image, 1, anchor] = logit
    logp = torch.full((2, 4, reg_max, anchors), -60.0)
    logp[:, :, 2] = 0.0
    target = Taps(feats=[], scores=scores, boxes=logp.reshape(2, 4 * reg_max, anchors), grid=grid)
    images = torch.zeros(2, 3, 64, 64)
    kept = {(conf, count): pseudo_batch(target, images, conf, count) for conf, count in
            [(0.25, 1), (None, 1), (0.25, None), (0.5, 1), (0.95, 3), (0.25, 0)]}
    assert {key: len(b["cls"]) for key, b in kept.items()} == {(0.25, 1): 2, (None, 1): 1, (0.25, None): 2, (0.5, 1): 1,
                                                               (0.95, 3): 3, (0.25, 0): 2}
    assert kept[(0.25, 1)]["batch_idx"].tolist() == [0.0, 1.0]
    assert kept[(0.25, 1)]["bboxes"].tolist() == kept[(0.25, None)]["bboxes"].tolist()


def test_match_trains_on_as_many_boxes_as_the_labeled_batch_holds(tiny_teacher):
    """In the distiller, `match` reads the labeled batch: 2 or 3 labeled boxes give different pool_det; a labeled
    batch without boxes keeps none on the pool, the pool_det of a threshold above every score (all background)."""
    student = student_with_args()
    three = labeled_batch(pool_images=2)
    three["bboxes"] = torch.cat([three["bboxes"], torch.tensor([[0.7, 0.7, 0.2, 0.2]])])
    three["cls"], three["batch_idx"] = torch.tensor([[0.0], [1.0], [1.0]]), torch.tensor([0.0, 1.0, 1.0])
    empty = labeled_batch(pool_images=2)
    empty.update(bboxes=torch.zeros(0, 4), cls=torch.zeros(0, 1), batch_idx=torch.zeros(0))
    matched = [distiller(tiny_teacher, student, unlabeled=["pool"], unlabeled_boxes="match").loss(b)[1][
        POOL_DETECTION_TERM] for b in (labeled_batch(pool_images=2), three, empty)]
    none = distiller(tiny_teacher, student, unlabeled=["pool"], unlabeled_boxes=0.99).loss(empty)[1]
    assert matched[0] > 0 and not torch.equal(matched[0], matched[1])
    assert torch.equal(matched[2], none[POOL_DETECTION_TERM])


@pytest.mark.parametrize("boxes", [0.01, "match", "match+0.01"])
def test_pool_boxes_train_in_a_real_run(tiny_data, tiny_teacher, tiny_pool, tmp_path, boxes):
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher), unlabeled=str(tiny_pool), unlabeled_boxes=boxes)
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="run", **TINY_TRAIN)
    (row,) = read_results(tmp_path / "run")
    assert float(row[f"train/{POOL_DETECTION_TERM}"]) > 0 and float(row["train/pred_cls"]) > 0


@pytest.mark.parametrize("value", [0, 1.0, 1.5, "high", True, "match+1.5", "match+x", "match+"])
def test_a_bad_threshold_is_refused_in_one_line(value):
    with pytest.raises(KDConfigError, match="unlabeled_boxes.*between 0 and 1.*'match'.*false") as err:
        Recipe.from_kwargs(teacher="t.pt", unlabeled_boxes=value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("given, kept", [(0.4, 0.4), ("match", "match"), (" Match", "match"), (" Match+.3", "match+0.3"),
                                         (None, DEFAULT_UNLABELED_BOXES), (False, None)])
def test_the_threshold_is_kept_in_the_recipe_for_resume(given, kept):
    recipe = Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], unlabeled_boxes=given)
    assert recipe.unlabeled_boxes == kept
    assert Recipe.from_dict(copy.deepcopy(recipe.to_dict())).unlabeled_boxes == kept  # off stays off
    assert Recipe.from_saved(copy.deepcopy(recipe.to_dict())).unlabeled_boxes == kept


def test_a_checkpoint_from_before_the_default_resumes_as_it_ran():
    older = {**Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"]).to_dict(), "unlabeled_boxes": None}
    assert Recipe.from_saved(older).unlabeled_boxes is None


def test_a_pool_trains_on_pseudo_boxes_by_default_and_false_turns_them_off(tiny_teacher):
    student = student_with_args()
    _, items = distiller(tiny_teacher, student, unlabeled=["pool"]).loss(labeled_batch(pool_images=2))
    _, off = distiller(tiny_teacher, student, unlabeled=["pool"], unlabeled_boxes=False).loss(
        labeled_batch(pool_images=2))
    assert items[POOL_DETECTION_TERM] > 0 and POOL_DETECTION_TERM not in off


def test_the_weight_multiplies_the_pool_terms_and_nothing_else(tiny_teacher):
    """`unlabeled_weight` w: pool_det and pool_dense are w times their value at 1; the labeled detection terms and the
    dense KD terms are bit-identical."""
    student = student_with_args()
    items = {}
    for weight in (1, 3):
        d = distiller(tiny_teacher, student, unlabeled=["pool"], unlabeled_boxes=0.01, unlabeled_topk=0.05,
                      unlabeled_weight=weight)
        items[weight] = d.loss(labeled_batch(pool_images=2))
    (loss1, one), (loss3, three) = items[1], items[3]
    assert torch.equal(loss1[:3], loss3[:3])
    for term in (POOL_DETECTION_TERM, POOL_DENSE_TERM):
        assert one[term] > 0 and torch.allclose(three[term], 3 * one[term], rtol=1e-5)
    for term in ("sl2", "pred_cls", "pred_ld"):
        assert torch.equal(one[term], three[term])


@pytest.mark.parametrize("value", [0, -1, "2x", True])
def test_a_bad_weight_is_refused_in_one_line(value):
    with pytest.raises(KDConfigError, match="unlabeled_weight") as err:
        Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], unlabeled_boxes=0.25, unlabeled_weight=value)
    assert "\n" not in str(err.value)


def test_a_weight_without_a_pool_term_is_refused():
    with pytest.raises(KDConfigError, match="none is on: drop unlabeled_boxes=false"):
        Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], unlabeled_boxes=False, unlabeled_weight=2)
    assert Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], unlabeled_weight=1).unlabeled_weight == 1


def test_the_weight_is_kept_in_the_recipe_for_resume():
    recipe = Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], unlabeled_boxes=0.25, unlabeled_weight=2)
    assert Recipe.from_dict(copy.deepcopy(recipe.to_dict())).unlabeled_weight == 2
    old = {k: v for k, v in recipe.to_dict().items() if k != "unlabeled_weight"}  # a checkpoint from before the key
    assert Recipe.from_dict(old).unlabeled_weight == 1
