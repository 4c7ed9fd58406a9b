"""Issue 15: engine defects that made distillation silently weaker or touched a refused run's files."""

import os

import pytest
import torch
from conftest import TINY_NAMES, TINY_TRAIN, read_results
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel

import yolo_kd
from yolo_kd import KDConfigError
from yolo_kd.distiller import Distiller
from yolo_kd.recipe import Recipe, Schedule
from yolo_kd.taps import head_taps

NAMES = dict(enumerate(TINY_NAMES))


def snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def earlier_run(project):
    """An earlier run's folder that exist_ok=True would reuse; returns its snapshot."""
    (project / "run" / "weights").mkdir(parents=True)
    (project / "run" / "weights" / "last.pt").write_bytes(b"earlier last.pt" + os.urandom(64))
    (project / "run" / "results.csv").write_text("epoch,time\n1,2.5\n")
    (project / "run" / "args.yaml").write_text("epochs: 1\n")
    return snapshot(project)


def fake_teacher(path, cfg="yolov8s.yaml", nc=2, names=None):
    model = DetectionModel(cfg, nc=nc, verbose=False)
    model.names = names or NAMES
    torch.save({"model": model, "train_args": {}}, path)
    return path


# ---------------------------------------------------------------------- 1. warm-up advances per batch
def test_schedule_factor_is_fractional_within_a_stage():
    warm = Schedule(warmup_epochs=1)
    assert [warm.factor(e, 0, 10) for e in (0.0, 0.25, 0.5, 1.0)] == pytest.approx([0.0, 0.25, 0.5, 1.0])
    cosine = Schedule(decay="cosine", final=0.1)
    assert cosine.factor(9.999, 0, 10) == pytest.approx(0.1, abs=1e-4)


def test_distiller_progress_counts_batches(tiny_teacher):
    student = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    d = Distiller(student, Recipe.from_kwargs(teacher=str(tiny_teacher), method="mse"), epochs=3, names=NAMES)
    d.set_epoch(1, batches=4)
    seen = []
    for _ in range(4):
        seen.append(d.progress)
        d.batch_index += 1
    assert seen == [1.0, 1.25, 1.5, 1.75]


def test_warmup_epoch_distils(tiny_data, tiny_teacher, tmp_path):
    """With warmup_epochs=1 the first epoch used to run at factor 0 throughout (a whole epoch of teacher forwards for
    nothing); now the factor ramps batch by batch, so the epoch's KD column is positive."""
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="mse", schedule={"warmup_epochs": 1})
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="warm", **TINY_TRAIN)
    assert float(read_results(tmp_path / "warm")[0]["train/mse"]) > 0


# ---------------------------------------------------------------------- 2. a refused run writes nothing
@pytest.mark.parametrize("bad", ["classes", "levels", "data_folder"])
def test_refused_run_leaves_earlier_run_byte_identical(tmp_path, tiny_data, tiny_teacher, bad):
    project = tmp_path / "runs"
    before = earlier_run(project)
    teacher, data = tiny_teacher, tiny_data
    if bad == "classes":
        teacher = fake_teacher(tmp_path / "t3.pt", nc=3, names={0: "a", 1: "b", 2: "c"})
        match = "differ from the dataset"
    elif bad == "levels":
        teacher = fake_teacher(tmp_path / "p2.pt", cfg="yolov8s-p2.yaml")
        match = "Detect levels"
    else:
        data = tmp_path / "images_only"
        (data / "images").mkdir(parents=True)
        match = "cannot be read as a detection data set"
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(teacher), method="pred")
    with pytest.raises(KDConfigError, match=match):
        model.train(data=str(data), epochs=1, project=str(project), name="run", exist_ok=True, **TINY_TRAIN)
    assert snapshot(project) == before


# ---------------------------------------------------------------------- 3. cls_pw reaches the student's loss
def test_class_weights_reach_the_students_criterion(tiny_data, tiny_teacher, tmp_path):
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="mse")
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="pw", cls_pw=1.0, **TINY_TRAIN)
    student = model.trainer.model.student  # Ultralytics set them on the distiller; the student's loss reads them
    assert student.class_weights is not None and student.class_weights.shape == (2,)
    assert student.criterion.class_weights is not None
    assert torch.equal(student.criterion.class_weights.flatten().cpu(), student.class_weights.cpu())


# ---------------------------------------------------------------------- 4. compile off: one student forward per step
def test_compile_is_disabled_and_the_student_runs_once_per_step(tiny_data, tiny_teacher, tmp_path):
    calls = {"forward": 0, "batches": 0}

    def count(module, inputs, output):
        if module.training:
            calls["forward"] += 1

    def on_pretrain_end(trainer):
        trainer.model.student.model[0].register_forward_hook(count)

    def on_batch_end(trainer):
        calls["batches"] += 1

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_pretrain_routine_end", on_pretrain_end)
    model.add_callback("on_train_batch_end", on_batch_end)
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="mse")
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="c", compile=True, **TINY_TRAIN)
    assert model.trainer.args.compile is False
    assert calls["batches"] > 0 and calls["forward"] == calls["batches"]


# ---------------------------------------------------------------------- 5, 6. atomic checkpoints, teachers loaded once
def test_checkpoints_are_replaced_not_rewritten_and_teacher_loaded_once(tiny_data, tiny_teacher, tmp_path):
    """Each save renames a complete temp file over best.pt and last.pt (a new inode), never rewrites in place."""
    inodes = []

    def on_model_save(trainer):
        inodes.append({n: (trainer.wdir / n).stat().st_ino for n in ("best.pt", "last.pt")})

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_model_save", on_model_save)
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="mse")
    model.train(data=str(tiny_data), epochs=2, project=str(tmp_path), name="a", **TINY_TRAIN)
    assert len(inodes) == 2
    assert inodes[0]["last.pt"] != inodes[1]["last.pt"]
    assert inodes[0]["best.pt"] != inodes[1]["best.pt"]  # tiny runs score 0 both epochs: best is saved both times
    weights = tmp_path / "a" / "weights"
    assert sorted(p.name for p in weights.iterdir()) == ["best.pt", "last.pt"]  # no temp file left
    assert model.trainer.model.pool.loads == 1  # checked before the run folder, kept for the stage


# ---------------------------------------------------------------------- combine: mean is a weighted mean
def test_combine_mean_target_is_the_weighted_mean_of_two_different_teachers(tiny_teacher, tmp_path):
    other = torch.load(tiny_teacher, map_location="cpu", weights_only=False)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in other["model"].parameters():
            p.add_(torch.randn_like(p) * 0.05)
    torch.save(other, tmp_path / "other.pt")
    cfg = {"teachers": {"a": str(tiny_teacher), "b": str(tmp_path / "other.pt")},
           "stages": [{"fraction": [0, 1], "teachers": ["a", "b"], "teacher_weights": [3.0, 1.0], "combine": "mean",
                       "methods": "mse+pred"}]}
    student = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    d = Distiller(student, Recipe.from_kwargs(cfg=cfg), epochs=1, names=NAMES)
    d.set_epoch(0)
    img = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        s_taps = head_taps(d.student.train()(img))
    [(owner, mean, weight)] = d._teacher_target(d.recipe.stages[0], img, None, s_taps)
    teachers = d.pool.acquire(["a", "b"], img.device)
    with torch.no_grad():
        a, b = (head_taps(teachers[n](img)) for n in ("a", "b"))
    assert (owner, weight) == ("a", 1.0)
    assert not torch.allclose(a.scores, b.scores)  # two different teachers
    torch.testing.assert_close(mean.scores, (3 * a.scores + b.scores) / 4)
    p_a, p_b = (x.boxes.reshape(2, 4, 16, -1).softmax(2) for x in (a, b))  # boxes: the mixture of distributions
    torch.testing.assert_close(mean.boxes.reshape(2, 4, 16, -1).exp(), (3 * p_a + p_b) / 4)
    torch.testing.assert_close(mean.feats[1], (3 * a.feats[1] + b.feats[1]) / 4)
