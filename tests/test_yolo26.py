"""Issue 23: YOLO26 students and teachers: both heads distilled, declared needs across families, sl2 as the built-in."""

import copy
import logging

import pytest
import torch
from conftest import TINY_NAMES, TINY_TRAIN, read_results, train_tiny
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import LOGGER

import yolo_kd
from yolo_kd.distiller import Distiller
from yolo_kd.methods import build_method
from yolo_kd.recipe import Recipe
from yolo_kd.teachers import freeze, probe
from yolo_kd.ultra import builtin_distillation_model, detect_head, train_args

NAMES = dict(enumerate(TINY_NAMES))


@pytest.fixture(scope="module")
def teacher_26(tiny_data, tmp_path_factory):
    """A yolo26s teacher trained on the tiny dataset with stock Ultralytics, 10 epochs without warm-up:
    its one2one branch (one-to-one assignment) has left the one2many branch it was copied from at init, so averaging
    the two is visible."""
    return train_tiny(tmp_path_factory, "yolo26s.yaml", tiny_data, 10, "teacher26", warmup_epochs=0, lr0=0.05)


def student_26():
    torch.manual_seed(0)
    student = DetectionModel("yolo26n.yaml", nc=2, verbose=False)
    student.args = train_args(imgsz=64, dis=6.0)
    return student


def batch():
    g = torch.Generator().manual_seed(3)
    return {"img": torch.rand(2, 3, 64, 64, generator=g), "cls": torch.tensor([[0.0], [1.0]]),
            "bboxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.4, 0.2]]), "batch_idx": torch.tensor([0.0, 1.0])}


def kd_grads(teacher, params):
    """Gradients of the student's one2one head after a backward of the KD total alone (not the detection loss)."""
    recipe = Recipe.from_dict({"teachers": {"t": {"model": str(teacher)}},
                               "stages": [{"fraction": [0.0, 1.0], "teachers": ["t"], "methods": {"pred": params}}]})
    ours = Distiller(student_26(), recipe, epochs=1, names=NAMES).train()
    ours.set_epoch(0, 1)
    loss, items = ours.loss(batch())
    loss[-1].backward()  # the KD total (x batch size); the detection terms come before it
    head = detect_head(ours.student)
    return items, [p.grad for p in [*head.one2one_cv3.parameters(), *head.one2one_cv2.parameters()]]


def test_one2one_head_receives_kd_gradients(teacher_26):
    items, grads = kd_grads(teacher_26, {"box_weight": 1.0, "box_conf": 0.0})
    assert items["pred_cls_o2o"] > 0 and items["pred_box_o2o"] > 0
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    items, grads = kd_grads(teacher_26, {"branches": "one2many", "box_weight": 1.0, "box_conf": 0.0})
    # what the student got before issue 23 (zeros, not None: the cat with the detection terms passes zeros through)
    assert "pred_cls_o2o" not in items and all(g is None or g.abs().sum() == 0 for g in grads)


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines():
    handler = Lines()
    LOGGER.addHandler(handler)
    yield handler.lines
    LOGGER.removeHandler(handler)


def test_pred_drops_what_a_dfl_teacher_cannot_give_a_yolo26_student(log_lines):
    student = probe(DetectionModel("yolo26n.yaml", nc=2, verbose=False), 64, 3)
    teacher = probe(freeze(DetectionModel("yolov8s.yaml", nc=2, verbose=False)), 64, 3)
    m = build_method("pred", {"box_weight": 2.0}, student, teacher)
    assert m.terms == ("pred_cls", "pred_box")  # box KD decodes both heads; LD and the one2one terms cannot apply
    lines = [line for line in log_lines if "yolo-kd" in line]
    assert len(lines) == 1 and "pred_ld" in lines[0] and "pred_cls_o2o" in lines[0] and "pred_cls " not in lines[0]
    assert "yolo-kd pred (teacher reg_max=16, student reg_max=1, one2one): dropped" in lines[0]
    with pytest.raises(yolo_kd.KDConfigError, match="none of its terms"):
        build_method("pred", {"branches": "one2one"}, student, teacher)


def test_yolov8_teacher_trains_a_yolo26_student_with_the_default_method(tiny_data, tiny_teacher, tmp_path, log_lines):
    model = YOLO("yolo26n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher))
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="mixed", **TINY_TRAIN)
    row = read_results(tmp_path / "mixed")[-1]
    assert float(row["train/sl2"]) > 0 and float(row["train/pred_cls"]) > 0
    assert "train/pred_box" in row  # the family default: box KD stands in for LD (0 where this tiny teacher is unsure)
    assert "train/pred_ld" not in row and "train/pred_cls_o2o" not in row
    dropped = [line for line in log_lines if "yolo-kd pred (" in line and "dropped" in line]
    assert dropped and "pred_ld" in dropped[0] and "pred_cls_o2o" in dropped[0]
    assert any("stands in for LD" in line for line in log_lines)


@pytest.mark.parametrize("teacher, student, terms", [
    ("yolo11s.yaml", "yolo11n.yaml", ("pred_cls", "pred_ld")),
    ("yolo26s.yaml", "yolo26n.yaml", ("pred_cls", "pred_box", "pred_cls_o2o", "pred_box_o2o")),
    ("yolo11s.yaml", "yolo26n.yaml", ("pred_cls", "pred_box")),
    ("yolo26s.yaml", "yolo11n.yaml", ("pred_cls", "pred_box")),
])
def test_pred_default_box_kd_is_per_head_family(teacher, student, terms):
    """box_weight=None: 2.5 where LD cannot apply (a reg_max = 1 head on either side), 0 where LD teaches boxes."""
    s = probe(DetectionModel(student, nc=2, verbose=False), 64, 3)
    t = probe(freeze(DetectionModel(teacher, nc=2, verbose=False)), 64, 3)
    m = build_method("pred", {}, s, t)
    assert m.terms == terms and m.box_weight == (2.5 if "pred_box" in terms else 0.0)
    assert build_method("pred", {"box_weight": 0}, s, t).terms == tuple(x for x in terms if "box" not in x)


def test_sl2_at_weight_6_is_the_builtin_loss_on_a_yolo26_pair(teacher_26):
    """Ultralytics' DistillationModel weights cells by the mean of the teacher's one2many and one2one logits: the same
    student, batch and projector through it and through `sl2` give the same loss vector."""
    student = student_26()
    builtin = builtin_distillation_model(str(teacher_26), copy.deepcopy(student)).train()
    ours = Distiller(copy.deepcopy(student), Recipe.from_kwargs(teacher=str(teacher_26), method="sl2"), epochs=1,
                     names=NAMES).train()
    ours.methods["teacher__sl2"].projector.load_state_dict(builtin.projector.state_dict())
    ours.set_epoch(0, 1)
    with torch.no_grad():  # the branches differ: the one2many weights alone are 0.1%+ off (and fail the check below)
        raw = builtin.teacher_model(batch()["img"])[1]
        many, one = raw["one2many"]["scores"], raw["one2one"]["scores"]
        mean_weight = ((many + one) / 2).sigmoid().amax(1)
        assert ((many.sigmoid().amax(1) - mean_weight).abs() / mean_weight).mean() > 1e-3
    b_loss, b_items = builtin.loss(batch())
    o_loss, o_items = ours.loss(batch())
    assert b_items["dis_loss"].item() > 0
    assert o_items["sl2"].item() == pytest.approx(b_items["dis_loss"].item(), rel=1e-6)
    torch.testing.assert_close(o_loss, b_loss, rtol=1e-5, atol=1e-6)


def test_one2one_branch_follows_the_teacher_target_transforms():
    """Class map, grid change (2x blocks), teacher mean, row selection: the one2one branch is moved exactly as its own
    taps would be."""
    from yolo_kd.taps import Taps, cat_rows, take_rows
    from yolo_kd.teacher_target import TeacherView, average, encode

    g = torch.Generator().manual_seed(0)
    view = TeacherView(class_index=[2, 0], feat_pairs=[0], head_pairs=[0], reg_max=1)
    student = Taps(feats=[torch.zeros(2, 3, 4, 4)], grid=[(4, 4)])

    def raw(n=2):
        o2o = Taps(feats=[], grid=[(8, 8)], scores=torch.randn(n, 3, 64, generator=g),
                   boxes=torch.rand(n, 4, 64, generator=g) * 3)
        return Taps(feats=[torch.randn(n, 3, 8, 8, generator=g)], grid=[(8, 8)], one2one=o2o,
                    scores=torch.randn(n, 3, 64, generator=g), boxes=torch.rand(n, 4, 64, generator=g) * 3)

    a, b = raw(), raw()
    moved = encode(a, view, student)
    alone = encode(Taps(feats=[], grid=[(8, 8)], scores=a.one2one.scores, boxes=a.one2one.boxes), view,
                   Taps(feats=[], grid=[(4, 4)]))
    assert moved.one2one.scores.shape == (2, 2, 16)
    torch.testing.assert_close(moved.one2one.scores, alone.scores)
    torch.testing.assert_close(moved.one2one.boxes, alone.boxes)
    assert not torch.allclose(moved.one2one.scores, moved.scores)
    mean = average([moved, encode(b, view, student)], [1.0, 3.0], reg_max=1)
    torch.testing.assert_close(mean.one2one.scores, (moved.one2one.scores + 3 * encode(b, view, student).one2one.scores) / 4)
    both = cat_rows(moved, moved)
    torch.testing.assert_close(take_rows(both, 2).one2one.boxes, moved.one2one.boxes)
    assert both.one2one.scores.shape[0] == 4


def test_crosskd_and_quality_class_kd_on_a_yolo26_student_with_a_dfl_teacher():
    """crosskd compares the teacher head's outputs with the teacher's: a reg_max=1 student fits (compat lets it through)
    and keeps LD; pred's quality_beta is QualityClassKD on the same logits."""
    from dataclasses import replace

    from yolo_kd.compat import check_pair
    from yolo_kd.losses import QualityClassKD
    from yolo_kd.taps import Targets, head_taps

    torch.manual_seed(0)
    student = DetectionModel("yolo26n.yaml", nc=2, verbose=False)
    teacher = freeze(DetectionModel("yolov8s.yaml", nc=2, verbose=False))
    teacher.names = dict(NAMES)
    check_pair("teacher", teacher, student, 3, NAMES, Recipe.from_kwargs(teacher="t.pt", method="sl2+pred+crosskd"))
    s_shapes, t_shapes = probe(student, 64, 3), probe(teacher, 64, 3)
    cross = build_method("crosskd", {"quality_beta": 1.0}, s_shapes, t_shapes)
    pred = build_method("pred", {"quality_beta": 2.0, "branches": "one2many", "box_weight": 0}, s_shapes, t_shapes)
    assert cross.terms == ("crosskd_cls", "crosskd_ld") and pred.terms == ("pred_cls",)
    img = torch.rand(2, 3, 64, 64)
    t = replace(head_taps(teacher(img)), head=detect_head(teacher))
    s = head_taps(student.train()(img))
    targets = Targets.from_batch(batch())
    terms = cross(s, t, targets)
    assert all(torch.isfinite(v) and v > 0 for v in terms.values())
    sum(terms.values()).backward()
    adapters = list(cross.align.parameters())
    assert adapters and all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapters)
    expected = QualityClassKD(beta=2.0)(s.scores, t.scores)
    assert pred(s, t, targets)["pred_cls"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_class_map_selects_the_one2one_classes_too(tmp_path):
    """A 3-class YOLO26 teacher mapped onto the 2 data set classes: the one2one target carries the mapped classes."""
    torch.manual_seed(2)
    model = DetectionModel("yolo26s.yaml", nc=3, verbose=False)
    model.names = {0: "disc", 1: "other", 2: "square"}
    torch.save({"model": model}, tmp_path / "t3.pt")
    recipe = Recipe.from_kwargs(teacher=str(tmp_path / "t3.pt"), method="pred", class_map={0: 2, 1: 0})
    ours = Distiller(student_26(), recipe, epochs=1, names=NAMES).train()
    ours.set_epoch(0, 1)
    img = batch()["img"]
    s_taps, _ = ours._student_taps(img)
    (_, t, _), = ours._teacher_target(recipe.stages[0], img, None, s_taps)
    with torch.no_grad():
        raw = freeze(model)(img)[1]["one2one"]["scores"]
    torch.testing.assert_close(t.one2one.scores, raw[:, [2, 0]], rtol=1e-4, atol=1e-4)
    assert ours.loss(batch())[1]["pred_cls_o2o"] > 0


@pytest.mark.parametrize("teacher_imgsz", [None, 96], ids=["same", "1.5x"])
def test_box_kd_under_bf16_autocast_reads_the_dfl_target(tiny_teacher, teacher_imgsz):
    """pred_box decodes the teacher target's DFL log-probabilities (converted at 1.5x) in float32 under autocast."""
    student = DetectionModel("yolo26n.yaml", nc=2, verbose=False)
    student.args = train_args(imgsz=64)
    recipe = Recipe.from_dict({"teachers": {"t": {"model": str(tiny_teacher), "imgsz": teacher_imgsz}},
                               "stages": [{"fraction": [0.0, 1.0], "teachers": ["t"],
                                           "methods": {"pred": {"box_weight": 1.0, "box_conf": 0.0}}}]})
    d = Distiller(student, recipe, epochs=1, names=NAMES).train()
    d.set_epoch(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, items = d.loss(batch())
    loss.sum().backward()
    assert d.nan_skips == 0 and d.term_names == ["pred_cls", "pred_box"]
    assert 0 < float(items["pred_box"]) < 2  # 1 - GIoU lies in [0, 2]
