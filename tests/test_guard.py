"""Issue 32: the teacher guard (`teacher_guard`): the teacher is scored once on the run's validation set (the same
number Ultralytics' own `val` gives it); after each validation KD stops for good when the student's mAP50-95 has
reached the teacher's, and stays on while it has not; the decision is kept in last.pt."""

import pytest
import torch
from conftest import TINY_TRAIN, read_results
from ultralytics import YOLO

import yolo_kd
from yolo_kd.guard import caught_up
from yolo_kd.recipe import Recipe
from yolo_kd.ultra import unwrap_model


def test_caught_up_compares_student_with_teacher():
    assert caught_up(0.31, 0.30) and caught_up(0.30, 0.30) and not caught_up(0.29, 0.30)


def test_guard_stops_kd_once_the_student_reaches_its_teacher(tiny_data, tiny_teacher, tmp_path):
    """The tiny teacher scores what Ultralytics' `val` gives it (0 on the tiny set): the student reaches that at the
    first validation, so epoch 1 distils and epoch 2 does not; the decision is in last.pt."""
    saved = []
    rows, state = guarded_run(tiny_data, tiny_teacher, tmp_path, on_model_save=lambda t: saved.append(
        torch.load(t.last, map_location="cpu", weights_only=False)["yolo_kd"]["kd_stopped"]))
    assert saved[0] is True  # epoch 1's last.pt already holds the decision: a resumed run continues without KD
    teacher = YOLO(str(tiny_teacher)).val(data=str(tiny_data), imgsz=64, batch=4, device="cpu", plots=False,
                                          project=str(tmp_path), name="teacher_val")
    assert state["teacher_scores"]["teacher"] == pytest.approx(teacher.box.map, abs=1e-6)
    assert caught_up(float(rows[0]["metrics/mAP50-95(B)"]), teacher.box.map)
    assert [r["kd_stage"] for r in rows] == ["1", "0"]
    assert float(rows[0]["train/pred_cls"]) > 0 and float(rows[1]["train/pred_cls"]) == 0
    assert state["kd_stopped"] is True


def test_guard_keeps_kd_while_the_student_is_below_its_teacher(tiny_data, tiny_teacher, tmp_path):
    """A teacher known to score 1.0 (as a resumed run's last.pt would carry it): the student stays below, KD stays on."""
    def known_score(trainer):
        unwrap_model(trainer.model).teacher_scores["teacher"] = 1.0

    rows, state = guarded_run(tiny_data, tiny_teacher, tmp_path, on_train_start=known_score)
    assert [r["kd_stage"] for r in rows] == ["1", "1"]
    assert all(float(r["train/pred_cls"]) > 0 for r in rows) and state["kd_stopped"] is False


def guarded_run(data, teacher, tmp_path, **callbacks):
    model = YOLO("yolov8n.yaml")
    for event, fn in callbacks.items():
        model.add_callback(event, fn)
    yolo_kd.distill(model, teacher=str(teacher), teacher_guard=True)
    model.train(data=str(data), epochs=2, project=str(tmp_path), name="run", **TINY_TRAIN)
    state = torch.load(tmp_path / "run" / "weights" / "last.pt", map_location="cpu", weights_only=False)["yolo_kd"]
    return read_results(tmp_path / "run"), state


def test_guard_is_a_recipe_switch():
    assert Recipe.from_kwargs(teacher="t.pt").teacher_guard is False
    assert Recipe.from_dict(Recipe.from_kwargs(teacher="t.pt", teacher_guard=True).to_dict()).teacher_guard is True
