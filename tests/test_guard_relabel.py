"""Issue 32: `teacher_guard: relabel`, self-training for a teacher the student outgrows: once the guard fires the
teacher's terms stop, the pool's detection term goes on, and the student's EMA relabels the pool by the same rule as
the teacher did whenever it scores 10% above the boxes' source; those boxes are kept in last.pt for resume."""

import copy

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN, read_results
from ultralytics import YOLO

import yolo_kd
from yolo_kd import KDConfigError
from yolo_kd.distiller import POOL_DETECTION_TERM
from yolo_kd.guard import relabel_due
from yolo_kd.pool_labels import teacher_labels
from yolo_kd.pseudo_boxes import matched_count
from yolo_kd.recipe import GUARD_RELABEL, Recipe
from yolo_kd.ultra import unwrap_model
from yolo_kd.unlabeled import resolve_images

LOW = 0.001  # the tiny models score the pool below 0.01: keep most of what they predict


def test_relabel_is_due_at_ten_percent_above_the_boxes_source():
    assert relabel_due(0.111, 0.10) and relabel_due(0.0, 0.0)
    assert not relabel_due(0.109, 0.10) and not relabel_due(0.05, 0.10)


def test_relabel_is_a_guard_mode_kept_for_resume():
    recipe = Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], teacher_guard=" Relabel")
    assert recipe.teacher_guard == GUARD_RELABEL
    assert Recipe.from_dict(recipe.to_dict()).teacher_guard == GUARD_RELABEL


@pytest.mark.parametrize("options, message", [
    ({"teacher_guard": "yes"}, "'teacher_guard' must be true, false or relabel"),
    ({"teacher_guard": "relabel", "unlabeled_boxes": "match"}, "relabel relabels the pool's boxes made once"),
    ({"teacher_guard": "relabel", "unlabeled_boxes": False}, "relabel relabels the pool's boxes made once"),
])
def test_a_bad_guard_is_refused_in_one_line(options, message):
    with pytest.raises(KDConfigError, match=message) as err:
        Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], **options)
    assert "\n" not in str(err.value)


def test_relabel_without_a_pool_is_refused_before_training(tiny_data, tiny_teacher, tmp_path):
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher), teacher_guard="relabel")
    with pytest.raises(KDConfigError, match="teacher_guard=relabel relabels the unlabeled pool and the run has none"):
        model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="run", **TINY_TRAIN)
    assert not (tmp_path / "run" / "weights" / "last.pt").exists()


def test_the_emas_boxes_replace_the_teachers_once_the_guard_fires(tiny_data, tiny_teacher, tiny_pool, tmp_path):
    """The student starts from the teacher's weights (so its EMA finds boxes on the tiny pool, as the teacher does);
    the teacher's score is known to be 0 (what the tiny set gives it), so at the first validation the guard fires and
    the EMA, at >= 1.1 x 0, relabels. Epoch 1 distils, epoch 2 has no teacher term but trains `pool_det` on the boxes
    `teacher_labels` gives epoch 1's EMA (not the teacher's), which epoch 1's last.pt keeps with the EMA's score; the
    last epoch relabels nothing."""
    seen = []

    def known_score(trainer):
        unwrap_model(trainer.model).teacher_scores["teacher"] = 0.0

    def capture(trainer):
        labels = trainer.train_loader.dataset.labels
        seen.append({"ema": copy.deepcopy(trainer.ema.ema.student), "boxes": trainer.yolo_kd.pool_boxes,
                     "labeled": (sum(len(label["cls"]) for label in labels), len(labels)),
                     "state": torch.load(trainer.last, map_location="cpu", weights_only=False)["yolo_kd"],
                     "drawn": trainer.yolo_kd.unlabeled_loader.dataset.labels.boxes})

    model = YOLO(str(tiny_teacher))
    model.add_callback("on_train_start", known_score)
    model.add_callback("on_model_save", capture)
    yolo_kd.distill(model, teacher=str(tiny_teacher), unlabeled=str(tiny_pool), unlabeled_boxes=f"label+{LOW}",
                    teacher_guard="relabel")
    model.train(data=str(tiny_data), epochs=2, project=str(tmp_path), name="run", **TINY_TRAIN)
    rows = read_results(tmp_path / "run")

    files = resolve_images(tiny_pool)
    count = matched_count(*seen[0]["labeled"], len(files))
    by_ema = teacher_labels(seen[0]["ema"], files, LOW, 64, "cpu", 4, count=count)
    by_teacher = teacher_labels(str(tiny_teacher), files, LOW, 64, "cpu", 4, count=count)
    relabeled = seen[0]["boxes"]
    assert sorted(relabeled) == sorted(files) and sum(len(b) for b in relabeled.values()) > 0
    assert all(np.array_equal(relabeled[f], by_ema[f]) for f in files)
    assert not all(np.array_equal(relabeled[f], by_teacher[f]) for f in files)
    assert seen[1]["drawn"] is relabeled and seen[1]["boxes"] is relabeled  # epoch 2 drew them; epoch 2 made none

    kept = seen[0]["state"]
    assert all(np.array_equal(kept["continue"]["pool_boxes"][f], relabeled[f]) for f in files)
    assert kept["kd_stopped"] is True
    assert kept["boxes_score"] == pytest.approx(float(rows[0]["metrics/mAP50-95(B)"]), abs=1e-5)
    assert [r["kd_stage"] for r in rows] == ["1", "0"]
    assert float(rows[0]["train/pred_cls"]) > 0 and float(rows[1]["train/pred_cls"]) == 0
    assert all(float(r[f"train/{POOL_DETECTION_TERM}"]) > 0 for r in rows)
