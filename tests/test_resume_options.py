"""Issue 31: the ways a user's call could go wrong silently: yolo-kd keys given at resume (one rule for every key: a
value equal to last.pt's is accepted, a different one is refused in one line naming the key and both values, before
anything is written), a `save_model` override that reads `self.last`, a second `add_callbacks`, the CLI usage, and
AutoBatch / `time=` (refused in one line)."""

import shutil
import subprocess
import sys

import pytest
import torch
from conftest import TINY_TRAIN, read_results
from ultralytics import YOLO
from ultralytics.models.yolo.detect import DetectionTrainer

import yolo_kd
from yolo_kd import KDConfigError
from yolo_kd.api import KD_OPTIONS
from yolo_kd.cli import USAGE


@pytest.fixture(scope="module")
def resumable(tiny_data, tiny_teacher, tiny_pool, tmp_path_factory):
    """A run folder whose last.pt is epoch 1 of 2 (method pred, a pool): resumable, for each test to copy."""
    root = tmp_path_factory.mktemp("resumable")
    saved = root / "epoch1.pt"
    model = YOLO("yolov8n.yaml")
    model.add_callback("on_model_save", lambda t: t.epoch == 0 and shutil.copy(t.last, saved))
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="pred", unlabeled=str(tiny_pool))
    model.train(data=str(tiny_data), epochs=2, project=str(root), name="run", **TINY_TRAIN)
    return saved


def resumable_copy(saved, tmp_path):
    """A run folder at `tmp_path/run` whose weights/last.pt is `saved`, resuming into that folder."""
    last = tmp_path / "run" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    ckpt = torch.load(saved, map_location="cpu", weights_only=False)
    ckpt["train_args"]["save_dir"] = str(tmp_path / "run")
    torch.save(ckpt, last)
    return last


@pytest.mark.parametrize("key, value, saved", [("unlabeled_ratio", "0.5", "1.0"), ("weights", "9", "'pred': 1.0"),
                                               ("unlabeled", "OTHER", "pool")])
def test_a_key_that_differs_from_last_pt_is_refused_at_resume(resumable, tmp_path, key, value, saved):
    last = resumable_copy(resumable, tmp_path)
    if value == "OTHER":
        other = tmp_path / "other_pool"
        shutil.copytree(torch.load(last, weights_only=False)["yolo_kd"]["recipe"]["unlabeled"][0], other)
        value = str(other)
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    out = subprocess.run([sys.executable, "-m", "yolo_kd.cli", "train", f"resume={last}", f"{key}={value}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    line = out.stderr.strip()
    assert len(line.splitlines()) == 1 and f"{key}={value}" in line and saved in line, line
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before  # nothing written


def test_method_change_through_the_python_api_is_one_line(resumable, tiny_teacher, tmp_path):
    model = YOLO(str(resumable_copy(resumable, tmp_path)))
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="fgd")
    with pytest.raises(KDConfigError, match="resume: method=fgd differs from last.pt's method=pred") as e:
        model.train(resume=True)
    assert "\n" not in str(e.value)


def test_a_key_equal_to_last_pt_resumes(resumable, tiny_teacher, tmp_path):
    """The teacher given again (and no method: the default is not taken as given) resumes last.pt's recipe."""
    model = YOLO(str(resumable_copy(resumable, tmp_path)))
    yolo_kd.distill(model, teacher=str(tiny_teacher), unlabeled_ratio=1.0)
    model.train(resume=True)
    rows = read_results(tmp_path / "run")
    assert rows[-1]["epoch"] == "2" and float(rows[-1]["train/pred_cls"]) > 0 and "train/sl2" not in rows[-1]


class CopyingTrainer(DetectionTrainer):
    """A user's trainer whose save_model copies the checkpoint it just wrote (plain Ultralytics runs it)."""

    def save_model(self):
        saved = super().save_model()
        shutil.copy(self.last, self.save_dir / "copy.pt")
        return saved


@pytest.mark.parametrize("way", ["distill", "add_callbacks"])
def test_a_save_model_override_that_reads_self_last_works(tiny_data, tiny_teacher, tmp_path, way):
    model = YOLO("yolov8n.yaml")
    getattr(yolo_kd, way)(model, teacher=str(tiny_teacher), method="pred")
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="run", trainer=CopyingTrainer,
                **TINY_TRAIN)
    copy = torch.load(tmp_path / "run" / "copy.pt", map_location="cpu", weights_only=False)
    assert copy["epoch"] == 0 and copy["ema"] is not None
    assert YOLO(str(tmp_path / "run" / "weights" / "last.pt")).ckpt["yolo_kd"]["recipe"]  # last.pt has its KD state


def test_a_second_add_callbacks_replaces_the_first(tiny_data, tiny_teacher, tmp_path):
    model = YOLO("yolov8n.yaml")
    yolo_kd.add_callbacks(model, teacher=str(tiny_teacher), method="mse")
    yolo_kd.add_callbacks(model, teacher=str(tiny_teacher), method="pred", weights=5)
    assert sum(type(f).__name__ == "Attach" for f in model.callbacks["on_pretrain_routine_start"]) == 1
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="run", **TINY_TRAIN)
    row = read_results(tmp_path / "run")[0]
    assert float(row["train/pred_cls"]) > 0 and "train/mse" not in row


def test_the_cli_usage_lists_every_key():
    assert [k for k in KD_OPTIONS if k not in USAGE] == []
    out = subprocess.run([sys.executable, "-m", "yolo_kd.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert "unlabeled_ratio" in out.stdout and "unlabeled_bn" in out.stdout


@pytest.mark.parametrize("train, says", [({"batch": -1}, "batch=-1 \\(AutoBatch\\)"), ({"batch": 0.7}, "AutoBatch"),
                                         ({"time": 0.01}, "time=0.01 re-estimates the epochs")])
def test_autobatch_and_time_are_refused_before_the_run_folder(tiny_data, tiny_teacher, tmp_path, train, says):
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher))
    with pytest.raises(KDConfigError, match=says) as e:
        model.train(data=str(tiny_data), epochs=1, project=str(tmp_path / "runs"), name="run",
                    **{**TINY_TRAIN, **train})
    assert "\n" not in str(e.value) and not (tmp_path / "runs").exists()
