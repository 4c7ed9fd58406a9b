"""Issue 8: reliability. Clear errors before training (nothing written), odd but valid data during training,
non-finite KD terms, crash (SIGKILL) and resume, plain checkpoints, DDP (gloo on CPU) and auto balance.

Everything is real Ultralytics training on the tiny 64 px dataset; nothing of Ultralytics or torch is mocked.
"""

import inspect
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import (DDP_WORKER_EXIT, TINY_NAMES, TINY_TRAIN, make_tiny_dataset, read_results, run_gloo_ranks,
                      train_tiny)
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel

import yolo_kd
from yolo_kd import KDConfigError
from yolo_kd.distiller import Distiller
from yolo_kd.methods import Method
from yolo_kd.methods.feature import channel_aligners
from yolo_kd.recipe import Recipe

NAMES = dict(enumerate(TINY_NAMES))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def previous_run(project: Path, name: str = "run") -> dict[str, bytes]:
    """Files of an earlier run in project/name (which exist_ok=True reuses); returns a snapshot of the project."""
    run = project / name
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "last.pt").write_bytes(b"an earlier run's last.pt " + os.urandom(256))
    (run / "results.csv").write_text("epoch,time\n1,2.5\n")
    (run / "args.yaml").write_text("epochs: 1\n")
    return snapshot(project)


def start_training(project: Path, data, teacher, model: str = "yolov8n.yaml", method: str = "fgd", kd=None, **train):
    """The drop-in API on a run directory that already exists (exist_ok=True)."""
    student = YOLO(model)
    yolo_kd.distill(student, teacher=str(teacher), method=method, **(kd or {}))
    student.train(data=str(data), epochs=1, project=str(project), name="run", exist_ok=True, **{**TINY_TRAIN, **train})
    return student


def finite_floats(row: dict, keys) -> list[float]:
    values = [float(row[k]) for k in keys]
    assert all(math.isfinite(v) for v in values), {k: row[k] for k in keys}
    return values


def unlabeled_dataset(root: Path, how: str) -> Path:
    """Tiny dataset whose train split has images but no labels: label files deleted, or all empty."""
    data = make_tiny_dataset(root, n_train=4, n_val=2)
    labels = root / "labels" / "train"
    if how == "missing":
        shutil.rmtree(labels)
    else:
        for i, f in enumerate(sorted(labels.glob("*.txt"))):
            f.write_text("\n" if i % 2 else "")
    return data


# ---------------------------------------------------------------------- 1. clear errors before training starts
@pytest.mark.parametrize("how", ["missing", "empty"])
def test_dataset_without_labels_fails_before_anything_is_written(tmp_path, tiny_teacher, how):
    data = unlabeled_dataset(tmp_path / "data", how)
    project = tmp_path / "runs"
    before = previous_run(project)
    with pytest.raises(KDConfigError, match=r"^dataset \S+data\.yaml has no labels in its train split \(4 images, .*"
                                            r"add YOLO \.txt label files under labels/"):
        start_training(project, data, tiny_teacher)
    assert snapshot(project) == before  # not even args.yaml was rewritten, results.csv not deleted


def test_dataset_without_labels_given_as_directory(tmp_path, tiny_teacher):
    """A dataset directory (not a YAML) is resolved by Ultralytics first; the trainer's own check still stops it."""
    data = unlabeled_dataset(tmp_path / "data", "empty")
    project = tmp_path / "runs"
    before = previous_run(project)
    with pytest.raises(KDConfigError, match="has no labels in its train split"):
        start_training(project, data.parent, tiny_teacher)
    after = snapshot(project)
    assert sorted(p.name for p in project.rglob("*.pt")) == ["last.pt"]
    assert after["run/weights/last.pt"] == before["run/weights/last.pt"]
    assert after["run/results.csv"] == before["run/results.csv"]  # only Ultralytics' args.yaml was rewritten


def test_imgsz_off_the_stride_grid_fails_before_anything_is_written(tmp_path, tiny_data, tiny_teacher):
    project = tmp_path / "runs"
    before = previous_run(project)
    message = r"^imgsz=70 is not a multiple of the largest stride 32: use imgsz=64 or 96$"
    with pytest.raises(KDConfigError, match=message):
        start_training(project, tiny_data, tiny_teacher, imgsz=70)
    assert snapshot(project) == before


def test_imgsz_off_a_p6_students_grid(tmp_path, tiny_data, tiny_teacher):
    """96 is on Ultralytics' minimum grid (32) but not on a P6 student's (64): caught once the student exists."""
    project = tmp_path / "runs"
    before = previous_run(project)
    message = r"^imgsz=96 is not a multiple of the largest stride 64: use imgsz=64 or 128$"
    with pytest.raises(KDConfigError, match=message):
        start_training(project, tiny_data, tiny_teacher, model="yolov8n-p6.yaml", imgsz=96)
    assert sorted(p.name for p in project.rglob("*.pt")) == ["last.pt"]
    assert snapshot(project)["run/weights/last.pt"] == before["run/weights/last.pt"]


def test_teacher_imgsz_off_the_stride_grid(tmp_path, tiny_data, tiny_teacher):
    with pytest.raises(KDConfigError, match=r"^teacher 'teacher' imgsz=70 is not a multiple of its largest stride 32: "
                                            r"set teacher_imgsz \(or the recipe's teacher imgsz\) to 64 or 96$"):
        yolo_kd.distill(YOLO("yolov8n.yaml"), teacher=str(tiny_teacher), teacher_imgsz=70)
    # a P6 teacher (largest stride 64) at 96 px: caught when the teacher is loaded, before any epoch
    p6 = DetectionModel("yolov8s-p6.yaml", nc=2, verbose=False)
    p6.names = NAMES
    torch.save({"model": p6, "train_args": {}}, tmp_path / "p6.pt")
    project = tmp_path / "runs"
    with pytest.raises(KDConfigError, match=r"^teacher 'teacher' imgsz=96 is not a multiple of its largest stride 64: "
                                            r"set teacher_imgsz \(or the recipe's teacher imgsz\) to 64 or 128$"):
        start_training(project, tiny_data, tmp_path / "p6.pt", kd={"teacher_imgsz": 96})
    assert not list(project.rglob("*.pt"))


def test_teacher_with_other_channels(tmp_path, gray_data, tiny_teacher):
    project = tmp_path / "runs"
    with pytest.raises(KDConfigError, match="teacher 'teacher' takes 3-channel images but the student takes 1"):
        start_training(project, gray_data, tiny_teacher)
    assert not list(project.rglob("*.pt"))


@pytest.mark.parametrize("bad", ["imgsz", "labels"])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, tiny_data, tiny_teacher, bad):
    data = unlabeled_dataset(tmp_path / "data", "missing") if bad == "labels" else tiny_data
    project = tmp_path / "runs"
    project.mkdir()
    cmd = [sys.executable, "-m", "yolo_kd.cli", "train", "model=yolov8n.yaml", f"teacher={tiny_teacher}",
           f"data={data}", "method=fgd", "epochs=1", f"project={project}", "name=cli"]
    cmd += [f"{k}={v}" for k, v in {**TINY_TRAIN, **({"imgsz": 70} if bad == "imgsz" else {})}.items()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode == 2, out.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    expected = "imgsz=70 is not a multiple of the largest stride 32" if bad == "imgsz" else "has no labels in its train"
    assert lines[0].startswith("yolo-kd train: error: ") and expected in lines[0]
    assert list(project.iterdir()) == []


# ---------------------------------------------------------------------- 2. during training
class FlakyTerm(Method):
    """Feature MSE that is NaN on its first call and +Inf on its second, then finite (registered by a fixture)."""

    terms = ("flaky",)

    def __init__(self, student, teacher):
        super().__init__(student, teacher)
        self.align = channel_aligners(student.channels, teacher.channels)
        self.calls = 0

    def forward(self, s, t, targets):
        self.calls += 1
        value = sum(((a(fs) - ft) ** 2).mean() for a, fs, ft in zip(self.align, s.feats, t.feats))
        bad = {1: float("nan"), 2: float("inf")}.get(self.calls)
        return {"flaky": value if bad is None else value * bad}


@pytest.fixture
def flaky():
    yolo_kd.register("flaky")(FlakyTerm)
    try:
        yield "flaky"
    finally:
        yolo_kd.METHODS.pop("flaky", None)


def test_non_finite_kd_terms_are_dropped_and_counted(tiny_data, tiny_teacher, tmp_path, flaky):
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher), method=flaky)
    model.train(data=str(tiny_data), epochs=2, project=str(tmp_path), name="nan", **TINY_TRAIN)
    rows = read_results(tmp_path / "nan" / "results.csv")
    assert [r["kd_nan_skips"] for r in rows] == ["2", "2"]  # steps 1 (NaN) and 2 (Inf) of 4, both in epoch 1
    assert float(rows[0]["train/flaky"]) == 0.0  # both steps of epoch 1 dropped the term
    assert 0 < float(rows[1]["train/flaky"]) < float("inf")  # epoch 2 distils normally
    for row in rows:
        box, cls, dfl = finite_floats(row, ("train/box_loss", "train/cls_loss", "train/dfl_loss"))
        assert box > 0 and cls > 0
    ckpt = torch.load(tmp_path / "nan" / "weights" / "last.pt", map_location="cpu", weights_only=False)
    weights = ckpt["model"].float().state_dict()
    assert weights and all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert ckpt["yolo_kd"]["nan_skips"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["yolo_kd"]["adapters"].values())
    assert model.trainer.model.methods["teacher__flaky"].calls == 4


class BatchRecorder(yolo_kd.KDTrainer):
    """Records, per training batch, the smallest box side (px) and the number of images without boxes."""

    def preprocess_batch(self, batch):
        batch = super().preprocess_batch(batch)
        side = (batch["bboxes"][:, 2:] * batch["img"].shape[-1]).min().item() if len(batch["bboxes"]) else None
        empty = batch["img"].shape[0] - len(set(batch["batch_idx"].long().tolist()))
        self.__dict__.setdefault("seen", []).append((side, empty))
        return batch


def test_images_without_boxes_and_subcell_boxes_train(tiny_teacher, tmp_path):
    """Background images (empty and missing label files) and 3 px boxes (a tenth of a stride-32 cell) in batches."""
    root = tmp_path / "data"
    data = make_tiny_dataset(root, n_train=8, n_val=4, seed=1)
    labels = sorted((root / "labels" / "train").glob("*.txt"))
    labels[0].write_text("")
    labels[1].unlink()
    labels[2].write_text("0 0.023438 0.023438 0.046875 0.046875\n")  # a lone 3x3 px box in the corner
    with open(labels[3], "a") as f:
        f.write("1 0.5 0.5 0.046875 0.046875\n")
    recipe = Recipe.from_kwargs(teacher=str(tiny_teacher), method="fgd+pred")
    model = YOLO("yolov8n.yaml")  # no scale/translate, so augmentation keeps the 3 px boxes (Ultralytics drops <= 2 px)
    model.train(trainer=yolo_kd.trainer_for(recipe, base=BatchRecorder), data=str(data), epochs=1,
                project=str(tmp_path), name="odd", scale=0.0, translate=0.0, **TINY_TRAIN)
    seen = model.trainer.seen
    assert min(s for s, _ in seen if s is not None) < 4  # sub-cell boxes reached the loss
    assert sum(e for _, e in seen) >= 2  # so did images without boxes
    row = read_results(tmp_path / "odd" / "results.csv")[0]
    fgd, cls, ld = finite_floats(row, ("train/fgd", "train/pred_cls", "train/pred_ld", "train/box_loss"))[:3]
    assert fgd > 0 and cls > 0 and ld > 0
    assert row["kd_nan_skips"] == "0"


def make_distiller(teacher, method: str, seed: int = 0, **kd) -> Distiller:
    """A yolov8n student wrapped as the trainer does (args set, stage selected, training mode)."""
    from ultralytics.cfg import get_cfg

    torch.manual_seed(seed)
    student = DetectionModel("yolov8n.yaml", nc=len(NAMES), verbose=False)
    student.args, student.names = get_cfg(), NAMES
    teacher = None if "cfg" in kd else str(teacher)
    distiller = Distiller(student, Recipe.from_kwargs(teacher=teacher, method=method, **kd), epochs=1,
                          names=NAMES)
    distiller.set_epoch(0)
    return distiller.train()


def synthetic_batch(seed: int, n: int = 2, imgsz: int = 64, boxes=None) -> dict:
    """A batch as Ultralytics' loss reads it: img (n, 3, s, s) in [0, 1]; per box its image index, class and
    normalised xywh. `boxes` is a list of (image, cls, x, y, w, h); by default 1-3 random boxes per image."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(n, 3, imgsz, imgsz, generator=g) * 0.3
    if boxes is None:
        boxes = []
        for i in range(n):
            for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
                wh = 0.15 + 0.3 * torch.rand(2, generator=g)
                xy = wh / 2 + (1 - wh) * torch.rand(2, generator=g)
                boxes.append((i, int(torch.randint(0, 2, (1,), generator=g)), *xy.tolist(), *wh.tolist()))
    for i, _, x, y, w, h in boxes:  # paint the objects so that teacher and student see something
        x1, y1 = max(int((x - w / 2) * imgsz), 0), max(int((y - h / 2) * imgsz), 0)
        img[int(i), :, y1:y1 + max(int(h * imgsz), 1), x1:x1 + max(int(w * imgsz), 1)] = 0.9
    t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 6)
    return {"img": img, "batch_idx": t[:, 0], "cls": t[:, 1:2], "bboxes": t[:, 2:]}


@pytest.mark.parametrize("boxes", [
    [(1, 0, 1 / 64, 1 / 64, 2 / 64, 2 / 64), (1, 1, 0.5, 0.5, 1 / 64, 1 / 64), (2, 0, 0.5, 0.5, 0.4, 0.4)],
    [],
], ids=["empty-image-and-subpixel-boxes", "no-box-in-batch"])
def test_every_method_stays_finite_on_empty_images_and_tiny_boxes(tiny_teacher, boxes):
    distiller = make_distiller(tiny_teacher, "fgd+pred+cskd+mgd+cwd+mse")
    loss, items = distiller.loss(synthetic_batch(0, n=3, boxes=boxes))
    assert set(distiller.term_names) <= set(items)
    assert all(math.isfinite(float(v)) for v in items.values()), items
    assert torch.isfinite(loss).all() and distiller.nan_skips == 0
    loss.sum().backward()
    grads = [p.grad for p in distiller.parameters() if p.grad is not None]
    assert len(grads) > 100 and all(torch.isfinite(g).all() for g in grads)


def test_batch_size_one_with_fgd_and_cskd(tiny_data, tiny_teacher, tmp_path):
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="fgd+cskd")
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="b1", **{**TINY_TRAIN, "batch": 1, "nbs": 1})
    assert len(model.trainer.train_loader) == 8  # eight steps of one image
    row = read_results(tmp_path / "b1" / "results.csv")[0]
    assert all(v > 0 for v in finite_floats(row, ("train/fgd", "train/cskd_feat", "train/cskd_pred", "train/cskd_aux")))
    assert row["kd_nan_skips"] == "0"


@pytest.fixture(scope="module")
def gray_data(tmp_path_factory) -> Path:
    """The tiny dataset declared single-channel (`channels: 1`: Ultralytics reads the images as grayscale)."""
    data = make_tiny_dataset(tmp_path_factory.mktemp("gray_data"))
    data.write_text(data.read_text() + "channels: 1\n")
    return data


def test_single_channel_student_and_teacher(gray_data, tmp_path_factory, tmp_path):
    teacher = train_tiny(tmp_path_factory, "yolov8s.yaml", gray_data, 1, "gray_teacher")
    assert torch.load(teacher, weights_only=False)["model"].yaml["channels"] == 1
    model = start_training(tmp_path, gray_data, teacher, method="fgd+pred")
    distiller = model.trainer.model
    assert distiller.student.model[0].conv.in_channels == 1
    row = read_results(tmp_path / "run" / "results.csv")[0]
    assert all(v > 0 for v in finite_floats(row, ("train/fgd", "train/pred_cls", "train/pred_ld")))


# ---------------------------------------------------------------------- 3. crash (SIGKILL) and resume
KILLED_SCRIPT = """
import json, sys, time
from pathlib import Path
from ultralytics import YOLO
import yolo_kd

data, teacher, project, marker, train = sys.argv[1:4] + [Path(sys.argv[4]), json.loads(sys.argv[5])]

def hold_epoch_two(trainer):  # after the first optimizer step of epoch 2: say so, then wait to be killed
    if trainer.epoch == 1:
        marker.write_text("epoch 2 running")
        time.sleep(600)

model = YOLO("yolov8n.yaml")
model.add_callback("on_train_batch_end", hold_epoch_two)
yolo_kd.distill(model, teacher=teacher, method="fgd")
model.train(data=data, epochs=3, project=project, name="run", **train)
"""


@pytest.fixture(scope="module")
def killed_run(tiny_data, tiny_teacher, tmp_path_factory):
    """A 3-epoch fgd run in a subprocess, killed with SIGKILL in the middle of epoch 2 (after last.pt of epoch 1)."""
    root = tmp_path_factory.mktemp("killed")
    script, marker = root / "train.py", root / "epoch2.marker"
    script.write_text(KILLED_SCRIPT)
    log = open(root / "log.txt", "w")
    proc = subprocess.Popen([sys.executable, str(script), str(tiny_data), str(tiny_teacher), str(root / "runs"),
                             str(marker), json.dumps(TINY_TRAIN)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"training ended (rc {proc.returncode}) before it could be killed in epoch 2:\n"
                            + (root / "log.txt").read_text()[-3000:])
            if time.time() > deadline:
                pytest.fail("epoch 2 did not start within 180 s:\n" + (root / "log.txt").read_text()[-3000:])
            time.sleep(0.2)
        run = root / "runs" / "run"
        ckpt = torch.load(run / "weights" / "last.pt", map_location="cpu", weights_only=False)
        assert proc.poll() is None, "the training process finished before the kill"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert ckpt["epoch"] == 0 and ckpt["optimizer"] is not None and "yolo_kd" in ckpt
    return {"dir": run, "kd": ckpt["yolo_kd"], "rows": read_results(run / "results.csv")}


def moved_run(src: Path, dst: Path) -> Path:
    """A copy of a run directory whose last.pt resumes into the copy (the run directory was moved)."""
    shutil.copytree(src, dst)
    last = dst / "weights" / "last.pt"
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    ckpt["train_args"]["save_dir"] = str(dst)
    torch.save(ckpt, last)
    return last


def test_killed_run_left_a_whole_checkpoint(killed_run):
    assert len(killed_run["rows"]) == 1  # epoch 1 finished and was logged; epoch 2 died mid-way
    assert killed_run["kd"]["stage"] == 0 and killed_run["kd"]["adapters"]
    assert sorted(p.name for p in (killed_run["dir"] / "weights").iterdir()) == ["best.pt", "last.pt"]  # no temp files


def test_resume_after_sigkill_restores_adapters_and_stage(killed_run, tmp_path):
    last = moved_run(killed_run["dir"], tmp_path / "run")
    saved, seen = killed_run["kd"], {}

    def on_pretrain_end(trainer):
        seen["start_epoch"] = trainer.start_epoch
        seen["adapters"] = {k: v.detach().float().cpu().clone() for k, v in trainer.model.methods.state_dict().items()}
        seen["ema_adapters"] = {k: v.detach().float().cpu().clone()
                                for k, v in trainer.ema.ema.methods.state_dict().items()}

    def on_batch_start(trainer):
        seen.setdefault("stage", (trainer.model.stage, trainer.model.epoch))

    model = YOLO(str(last))
    model.add_callback("on_pretrain_routine_end", on_pretrain_end)
    model.add_callback("on_train_batch_start", on_batch_start)
    yolo_kd.distill(model)  # no teacher: the recipe comes back from last.pt
    model.train(resume=True)
    assert seen["start_epoch"] == 1
    live = {k.removeprefix("methods."): v for k, v in saved["continue"]["model"].items() if k.startswith("methods.")}
    for got, want in ((seen["adapters"], live), (seen["ema_adapters"], saved["adapters"])):  # live ones continue
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k].float()) for k in got)
    assert seen["stage"] == (saved["stage"], 1)
    rows = read_results(tmp_path / "run" / "results.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and [r["kd_stage"] for r in rows] == ["1", "1", "1"]
    assert all(float(r["train/fgd"]) > 0 for r in rows)
    final = torch.load(last, map_location="cpu", weights_only=False)
    assert final["epoch"] == -1  # training finished (Ultralytics strips the optimizer at the end)
    assert final["yolo_kd"]["stage"] == 0
    assert any(not torch.equal(final["yolo_kd"]["adapters"][k], saved["adapters"][k]) for k in saved["adapters"])
    for ckpt in (final, torch.load(last.with_name("best.pt"), map_location="cpu", weights_only=False)):
        assert_plain_checkpoint(ckpt)


def test_resume_after_sigkill_from_the_command_line(killed_run, tmp_path):
    last = moved_run(killed_run["dir"], tmp_path / "run")
    out = subprocess.run([sys.executable, "-m", "yolo_kd.cli", "train", f"resume={last}"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Resuming training" in out.stdout + out.stderr
    rows = read_results(tmp_path / "run" / "results.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and all(float(r["train/fgd"]) > 0 for r in rows)
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == -1


# ---------------------------------------------------------------------- 4. checkpoint content
ALLOWED_MODULES = {"builtins", "torch", "ultralytics", "numpy", "collections"}
PLAIN = (dict, list, tuple, str, int, float, bool, type(None), torch.Tensor)


def assert_plain_checkpoint(ckpt: dict) -> None:
    """Walk every object reachable from the checkpoint: each type (and each class or function stored) comes from
    builtins, torch, ultralytics, numpy or collections; the `yolo_kd` entry holds plain data only."""
    seen, stack, bad = set(), [ckpt], []
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        for where in {type(obj).__module__, getattr(obj, "__module__", None) if callable(obj) else None} - {None}:
            if where.split(".")[0] not in ALLOWED_MODULES:
                bad.append(f"{type(obj).__qualname__} from {where}")
        if isinstance(obj, dict):
            stack += list(obj.keys()) + list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack += list(obj)
        elif isinstance(obj, torch.Tensor) or isinstance(obj, type) or callable(obj) and not hasattr(obj, "__dict__"):
            continue
        elif hasattr(obj, "__dict__"):
            stack += list(vars(obj).values())
    assert not bad, sorted(set(bad))
    plain, stack = [], [ckpt.get("yolo_kd", {})]
    while stack:
        obj = stack.pop()
        plain.append(type(obj))
        if isinstance(obj, dict):
            stack += list(obj.keys()) + list(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack += list(obj)
    assert all(issubclass(t, PLAIN) for t in plain), {t for t in plain if not issubclass(t, PLAIN)}


def test_mid_run_checkpoint_holds_no_yolo_kd_objects(killed_run):
    ckpt = torch.load(killed_run["dir"] / "weights" / "last.pt", map_location="cpu", weights_only=False)
    assert isinstance(ckpt["ema"], DetectionModel) and ckpt["optimizer"] is not None  # a resumable, stock checkpoint
    assert_plain_checkpoint(ckpt)
    assert_plain_checkpoint(torch.load(killed_run["dir"] / "weights" / "best.pt", map_location="cpu",
                                       weights_only=False))
    with pytest.raises(AssertionError, match="from yolo_kd"):  # the walk does see a yolo_kd object when one is there
        assert_plain_checkpoint({**ckpt, "extra": [{"recipe": Recipe.from_kwargs(teacher="t.pt")}]})


# ---------------------------------------------------------------------- 5. DDP (2 processes, gloo, CPU)
DDP_WORKER = """
import json, os, sys
import torch
import torch.distributed as dist

rank, world, teacher, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.set_num_threads(1)
dist.init_process_group("gloo", rank=rank, world_size=world)
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel
from yolo_kd.distiller import Distiller
from yolo_kd.recipe import Recipe

{synthetic_batch}

names = {names!r}
torch.manual_seed(0)
student = DetectionModel("yolov8n.yaml", nc=len(names), verbose=False)
student.args, student.names = get_cfg(), names
distiller = Distiller(student, Recipe.from_kwargs(teacher=teacher, method="fgd+pred", auto_balance=0.5), epochs=1,
                      names=names)
distiller.set_epoch(0)
model = torch.nn.parallel.DistributedDataParallel(distiller, find_unused_parameters=True, broadcast_buffers=False)
model.train()
groups = {{"student": [p for p in distiller.student.parameters() if p.requires_grad],
          "adapters": [p for p in distiller.methods.parameters() if p.requires_grad]}}
flat = lambda ps: torch.cat([p.detach().flatten() for p in ps])
start = {{k: flat(ps).clone() for k, ps in groups.items()}}
optimizer = torch.optim.SGD(list(model.parameters()), lr=0.01, momentum=0.9)
losses = []
for step in range(3):
    loss, items = model(synthetic_batch(1000 * rank + step, n=2))  # each rank its own images and boxes
    loss.sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    losses.append(float(loss.sum()))

def gather(t):
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return parts

result = {{}}
for k, ps in groups.items():
    parts = gather(flat(ps))
    result[k] = {{"numel": parts[0].numel(), "identical": all(torch.equal(parts[0], p) for p in parts),
                 "changed": float((parts[0] - start[k]).abs().max())}}
result["losses"] = [p.tolist() for p in gather(torch.tensor(losses))]
result["balance_terms"] = sorted(distiller.balance)
result["balance"] = [p.tolist() for p in gather(torch.tensor([distiller.balance[k] for k in result["balance_terms"]]))]
if rank == 0:
    with open(out, "w") as f:
        f.write(json.dumps(result))
"""


def test_ddp_two_ranks_stay_in_sync(tiny_teacher, tmp_path):
    script, out = tmp_path / "worker.py", tmp_path / "result.json"
    worker = DDP_WORKER.format(synthetic_batch=inspect.getsource(synthetic_batch), names=NAMES)
    script.write_text(worker + DDP_WORKER_EXIT)
    run_gloo_ranks(script, ["2", str(tiny_teacher), str(out)], timeout=120)
    result = json.loads(out.read_text())
    for group in ("student", "adapters"):
        assert result[group]["numel"] > 1000
        assert result[group]["identical"], f"{group} parameters differ between ranks"
        assert result[group]["changed"] > 0, f"{group} parameters did not move"
    assert result["losses"][0] != result["losses"][1]  # the ranks really trained on different batches
    assert result["balance_terms"] == ["teacher/fgd", "teacher/pred_cls", "teacher/pred_ld"]
    assert result["balance"][0] == result["balance"][1]  # one auto-balance multiplier per term for all ranks


def test_ddp_launch_file_rebuilds_the_kd_trainer(tiny_data, tiny_teacher, tmp_path):
    """Ultralytics' DDP launch pickles the trainer class (cloudpickle) for its workers: in a fresh process, the class
    must come back with its recipe and train with distillation (here on CPU, one process)."""
    pytest.importorskip("cloudpickle")
    from ultralytics.utils.dist import ddp_cleanup, generate_ddp_file

    recipe = Recipe.from_kwargs(teacher=str(tiny_teacher), method="fgd")
    trainer = yolo_kd.trainer_for(recipe)(overrides=dict(model="yolov8n.yaml", data=str(tiny_data), epochs=1,
                                                         project=str(tmp_path), name="ddp", **TINY_TRAIN))
    file = generate_ddp_file(trainer)
    code = (
        "import runpy, sys\n"
        "from ultralytics.utils.patches import torch_load\n"
        f"state = torch_load({str(Path(file).with_suffix('.pt'))!r}, map_location='cpu')\n"
        "import yolo_kd.trainer, yolo_kd.hooks\n"
        "assert issubclass(state['trainer'], yolo_kd.trainer.KDTrainer), state['trainer'].__mro__\n"
        f"assert state['trainer'].recipe.teachers['teacher'].model == {str(tiny_teacher)!r}\n"
        "assert state['trainer'].recipe.stages[0].methods[0].name == 'fgd'\n"
        f"trainer = runpy.run_path({file!r}, run_name='__main__')['trainer']\n"
        "print('SELECT_STAGE_HOOKS', sum(f is yolo_kd.hooks.select_stage "
        "for f in trainer.callbacks['on_train_epoch_start']))\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    finally:
        ddp_cleanup(trainer, file)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SELECT_STAGE_HOOKS 1" in out.stdout
    row = read_results(tmp_path / "ddp" / "results.csv")[0]
    assert float(row["train/fgd"]) > 0 and row["kd_stage"] == "1"
    assert not Path(file).exists()


# ---------------------------------------------------------------------- 6. auto balance
def test_auto_balance_fixes_each_term_at_half_the_detection_item(tiny_teacher):
    distiller = make_distiller(tiny_teacher, "fgd+pred", auto_balance=0.5)
    loss, items = distiller.loss(synthetic_batch(0, n=4))
    det_item = sum(float(items[k]) for k in ("box_loss", "cls_loss", "dfl_loss")) / 3
    for term in ("fgd", "pred_cls", "pred_ld"):
        assert float(items[term]) == pytest.approx(0.5 * det_item, rel=1e-5), term
    # the KD entry of the loss vector is batch size x the sum of the terms
    assert float(loss[-1].detach()) == pytest.approx(4 * 3 * 0.5 * det_item, rel=1e-5)
    assert sorted(distiller.balance) == ["teacher/fgd", "teacher/pred_cls", "teacher/pred_ld"]
    assert all(b > 0 and b != 1 for b in distiller.balance.values())
    fixed = dict(distiller.balance)
    _, items = distiller.loss(synthetic_batch(1, n=4))
    assert distiller.balance == fixed  # fixed at the first step, not re-estimated
    assert float(items["fgd"]) != pytest.approx(0.5 * sum(float(items[k]) for k in ("box_loss", "cls_loss",
                                                                                   "dfl_loss")) / 3, rel=1e-5)


def test_auto_balance_fixes_one_multiplier_per_teacher(tiny_teacher, tiny_teacher_b):
    recipe = {"teachers": {"a": {"model": str(tiny_teacher)}, "b": {"model": str(tiny_teacher_b)}},
              "stages": [{"fraction": [0, 1], "teachers": ["a", "b"], "methods": {"fgd": 1.0}}], "auto_balance": 0.5}
    distiller = make_distiller(None, "fgd", cfg=recipe)
    _, items = distiller.loss(synthetic_batch(0, n=4))
    det_item = sum(float(items[k]) for k in ("box_loss", "cls_loss", "dfl_loss")) / 3
    assert sorted(distiller.balance) == ["a/fgd", "b/fgd"]
    assert distiller.balance["a/fgd"] != pytest.approx(distiller.balance["b/fgd"], rel=1e-3)  # different teachers
    assert float(items["fgd"]) == pytest.approx(2 * 0.5 * det_item, rel=1e-5)  # each teacher's share: 0.5 x det


def test_auto_balance_waits_for_a_finite_first_value(tiny_teacher, flaky):
    distiller = make_distiller(tiny_teacher, flaky, auto_balance=0.5)
    for step in range(3):
        _, items = distiller.loss(synthetic_batch(step, n=2))
        if step < 2:  # NaN, then Inf: dropped, and no multiplier fixed from them
            assert float(items["flaky"]) == 0 and distiller.balance == {}
    det_item = sum(float(items[k]) for k in ("box_loss", "cls_loss", "dfl_loss")) / 3
    assert float(items["flaky"]) == pytest.approx(0.5 * det_item, rel=1e-5)
    assert distiller.nan_skips == 2 and distiller.balance["teacher/flaky"] > 0


def test_auto_balance_end_to_end(tiny_data, tiny_teacher, tmp_path):
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="fgd", auto_balance=0.5)
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="ab", **TINY_TRAIN)
    kd = torch.load(tmp_path / "ab" / "weights" / "last.pt", map_location="cpu", weights_only=False)["yolo_kd"]
    assert kd["recipe"]["auto_balance"] == 0.5
    assert list(kd["balance"]) == ["teacher/fgd"] and 0 < kd["balance"]["teacher/fgd"] != 1
    row = read_results(tmp_path / "ab" / "results.csv")[0]
    fgd, box, cls, dfl = finite_floats(row, ("train/fgd", "train/box_loss", "train/cls_loss", "train/dfl_loss"))
    assert 0.3 < fgd / ((box + cls + dfl) / 3) < 0.7  # 0.5 at the first step (it was 2.0 = batch x 0.5 before the fix)
