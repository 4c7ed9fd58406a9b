"""Issue 31: a run killed at any moment (a real SIGKILL) and resumed ends with the uninterrupted run's last
results.csv row, with gradient accumulation (`nbs` > batch, epochs that end mid-accumulation), mosaic on in the redone
epoch: killed between an epoch's results row and its last.pt without a pool, and mid-epoch with one, with online
pseudo-boxes (the default), with the teacher's boxes made once at the start (`unlabeled_boxes=label+0.001`, made
again on resume) and with the student's EMA relabeling the pool once the guard fires (`teacher_guard=relabel`: the
teacher known to score 0, so every validation fires and relabels; the boxes come back from last.pt) (both kills resume
from the same last.pt of the epoch before, so the pairs cover both kills and every pool)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import TINY_TRAIN, read_results
from ultralytics import YOLO

import yolo_kd

#: batch 4 on 8 images: 2 batches an epoch; nbs 12: a step every 3 batches, so epoch 1 ends with 2 batches of
#: gradients not yet stepped; no warm-up (it would hold accumulate at 1); mosaic on in epochs 1-2, off in 3
TRAIN = {**TINY_TRAIN, "nbs": 12, "warmup_epochs": 0, "mosaic": 1.0, "close_mosaic": 1}
EPOCHS = 3

KILL_SCRIPT = """
import json, os, signal, sys
from ultralytics import YOLO
from ultralytics.models.yolo.detect import DetectionTrainer
import yolo_kd

data, teacher, project, kill, pool, train, options = sys.argv[1:6] + [json.loads(sys.argv[6]), json.loads(sys.argv[7])]


class KilledBeforeLast(DetectionTrainer):
    def save_model(self):  # epoch 2's results.csv row is written; its last.pt is not
        if kill == "before_last" and self.epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().save_model()


def killed_mid_epoch(trainer):
    if kill == "mid_epoch" and trainer.epoch == 1:  # after epoch 2's first batch
        os.kill(os.getpid(), signal.SIGKILL)


def known_score(trainer):
    trainer.model.teacher_scores["teacher"] = 0.0


model = YOLO("yolov8n.yaml")
model.add_callback("on_train_batch_end", killed_mid_epoch)
model.add_callback("on_train_start", known_score)
yolo_kd.distill(model, teacher=teacher, **({"unlabeled": pool, **options} if pool != "-" else {}))
model.train(data=data, epochs={epochs}, project=project, name="run", trainer=KilledBeforeLast, **train)
""".replace("{epochs}", str(EPOCHS))


POOLS = {None: {}, "match": {"unlabeled_boxes": "match"}, "label": {"unlabeled_boxes": "label+0.001"},
         "relabel": {"unlabeled_boxes": "label+0.001", "teacher_guard": "relabel"}}


def known_score(trainer):
    """The teacher's validation score, known to be 0 (the tiny set's): a guarded run's guard fires at once."""
    trainer.model.teacher_scores["teacher"] = 0.0


def train(tmp_path, data, teacher, pool, boxes):
    model = YOLO("yolov8n.yaml")
    model.add_callback("on_train_start", known_score)
    yolo_kd.distill(model, teacher=str(teacher), **({"unlabeled": str(pool), **POOLS[boxes]} if pool else {}))
    model.train(data=str(data), epochs=EPOCHS, project=str(tmp_path), name="run", **TRAIN)
    return read_results(tmp_path / "run")


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tiny_teacher, tiny_pool, tmp_path_factory):
    """The last results.csv row of the uninterrupted run, without a pool and with each pool."""
    return {boxes: train(tmp_path_factory.mktemp(f"whole_{boxes}"), tiny_data, tiny_teacher,
                         tiny_pool if boxes else None, boxes)[-1] for boxes in POOLS}


def same_row(a: dict, b: dict) -> list[str]:
    """Columns (all but the wall time) whose values differ at 4 decimals."""
    return [k for k in a if k != "time" and round(float(a[k]), 4) != round(float(b[k]), 4)]


@pytest.mark.parametrize("kill, boxes", [("before_last", None), ("mid_epoch", "match"), ("mid_epoch", "label"),
                                         ("mid_epoch", "relabel")])
def test_a_killed_run_resumes_to_the_uninterrupted_row(kill, boxes, tiny_data, tiny_teacher, tiny_pool,
                                                        uninterrupted, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(KILL_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(tiny_data), str(tiny_teacher), str(tmp_path), kill,
                          str(tiny_pool) if boxes else "-", json.dumps(TRAIN), json.dumps(POOLS[boxes])],
                         capture_output=True, text=True,
                         timeout=600, env={**os.environ, "YOLO_OFFLINE": "1"})
    assert out.returncode == -9, out.stderr[-3000:]  # really killed
    run = tmp_path / "run"
    rows = read_results(run)
    assert [r["epoch"] for r in rows] == (["1", "2"] if kill == "before_last" else ["1"])
    model = YOLO(str(run / "weights" / "last.pt"))
    assert model.ckpt["epoch"] == 0  # epoch 2 is redone from epoch 1's last.pt, with its accumulated gradients
    assert model.ckpt["yolo_kd"]["continue"]["grads"] and model.ckpt["yolo_kd"]["continue"]["last_opt_step"] == -1
    yolo_kd.distill(model)
    model.train(resume=True)
    last = read_results(run)[-1]
    assert last["epoch"] == str(EPOCHS)
    assert same_row(last, uninterrupted[boxes]) == [], (last, uninterrupted[boxes])


def optimizer_steps(trainer) -> int:
    return max((int(s["step"]) for s in trainer.optimizer.state.values() if "step" in s), default=0)


def test_the_engine_steps_the_optimizer_when_ultralytics_would(tiny_data, tiny_teacher, tmp_path):
    """With accumulation and a warm-up that ramps it (nbs 12, batch 4, warm-up over the first epoch), the engine's
    step counter steps the optimizer after the same batches as Ultralytics' own loop does in a plain run."""
    train = {**TINY_TRAIN, "nbs": 12, "warmup_epochs": 1, "optimizer": "AdamW", "epochs": 2}
    seen = {}
    for name, kd in (("plain", None), ("kd", {"teacher": str(tiny_teacher)})):
        model = YOLO("yolov8n.yaml")
        model.add_callback("on_train_batch_end", lambda t, n=name: seen.setdefault(n, []).append(optimizer_steps(t)))
        if kd:
            yolo_kd.distill(model, **kd)
        model.train(data=str(tiny_data), project=str(tmp_path), name=name, **train)
    assert seen["kd"] == seen["plain"] and len(seen["plain"]) == 4
    assert seen["plain"][-1] < 4  # accumulation really skipped steps
