"""Issue 21: mixed precision without a GPU (CPU autocast, bf16 and fp16, as stand-ins for CUDA AMP), the teacher
target's one declared encoding, and the engine defects found by review."""

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ultralytics.nn.tasks import DetectionModel

import yolo_kd
from yolo_kd.distiller import Distiller
from yolo_kd.methods import METHODS, build_method
from yolo_kd.recipe import Recipe
from yolo_kd.taps import Targets, Taps, head_taps
from yolo_kd.teacher_target import TeacherView, teacher_target
from yolo_kd.teachers import probe
from yolo_kd.ultra import train_args

NAMES = {0: "square", 1: "disc"}
ALL_METHODS = "+".join(sorted(METHODS))
AMP = [torch.bfloat16, torch.float16]


def real_batch(data: Path, n: int = 4, imgsz: int = 64) -> dict:
    """The first `n` training images of the tiny data set and their labels, as a preprocessed Ultralytics batch."""
    images = sorted((data.parent / "images" / "train").glob("*.jpg"))[:n]
    imgs, boxes, cls, idx = [], [], [], []
    for i, path in enumerate(images):
        im = cv2.resize(cv2.imread(str(path)), (imgsz, imgsz))[:, :, ::-1]
        imgs.append(torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float() / 255)
        rows = np.loadtxt(data.parent / "labels" / "train" / f"{path.stem}.txt", ndmin=2)
        cls += rows[:, :1].tolist()
        boxes += rows[:, 1:].tolist()
        idx += [float(i)] * len(rows)
    return {"img": torch.stack(imgs), "bboxes": torch.tensor(boxes, dtype=torch.float32),
            "cls": torch.tensor(cls, dtype=torch.float32), "batch_idx": torch.tensor(idx)}


def distiller(teacher, method=ALL_METHODS, teacher_imgsz=None, **kwargs) -> Distiller:
    torch.manual_seed(0)
    student = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    student.args = train_args(imgsz=64)
    recipe = Recipe.from_kwargs(teacher=str(teacher), method=method, teacher_imgsz=teacher_imgsz, **kwargs)
    d = Distiller(student, recipe, epochs=1, names=NAMES)
    d.set_epoch(0)
    return d.train()


def amp_step(d: Distiller, batch: dict, dtype) -> dict:
    """One real training step's loss and backward under CPU autocast; the KD items."""
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        loss, items = d.loss(batch)
    loss.sum().backward()
    return {t: float(items[t]) for t in d.term_names}


# ---------------------------------------------------------------------- every method under AMP, every teacher size
@pytest.mark.parametrize("dtype", AMP, ids=["bf16", "fp16"])
@pytest.mark.parametrize("teacher_imgsz", [None, 128, 96], ids=["same", "2x", "1.5x"])
def test_every_method_under_amp_has_finite_nonzero_terms(tiny_data, tiny_teacher, teacher_imgsz, dtype):
    """Defect 1: at 1.5x under fp16 the converted DFL target underflowed (log 0 = -inf), LD was NaN and
    `pred_ld`/`crosskd_ld` were dropped at every step (kd_nan_skips > 0)."""
    d = distiller(tiny_teacher, teacher_imgsz=teacher_imgsz)
    items = amp_step(d, real_batch(tiny_data), dtype)
    assert d.nan_skips == 0
    optional = {"pred_box", "pred_cls_o2o", "pred_box_o2o"}  # box KD: pairs without LD by default; one2one: YOLO26 pairs
    assert set(items) == {c for m in METHODS.values() for c in m.terms} - optional
    bad = {t: v for t, v in items.items() if not (math.isfinite(v) and v > 0)}
    assert not bad
    grads = [p.grad for p in d.methods.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("teacher_imgsz", [None, 128, 96], ids=["same", "2x", "1.5x"])
def test_pred_ld_under_amp_equals_the_float32_value(tiny_data, tiny_teacher, teacher_imgsz):
    """The target is float32 outside autocast: LD under bf16 autocast differs from the fp32 step only by the
    student's and teacher's own low-precision forwards (a few percent), never by a rounded or underflowed target."""
    batch = real_batch(tiny_data)
    fp32 = amp_step(distiller(tiny_teacher, "pred", teacher_imgsz), batch, None)
    for dtype in AMP:
        amp = amp_step(distiller(tiny_teacher, "pred", teacher_imgsz), batch, dtype)
        assert amp["pred_ld"] == pytest.approx(fp32["pred_ld"], rel=0.1), dtype
        assert amp["pred_cls"] == pytest.approx(fp32["pred_cls"], rel=0.1), dtype


def test_teacher_runs_in_the_autocast_dtype(tiny_data, tiny_teacher):
    """bf16 AMP used to cast the teacher to fp16 (CUDA) or leave it fp32 (CPU): it takes the autocast dtype."""
    d = distiller(tiny_teacher, "pred")
    for dtype in (torch.bfloat16, torch.float16, None):
        amp_step(d, real_batch(tiny_data), dtype)
        assert next(d.pool.loaded["teacher"].parameters()).dtype == (dtype or torch.float32)


# ---------------------------------------------------------------------- the declared encoding
def raw_teacher(t_grid, reg_max=16, nc=2, seed=0) -> Taps:
    g = torch.Generator().manual_seed(seed)
    a = sum(h * w for h, w in t_grid)
    return Taps(feats=[torch.randn(2, 4, h, w, generator=g) for h, w in t_grid],
                scores=torch.randn(2, nc, a, generator=g) * 3, boxes=torch.randn(2, 4 * reg_max, a, generator=g) * 4,
                grid=list(t_grid))


def student_taps(s_grid) -> Taps:
    return Taps(feats=[torch.zeros(2, 4, h, w) for h, w in s_grid], grid=list(s_grid))


S_GRID = [(8, 8), (4, 4), (2, 2)]


@pytest.mark.parametrize("dtype", AMP, ids=["bf16", "fp16"])
@pytest.mark.parametrize("t_grid", [S_GRID, [(16, 16), (8, 8), (4, 4)], [(12, 12), (6, 6), (3, 3)]],
                         ids=["same", "2x", "1.5x"])
def test_target_is_float32_log_probabilities_and_the_same_under_autocast(t_grid, dtype):
    raw = raw_teacher(t_grid)
    view = TeacherView(None, [0, 1, 2], [0, 1, 2], 16)
    [(_, fp32, _)] = teacher_target({"t": raw}, {"t": view}, student_taps(S_GRID), ["t"], [1.0])
    with torch.autocast("cpu", dtype=dtype):
        [(_, amp, _)] = teacher_target({"t": raw}, {"t": view}, student_taps(S_GRID), ["t"], [1.0])
    for x, y in ((fp32.boxes, amp.boxes), (fp32.scores, amp.scores), *zip(fp32.feats, amp.feats)):
        assert x.dtype == y.dtype == torch.float32 and torch.equal(x, y)
    assert amp.grid == S_GRID and amp.boxes.shape[-1] == 64 + 16 + 4
    probs = amp.boxes.reshape(2, 4, 16, -1).exp()
    torch.testing.assert_close(probs.sum(2), torch.ones_like(probs.sum(2)))  # log-probabilities on every grid
    if t_grid == S_GRID:  # the teacher's own grid: log_softmax of its logits, not the logits
        torch.testing.assert_close(amp.boxes.reshape(2, 4, 16, -1), F.log_softmax(raw.boxes.reshape(2, 4, 16, -1), 2))


def test_one_encoding_on_a_level_passed_unchanged_and_one_converted():
    """At 2x with levels: area, teacher P4 lands on student P3 unconverted and teacher P5 on student P5 by block
    selection: before, the first kept the raw logits and the second became log-probabilities in one target."""
    raw = raw_teacher([(16, 16), (8, 8), (4, 4)])
    view = TeacherView(None, [1, 2, 2], [1, 2, 2], 16)
    [(_, t, _)] = teacher_target({"t": raw}, {"t": view}, student_taps(S_GRID), ["t"], [1.0])
    p4 = raw.boxes[..., 256:320].reshape(2, 4, 16, -1)
    torch.testing.assert_close(t.boxes[..., :64].reshape(2, 4, 16, -1), F.log_softmax(p4, 2))
    assert t.boxes.max() <= 0  # every level log-probabilities


def test_combine_mean_averages_box_probabilities():
    a, b = raw_teacher(S_GRID, seed=1), raw_teacher(S_GRID, seed=2)
    view = TeacherView(None, [0, 1, 2], [0, 1, 2], 16)
    [(owner, mean, w)] = teacher_target({"a": a, "b": b}, {"a": view, "b": view}, student_taps(S_GRID), ["a", "b"],
                                        [3.0, 1.0], "mean")
    assert (owner, w) == ("a", 1.0)
    pa, pb = (x.boxes.reshape(2, 4, 16, -1).softmax(2) for x in (a, b))
    torch.testing.assert_close(mean.boxes.reshape(2, 4, 16, -1).exp(), (3 * pa + pb) / 4)
    torch.testing.assert_close(mean.scores, (3 * a.scores + b.scores) / 4)


# ---------------------------------------------------------------------- defect 2: cskd compares distributions
def test_cskd_pred_is_zero_for_a_teacher_with_the_students_distributions():
    """Defect 2: a target equal to the student's own predictions (its logits in the declared encoding:
    log-probabilities) must cost nothing; cskd compared the log-probabilities with the student's raw logits."""
    torch.manual_seed(0)
    student = DetectionModel("yolov8n.yaml", nc=2, verbose=False).train()
    shapes = probe(student, 64, 3)
    m = build_method("cskd", {"assistant": False}, shapes, shapes)
    with torch.no_grad():
        s = head_taps(student(torch.rand(2, 3, 64, 64)))
    batch = {"img": torch.zeros(2, 3, 64, 64), "bboxes": torch.zeros(0, 4), "cls": torch.zeros(0, 1),
             "batch_idx": torch.zeros(0)}
    log_p = F.log_softmax(s.boxes.reshape(2, 4, 16, -1), 2).reshape(s.boxes.shape)  # as a converted grid gave it
    t = Taps(feats=s.feats, scores=s.scores, boxes=log_p, grid=s.grid)
    terms = m(s, t, Targets.from_batch(batch))
    assert terms["cskd_pred"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["cskd_feat"].item() == pytest.approx(0.0, abs=1e-6)
    view = TeacherView(None, [0, 1, 2], [0, 1, 2], 16)
    shifted = Taps(feats=s.feats, scores=s.scores, boxes=s.boxes + 7.0, grid=s.grid)  # same distributions
    [(_, t2, _)] = teacher_target({"t": shifted}, {"t": view}, s, ["t"], [1.0])
    assert m(s, t2, Targets.from_batch(batch))["cskd_pred"].item() == pytest.approx(0.0, abs=1e-6)
    other = Taps(feats=s.feats, scores=s.scores, boxes=s.boxes.flip(1), grid=s.grid)  # other distributions
    [(_, t3, _)] = teacher_target({"t": other}, {"t": view}, s, ["t"], [1.0])
    assert m(s, t3, Targets.from_batch(batch))["cskd_pred"].item() > 1e-3


# ---------------------------------------------------------------------- defect 3
@pytest.mark.parametrize("method", ["pred", "sl2"])
def test_head_methods_with_custom_layers_read_the_heads_grids(tiny_data, tiny_teacher, method):
    """`pred` (ld_region gt) and `sl2` read the per-anchor outputs by the head's grids, not the tapped layers'."""
    params = {"pred": {"pred": {"ld_region": "gt"}}, "sl2": {"sl2": {}}}[method]
    cfg = {"teachers": {"t": str(tiny_teacher)}, "stages": [{"fraction": [0, 1], "teachers": ["t"],
                                                             "methods": params}],
           "layers": {"student": [2, 4], "teacher": [2, 4]}}  # strides 4 and 8: not the head's P3-P5
    torch.manual_seed(0)
    student = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    student.args = train_args(imgsz=64)
    d = Distiller(student, Recipe.from_kwargs(cfg=cfg), epochs=1, names=NAMES)
    d.set_epoch(0)
    items = amp_step(d.train(), real_batch(tiny_data), None)
    assert d.nan_skips == 0 and all(math.isfinite(v) and v > 0 for v in items.values()), items


def test_crosskd_with_combine_mean_is_refused(tiny_data, tiny_teacher, tmp_path):
    cfg = {"teachers": {"a": str(tiny_teacher), "b": str(tiny_teacher)},
           "stages": [{"fraction": [0, 1], "teachers": ["a", "b"], "combine": "mean", "methods": "crosskd"}]}
    student = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    student.args = train_args(imgsz=64)
    with pytest.raises(yolo_kd.KDConfigError, match="combine: mean target of \\['a', 'b'\\]: use combine: sum"):
        Distiller(student, Recipe.from_kwargs(cfg=cfg), epochs=1, names=NAMES)


def test_a_non_finite_term_drops_the_steps_kd_once(tiny_data, tiny_teacher):
    """One finiteness check per step on all terms: a NaN term drops the whole step's KD and counts one skip."""
    d = distiller(tiny_teacher, "mse+pred")
    with torch.no_grad():
        d.methods["teacher__mse"].align[0].weight.fill_(float("nan"))
    batch = real_batch(tiny_data)
    loss, items = d.loss(batch)
    assert d.nan_skips == 1
    assert all(float(items[t]) == 0.0 for t in d.term_names)
    assert float(loss[-1].detach()) == 0.0 and torch.isfinite(loss).all()
    d.loss(batch)
    assert d.nan_skips == 2
