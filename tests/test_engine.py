"""Issue 2: the distillation engine inside the real Ultralytics trainer (tiny data, 1-2 epochs, CPU)."""

import math
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAIN, read_results
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel

import yolo_kd
from yolo_kd.distiller import Distiller


@pytest.fixture(scope="module")
def mse_run(tiny_data, tiny_teacher, tmp_path_factory):
    """A 2-epoch drop-in distillation run; records adapter weights and optimizer membership along the way."""
    project = tmp_path_factory.mktemp("kd_mse")
    seen = {}

    def adapters(module):
        return {k: v.detach().clone() for k, v in module.methods.state_dict().items()}

    def on_pretrain_end(trainer):
        distiller = trainer.model
        seen["adapters_before"] = adapters(distiller)
        seen["ema_steps"] = [(trainer.ema.updates, adapters(trainer.ema.ema), seen["adapters_before"])]
        in_opt = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
        seen["adapters_in_optimizer"] = all(id(p) in in_opt for p in distiller.methods.parameters())

    def on_train_start(trainer):  # before the first step: the teacher as the pool loaded it
        seen["teacher_before"] = {n: {k: v.clone() for k, v in t.state_dict().items()}
                                  for n, t in trainer.model.pool.loaded.items()}

    def on_batch_end(trainer):
        teachers = trainer.model.pool.loaded
        seen.setdefault("teachers_seen", []).append(len(teachers))
        seen["ema_steps"].append((trainer.ema.updates, adapters(trainer.ema.ema), adapters(trainer.model)))
        in_opt = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
        for t in teachers.values():
            seen["teacher_after"] = t.state_dict()
            seen.setdefault("teacher_modes", set()).add(t.training)
            seen.setdefault("teacher_grads", set()).add(any(p.grad is not None for p in t.parameters()))
            seen.setdefault("teacher_params_in_optimizer", set()).add(any(id(p) in in_opt for p in t.parameters()))

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_pretrain_routine_end", on_pretrain_end)
    model.add_callback("on_train_start", on_train_start)
    model.add_callback("on_train_batch_end", on_batch_end)
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="mse")
    model.train(data=str(tiny_data), epochs=2, project=str(project), name="run", **TINY_TRAIN)
    return {"dir": project / "run", "trainer": model.trainer, "seen": seen, "teacher": tiny_teacher}


def test_teacher_frozen_and_bit_identical(mse_run):
    """The in-memory teacher (the one that ran) after the last step equals itself before the first, buffers too, and
    the checkpoint as loaded afresh (same dtype: no AMP cast left behind)."""
    from yolo_kd.recipe import TeacherSpec
    from yolo_kd.teachers import load_teacher

    seen = mse_run["seen"]
    assert seen["teachers_seen"] and all(n == 1 for n in seen["teachers_seen"])  # checked on the live teacher
    [before] = seen["teacher_before"].values()
    after = seen["teacher_after"]
    fresh = load_teacher("teacher", TeacherSpec(model=str(mse_run["teacher"]))).state_dict()
    assert before.keys() == after.keys() == fresh.keys() and len(before) > 0
    assert all(torch.equal(before[k], after[k]) and torch.equal(fresh[k], after[k]) for k in before)
    assert seen["teacher_modes"] == {False}  # always eval
    assert seen["teacher_grads"] == {False}  # never a gradient
    assert seen["teacher_params_in_optimizer"] == {False}


def test_adapters_trained_and_in_optimizer(mse_run):
    distiller = mse_run["trainer"].model
    assert isinstance(distiller, Distiller)
    assert mse_run["seen"]["adapters_in_optimizer"]
    before = mse_run["seen"]["adapters_before"]
    after = distiller.methods.state_dict()
    assert len(before) > 0
    assert any(not torch.equal(before[k], after[k]) for k in before), "adapters did not change"
    steps = mse_run["seen"]["ema_steps"]  # (ema.updates, EMA adapters, live adapters) at each batch end
    checked = 0
    for (n0, ema0, _), (n1, ema1, live1) in zip(steps, steps[1:]):
        if n1 == n0 + 1:  # one EMA update: ema1 = ema0 + (1 - d) * (live1 - ema0), d = 0.9999 * (1 - exp(-n / 2000))
            d = 0.9999 * (1 - math.exp(-n1 / 2000))
            for k, v in ema0.items():
                if v.dtype.is_floating_point:
                    torch.testing.assert_close(ema1[k], v + (1 - d) * (live1[k] - v), rtol=1e-5, atol=1e-7)
            checked += 1
    assert checked >= 2
    assert any(not torch.equal(steps[0][1][k], steps[-1][1][k]) for k in steps[0][1])  # the EMA moved


def test_kd_columns_finite_nonzero(mse_run):
    rows = read_results(mse_run["dir"] / "results.csv")
    assert len(rows) == 2
    for row in rows:
        v = float(row["train/mse"])
        assert v == v and 0 < v < float("inf")
        assert row["kd_stage"] == "1"


def test_checkpoints_are_plain_ultralytics(mse_run):
    weights = mse_run["dir"] / "weights"
    for name in ("best.pt", "last.pt"):
        with zipfile.ZipFile(weights / name) as z:
            pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
        assert b"yolo_kd." not in pkl, f"{name} references yolo_kd classes"
        assert b"RecordingHook" not in pkl
    ckpt = torch.load(weights / "best.pt", map_location="cpu", weights_only=False)
    assert type(ckpt["model"]).__name__ == "DetectionModel"
    n_student = sum(p.numel() for p in ckpt["model"].parameters())
    plain = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    assert n_student == sum(p.numel() for p in plain.parameters())  # no teacher, no adapters


def test_best_loads_where_yolo_kd_cannot_be_imported(mse_run, tiny_data):
    best = mse_run["dir"] / "weights" / "best.pt"
    image = next((Path(tiny_data).parent / "images" / "val").glob("*.jpg"))
    code = (
        "import sys; sys.modules['yolo_kd'] = None\n"  # any 'import yolo_kd' now raises ImportError
        "from ultralytics import YOLO\n"
        f"r = YOLO({str(best)!r}).predict({str(image)!r}, imgsz=64, conf=0.0, verbose=False)\n"
        "print('PREDICTED', len(r[0].boxes))\n"
        "import yolo_kd\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "PREDICTED" in out.stdout, out.stderr[-2000:]  # loaded and predicted without yolo_kd
    assert "ImportError" in out.stderr or "ModuleNotFoundError" in out.stderr, out.stderr[-2000:]  # it was blocked


def test_zero_weight_equals_plain_run(tiny_data, tiny_teacher, tmp_path):
    """Over 2 epochs (mosaic on, so the random stream matters): the plain run with yolo-kd's per-epoch reseed, as the
    bench and the demo train their baselines, is the KD run at weight 0, epoch for epoch."""
    from yolo_kd.hooks import reseed

    args = dict(data=str(tiny_data), epochs=2, project=str(tmp_path), **{**TINY_TRAIN, "mosaic": 1.0})
    plain = YOLO("yolov8n.yaml")
    plain.add_callback("on_train_epoch_start", reseed)
    plain.train(name="plain", **args)
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="mse", weights=0.0)
    model.train(name="kd0", **args)
    plain, kd = read_results(tmp_path / "plain" / "results.csv"), read_results(tmp_path / "kd0" / "results.csv")
    for epoch in (0, 1):
        for key in ("train/box_loss", "train/cls_loss", "train/dfl_loss", "val/box_loss", "val/cls_loss"):
            assert float(plain[epoch][key]) == pytest.approx(float(kd[epoch][key]), rel=1e-6, abs=1e-9), key
        assert float(kd[epoch]["train/mse"]) == 0.0


def test_cli_entry_point(tiny_data, tiny_teacher, tmp_path):
    cmd = [sys.executable, "-m", "yolo_kd.cli", "train", "model=yolov8n.yaml", f"teacher={tiny_teacher}",
           f"data={tiny_data}", "method=mse", "epochs=1", f"project={tmp_path}", "name=cli"]
    cmd += [f"{k}={v}" for k, v in TINY_TRAIN.items()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    row = read_results(tmp_path / "cli" / "results.csv")[0]
    assert float(row["train/mse"]) > 0


def test_cli_user_error_is_one_line(tmp_path, tiny_data):
    out = subprocess.run([sys.executable, "-m", "yolo_kd.cli", "train", "model=yolov8n.yaml",
                          f"teacher={tmp_path / 'missing.pt'}", f"data={tiny_data}", f"project={tmp_path}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "not found" in lines[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "train").exists() and list(tmp_path.iterdir()) == []
