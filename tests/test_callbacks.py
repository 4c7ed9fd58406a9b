"""Issue 24 item 1 and issue 21 (resume): distillation through Ultralytics callbacks on any trainer (tiny data, CPU).

Three real runs: the stock trainer with `add_callbacks` (1 epoch); a user's `DetectionTrainer` subclass with its own
`get_dataloader` (3 epochs, uninterrupted); the same subclass interrupted after epoch 1 (its last.pt written) and
resumed from last.pt.
"""

import logging
import pickle
import re
from typing import ClassVar

import pytest
import torch
from conftest import TINY_TRAIN, read_results
from ultralytics import YOLO
from ultralytics.models.yolo.detect import DetectionTrainer

import yolo_kd
from yolo_kd.distiller import Distiller

LOSSES = ("train/box_loss", "train/cls_loss", "train/dfl_loss", "train/mse")


class CountingTrainer(DetectionTrainer):
    """A user's trainer: its own get_dataloader override, counting calls per mode (class-level, across runs)."""

    calls: ClassVar[list] = []

    def get_dataloader(self, dataset_path, batch_size=16, rank=0, mode="train"):
        CountingTrainer.calls.append(mode)
        return super().get_dataloader(dataset_path, batch_size, rank, mode)


class LogLines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


class Interrupted(Exception):
    """Raised by a callback to stop a run the way a crash does (last.pt of the epoch already written)."""


def interrupt_after_first_save(trainer):
    if trainer.epoch == 0:
        raise Interrupted


def recorder(seen: dict):
    """on_pretrain_routine_end / on_train_end hooks that record the distiller's adapters and the trainer."""

    def at_start(trainer):
        seen["trainer"] = trainer
        seen["start_epoch"] = trainer.start_epoch
        seen["adapters_start"] = {k: v.detach().clone() for k, v in trainer.model.methods.state_dict().items()}
        seen["ema_adapters_start"] = {k: v.detach().clone() for k, v in trainer.ema.ema.methods.state_dict().items()}
        seen["optimizer_start"] = {id(p): {k: v.detach().clone() for k, v in trainer.optimizer.state[p].items()}
                                   for p in trainer.model.methods.parameters() if p in trainer.optimizer.state}
        seen["adapter_index"] = adapter_indices(trainer)

    return at_start


def adapter_indices(trainer) -> dict[int, int]:
    """id(adapter parameter) -> its index in the optimizer's state dict (parameters numbered across groups)."""
    order = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    index = {id(p): i for i, p in enumerate(order)}
    return {id(p): index[id(p)] for p in trainer.model.methods.parameters()}


def train(model, seen: dict, **kwargs):
    model.add_callback("on_pretrain_routine_end", recorder(seen))
    yolo_kd.add_callbacks(model, **({"teacher": seen.pop("teacher")} if "teacher" in seen else {}), method="mse")
    return model.train(**kwargs)


@pytest.fixture(scope="module")
def runs(tiny_data, tiny_teacher, tmp_path_factory):
    project = tmp_path_factory.mktemp("kd_callbacks")
    # mosaic for epochs 1-2 (random image picks and affine draws), SGD (Ultralytics saves its momentum in float16)
    args = dict(data=str(tiny_data), project=str(project), optimizer="SGD", close_mosaic=1,
                **{**TINY_TRAIN, "mosaic": 1.0})
    out = {}

    CountingTrainer.calls.clear()
    out["stock"] = {"teacher": str(tiny_teacher)}
    train(YOLO("yolov8n.yaml"), out["stock"], epochs=1, name="stock", **args)
    assert CountingTrainer.calls == []  # the stock trainer ran, not the user's

    out["user"] = {"teacher": str(tiny_teacher)}
    lines = LogLines()
    logging.getLogger("ultralytics").addHandler(lines)
    try:
        train(YOLO("yolov8n.yaml"), out["user"], epochs=3, name="user", trainer=CountingTrainer, **args)
    finally:
        logging.getLogger("ultralytics").removeHandler(lines)
    out["user_log"] = [line for line in lines.lines if "of the loss" in line]
    out["user_calls"] = list(CountingTrainer.calls)

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_model_save", interrupt_after_first_save)
    out["cut"] = {"teacher": str(tiny_teacher)}
    with pytest.raises(Interrupted):
        train(model, out["cut"], epochs=3, name="cut", trainer=CountingTrainer, **args)
    last = project / "cut" / "weights" / "last.pt"
    out["saved"] = torch.load(last, map_location="cpu", weights_only=False)
    out["cut_rows"] = read_results(project / "cut")

    CountingTrainer.calls.clear()
    out["resumed"] = {}
    train(YOLO(str(last)), out["resumed"], resume=True, trainer=CountingTrainer)
    out["resumed_calls"] = list(CountingTrainer.calls)
    out["dirs"] = {name: project / name for name in ("stock", "user", "cut")}
    return out


@pytest.mark.parametrize("run", ["stock", "user"])
def test_callbacks_distil_on_any_trainer(runs, run):
    """KD columns non-zero, adapters trained (in the optimizer), best.pt a plain checkpoint YOLO() loads."""
    seen, folder = runs[run], runs["dirs"][run]
    trainer = seen["trainer"]
    assert isinstance(trainer.model, Distiller)
    assert type(trainer) is (DetectionTrainer if run == "stock" else CountingTrainer)  # no class of ours in play
    rows = read_results(folder)
    assert rows and all(float(r["train/mse"]) > 0 and r["kd_stage"] == "1" for r in rows)
    assert set(seen["adapter_index"])  # every adapter parameter is in the optimizer (indices found)
    after = trainer.model.methods.state_dict()
    assert any(not torch.equal(seen["adapters_start"][k], after[k]) for k in after), "adapters did not change"
    best = folder / "weights" / "best.pt"
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    assert type(ckpt["model"]).__name__ == "DetectionModel" and "yolo_kd" not in ckpt
    assert not any(k.startswith("methods.") for k in ckpt["model"].state_dict())
    YOLO(str(best)).predict(torch.zeros(1, 3, 64, 64), imgsz=64, verbose=False)  # stock Ultralytics loads it


def test_user_get_dataloader_override_ran(runs):
    assert runs["user_calls"] == ["train", "val"]
    assert runs["resumed_calls"] == ["train", "val"]


def test_resume_on_the_user_subclass_restores_kd_state(runs):
    saved, seen = runs["saved"], runs["resumed"]
    assert saved["epoch"] == 0 and len(runs["cut_rows"]) == 1
    assert seen["start_epoch"] == 1 and type(seen["trainer"]) is CountingTrainer
    kd = saved["yolo_kd"]
    live = {k.removeprefix("methods."): v for k, v in kd["continue"]["model"].items() if k.startswith("methods.")}
    for got, want in ((seen["adapters_start"], live), (seen["ema_adapters_start"], kd["adapters"])):
        assert got.keys() == want.keys() and len(got) > 0
        assert all(torch.equal(got[k].float().cpu(), want[k].float()) for k in want)
    assert any(not torch.equal(live[k], kd["adapters"][k]) for k in live)  # the live adapters are not the EMA's
    # the adapters' optimizer state (Ultralytics' optimizer holds them) comes back from last.pt, at full precision
    # where Ultralytics rounded it (SGD's momentum buffer, float16 in its "optimizer")
    state, full = saved["optimizer"]["state"], kd["continue"]["optimizer"]
    restored = 0
    for pid, idx in seen["adapter_index"].items():
        for k, v in seen["optimizer_start"].get(pid, {}).items():
            if torch.is_tensor(v) and v.ndim:
                assert state[idx][k].dtype == torch.float16 and torch.equal(v, full[idx][k]), k
                restored += 1
    assert restored > 0
    rows = read_results(runs["dirs"]["cut"])
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert all(float(r["train/mse"]) > 0 for r in rows)


def test_resumed_run_continues_the_uninterrupted_one(runs):
    """Issue 21: cut after epoch 1 and resumed, the run logs what the uninterrupted run logged, epoch by epoch."""
    whole, resumed = read_results(runs["dirs"]["user"]), read_results(runs["dirs"]["cut"])
    assert [r["epoch"] for r in resumed] == [r["epoch"] for r in whole] == ["1", "2", "3"]
    for a, b in zip(whole, resumed):
        for key in (*LOSSES, "val/box_loss", "val/cls_loss", "metrics/mAP50-95(B)"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-6), (a["epoch"], key)


def test_a_finished_last_pt_holds_no_resume_tensors(runs):
    saved = runs["saved"]["yolo_kd"]["continue"]  # a mid-run last.pt has them
    assert saved["model"].keys() == runs["user"]["trainer"].model.state_dict().keys()
    assert saved["optimizer"] and all("momentum_buffer" in v for v in saved["optimizer"].values())
    for name in ("user", "cut"):
        final = torch.load(runs["dirs"][name] / "weights" / "last.pt", map_location="cpu", weights_only=False)
        assert final["epoch"] == -1 and "continue" not in final["yolo_kd"] and final["yolo_kd"]["adapters"]


def test_distill_composes_with_the_users_trainer(tiny_data, tiny_teacher, tmp_path):
    """distill() no longer refuses trainer=: the KD trainer class is mixed in front of the user's."""
    CountingTrainer.calls.clear()
    model = yolo_kd.distill(YOLO("yolov8n.yaml"), teacher=str(tiny_teacher), method="mse")
    model.train(trainer=CountingTrainer, data=str(tiny_data), epochs=1, project=str(tmp_path), name="run",
                **TINY_TRAIN)
    assert isinstance(model.trainer, CountingTrainer) and isinstance(model.trainer, yolo_kd.KDTrainer)
    assert CountingTrainer.calls == ["train", "val"]
    row = read_results(tmp_path / "run")[0]
    assert float(row["train/mse"]) > 0 and row["kd_stage"] == "1"


def test_callbacks_refuse_bad_input_and_leave_no_run_folder(tiny_data, tiny_teacher, tmp_path):
    model = yolo_kd.add_callbacks(YOLO("yolov8n.yaml"), teacher=str(tiny_teacher))
    with pytest.raises(yolo_kd.KDConfigError, match="imgsz"):
        model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="bad", **{**TINY_TRAIN, "imgsz": 70})
    assert not (tmp_path / "bad").exists()


def test_kd_share_logged_each_epoch_and_no_val_kd_columns(runs):
    """Issue 24 item 4: one line per epoch with the KD share of the loss, the same share in `kd_share`; the
    validation KD columns (always 0) are gone, validation's detection losses stay."""
    rows = read_results(runs["dirs"]["user"])
    assert "val/mse" not in rows[0] and "val/box_loss" in rows[0] and "train/mse" in rows[0]
    assert len(runs["user_log"]) == 3
    for epoch, (row, line) in enumerate(zip(rows, runs["user_log"]), 1):
        train = [float(row[k]) for k in LOSSES]
        share = train[-1] / sum(train)  # the KD term over the whole loss, from the logged (rounded) items
        assert float(row["kd_share"]) == pytest.approx(share, rel=1e-3)
        got = re.fullmatch(rf"yolo-kd: epoch {epoch}: KD ([\d.]+)% of the loss \(mse ([\d.]+)%\)", line)
        assert got and all(float(g) == pytest.approx(100 * share, abs=0.06) for g in got.groups()), line



def test_callbacks_dict_pickles_and_checks_options_at_once(tiny_teacher):
    hooks = yolo_kd.callbacks(teacher=str(tiny_teacher), method="fgd")
    again = pickle.loads(pickle.dumps(hooks))  # what DDP and Ultralytics' tuner do with callbacks
    assert again.keys() == hooks.keys() and again["on_pretrain_routine_start"][0].recipe == hooks[
        "on_pretrain_routine_start"][0].recipe
    with pytest.raises(yolo_kd.KDConfigError, match="unknown yolo-kd option"):
        yolo_kd.callbacks(teacher=str(tiny_teacher), bogus=1)
    with pytest.raises(yolo_kd.KDConfigError):
        yolo_kd.callbacks(teacher=str(tiny_teacher), method="nope")



def test_teacher_at_its_own_size_through_callbacks_on_a_user_trainer(tiny_data, tiny_teacher, tmp_path):
    """The high-resolution train set and the per-batch downsample come with the callbacks too."""
    shapes = []

    def record_batches(trainer):  # a forward pre-hook on the distiller: the batch exactly as it is trained on
        trainer.model.register_forward_pre_hook(
            lambda module, args: shapes.append((args[0]["img"].shape[-1], args[0]["teacher_img"].shape[-1]))
            if module.training else None)

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_pretrain_routine_end", record_batches)
    yolo_kd.add_callbacks(model, teacher=str(tiny_teacher), method="pred", teacher_imgsz=128)
    model.train(trainer=CountingTrainer, data=str(tiny_data), epochs=1, project=str(tmp_path), name="hr",
                **TINY_TRAIN)
    assert shapes and set(shapes) == {(64, 128)}
    assert model.trainer.args.imgsz == 64  # validation and checkpoints stay at the student's size
    assert float(read_results(tmp_path / "hr")[0]["train/pred_cls"]) > 0


class WorkersTrainer(CountingTrainer):
    """Loads with two worker processes (Ultralytics sets workers=0 on CPU; GPU runs use workers)."""

    def get_dataloader(self, dataset_path, batch_size=16, rank=0, mode="train"):
        self.args.workers = 2
        return super().get_dataloader(dataset_path, batch_size, rank, mode)


@pytest.mark.parametrize("pool", [False, True])
def test_resume_continues_the_run_with_loader_workers(tiny_data, tiny_teacher, tiny_pool, tmp_path, pool):
    """With workers each epoch restarts them from the generator seeded for it, so their augmentation continues too;
    with a pool, the uninterrupted run's epoch 2 draws from the stream restarted at epoch 1's end and the resumed
    run's from one restarted at its start: the same images (the mse term reads them)."""
    args = dict(data=str(tiny_data), project=str(tmp_path), epochs=2, trainer=WorkersTrainer, optimizer="SGD",
                close_mosaic=0, **{**TINY_TRAIN, "mosaic": 1.0})
    kd = dict(teacher=str(tiny_teacher), method="mse", **({"unlabeled": str(tiny_pool)} if pool else {}))
    yolo_kd.add_callbacks(YOLO("yolov8n.yaml"), **kd).train(name="whole", **args)
    model = yolo_kd.add_callbacks(YOLO("yolov8n.yaml"), **kd)
    model.add_callback("on_model_save", interrupt_after_first_save)
    with pytest.raises(Interrupted):
        model.train(name="cut", **args)
    assert model.trainer.train_loader.num_workers == 2
    assert not pool or model.trainer.yolo_kd.unlabeled_loader.loader.num_workers == 2
    yolo_kd.add_callbacks(YOLO(str(tmp_path / "cut" / "weights" / "last.pt"))).train(resume=True,
                                                                                      trainer=WorkersTrainer)
    whole, resumed = read_results(tmp_path / "whole"), read_results(tmp_path / "cut")
    assert len(whole) == len(resumed) == 2
    for key in LOSSES:
        assert float(whole[1][key]) == pytest.approx(float(resumed[1][key]), rel=1e-4, abs=1e-6), key
