"""Issue 8: every method by name, end to end in 1-epoch tiny trainings, from both entry points and across families."""

import math
from dataclasses import replace
import subprocess
import sys

import pytest
import torch
from conftest import TINY_TRAIN, read_results
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel

import yolo_kd
from yolo_kd.methods import METHODS, build_method
from yolo_kd.taps import Targets, head_taps
from yolo_kd.teachers import freeze, probe
from yolo_kd.ultra import detect_head

COLUMNS = {"mse": ["mse"], "fgd": ["fgd"], "cskd": ["cskd_feat", "cskd_pred", "cskd_aux"],
           "pred": ["pred_cls", "pred_ld"], "cwd": ["cwd"], "mgd": ["mgd"], "pkd": ["pkd"], "sl2": ["sl2"],
           "crosskd": ["crosskd_cls", "crosskd_ld"]}
#: the adapter that the student's features pass through (the teacher-side GcBlock of fgd does not count)
STUDENT_SIDE = {"mse": "align", "fgd": "levels.0.align", "cskd": "mimic", "cwd": "align", "mgd": "levels.0.align",
                "pkd": "align", "sl2": "projector", "crosskd": "align", "pred": None}


def last_row(path):
    return read_results(path)[-1]


def test_registry_lists_all_methods():
    assert set(COLUMNS) <= set(METHODS)


def test_default_weights_are_the_benchmarked_ones_and_weights_override_them():
    """README, Weights: cwd 5 and mgd 10 (weight 1 lost for both in the bench), 1 for the others."""
    from yolo_kd.methods import method_weight
    from yolo_kd.recipe import Recipe

    def weights(method, weights=None):  # resolved where the recipe is used (the recipe itself is plain data)
        recipe = Recipe.from_kwargs(teacher="t.pt", method=method, weights=weights)
        return {m.name: {"weight": method_weight(m)} for m in recipe.stages[0].methods}

    assert weights("fgd+pred+cskd+cwd+mgd+mse") == {
        "fgd": {"weight": 1.0}, "pred": {"weight": 1.0}, "cskd": {"weight": 1.0}, "cwd": {"weight": 5.0},
        "mgd": {"weight": 10.0}, "mse": {"weight": 1.0}}
    assert weights("cwd+mgd", 2.0) == {"cwd": {"weight": 2.0}, "mgd": {"weight": 2.0}}
    assert weights("cwd+mgd", {"mgd": 3.0}) == {"cwd": {"weight": 5.0}, "mgd": {"weight": 3.0}}


@pytest.mark.parametrize("method", sorted(COLUMNS))
def test_method_gradients_reach_student_and_adapters_not_teacher(method):
    torch.manual_seed(0)
    student = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    teacher = freeze(DetectionModel("yolov8s.yaml", nc=2, verbose=False))
    m = build_method(method, {}, probe(student, 64, 3), probe(teacher, 64, 3))
    img = torch.rand(2, 3, 64, 64)
    batch = {"img": img, "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.3], [0.2, 0.3, 0.1, 0.2]]),
             "cls": torch.tensor([[0.0], [1.0]]), "batch_idx": torch.tensor([0.0, 1.0])}
    t_out = teacher(img)
    for p in teacher.parameters():
        p.grad = None
    student.train()
    t_taps = replace(head_taps(t_out), head=detect_head(teacher))
    terms = m(head_taps(student(img)), t_taps, Targets.from_batch(batch))
    assert set(terms) == set(m.terms) == set(COLUMNS[method])
    total = sum(terms.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    side = STUDENT_SIDE[method]
    if side:
        grads = [p.grad for n, p in m.named_parameters() if n.startswith(side)]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), side
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("method", sorted(COLUMNS))
def test_method_trains_from_python_api(method, tiny_data, tiny_teacher, tmp_path):
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher), method=method)
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name=method, **TINY_TRAIN)
    row = last_row(tmp_path / method / "results.csv")
    for col in COLUMNS[method]:
        v = float(row[f"train/{col}"])
        assert math.isfinite(v) and v > 0, (col, v)


def test_all_methods_from_command_line(tiny_data, tiny_teacher, tmp_path):
    cmd = [sys.executable, "-m", "yolo_kd.cli", "train", "model=yolov8n.yaml", f"teacher={tiny_teacher}",
           f"data={tiny_data}", "method=fgd+cskd+pred+cwd+mgd", "weights={fgd: 2.0, pred: 0.5}", "epochs=1",
           f"project={tmp_path}", "name=all"] + [f"{k}={v}" for k, v in TINY_TRAIN.items()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    row = last_row(tmp_path / "all" / "results.csv")
    for method in ("fgd", "cskd", "pred", "cwd", "mgd"):
        for col in COLUMNS[method]:
            assert math.isfinite(float(row[f"train/{col}"])) and float(row[f"train/{col}"]) > 0, col


def test_other_family_student_yolo11_from_yolov8_teacher(tiny_data, tiny_teacher, tmp_path):
    model = YOLO("yolo11n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="fgd+pred")
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="y11", **TINY_TRAIN)
    row = last_row(tmp_path / "y11" / "results.csv")
    assert float(row["train/fgd"]) > 0 and float(row["train/pred_ld"]) > 0


def test_yolo26_student_feature_kd_and_clear_error_for_raw_box_outputs(tiny_data, tiny_teacher, tmp_path):
    model = YOLO("yolo26n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="cwd")
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="y26", **TINY_TRAIN)
    assert float(last_row(tmp_path / "y26" / "results.csv")["train/cwd"]) > 0
    model = YOLO("yolo26n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="cskd")  # compares raw box outputs: cannot drop them
    with pytest.raises(yolo_kd.KDConfigError, match="cskd_pred needs box outputs in the same encoding"):
        model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="y26pred", **TINY_TRAIN)
