"""Issue 22: distillation on unlabeled images (`unlabeled=`): the detection loss reads labeled images only, KD reads
all of them, mosaics stay within the pool, bad pools are refused before anything is written, resume keeps the pool."""

import copy
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY_NAMES, TINY_TRAIN, read_results
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel

import yolo_kd
from yolo_kd import KDConfigError
from yolo_kd.distiller import Distiller
from yolo_kd.recipe import Recipe
from yolo_kd.ultra import train_args
from yolo_kd.unlabeled import UnlabeledStream, resolve_images, shard

NAMES = dict(enumerate(TINY_NAMES))
GREEN = (0, 255, 0)  # BGR: no tiny-data image has a pure green pixel; their backgrounds are dark in every channel


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A folder of 6 unlabeled 64 px images: pure green with a few grey discs (PNG, so the colours stay exact)."""
    root = tmp_path_factory.mktemp("pool") / "pool"
    root.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        img = np.zeros((64, 64, 3), np.uint8)
        img[:] = GREEN
        for _ in range(2):
            cv2.circle(img, tuple(int(v) for v in rng.integers(10, 54, 2)), 6, (200, 200, 200), -1)
        cv2.imwrite(str(root / f"u{i}.png"), img)
    return root


def student_with_args(**overrides):
    torch.manual_seed(0)
    student = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    student.names = NAMES
    student.args = train_args(imgsz=64, workers=0, **overrides)
    return student


def labeled_batch():
    torch.manual_seed(1)
    return {"img": torch.rand(2, 3, 64, 64), "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.3], [0.3, 0.3, 0.2, 0.2]]),
            "cls": torch.tensor([[0.0], [1.0]]), "batch_idx": torch.tensor([0.0, 1.0])}


def test_detection_terms_unchanged_by_unlabeled_images_and_kd_reads_them(tiny_teacher, pool):
    student = student_with_args()
    runs = {}
    for name, files in (("plain", None), ("pool", resolve_images(pool))):
        torch.manual_seed(2)  # the same adapters in both distillers
        d = Distiller(copy.deepcopy(student), Recipe.from_kwargs(teacher=str(tiny_teacher)), epochs=1, names=NAMES,
                      unlabeled=files)
        d.train()
        d.set_epoch(0)
        runs[name] = d.loss(labeled_batch())
    (plain, plain_items), (mixed, mixed_items) = runs["plain"], runs["pool"]
    for key in ("box_loss", "cls_loss", "dfl_loss"):
        assert torch.equal(plain_items[key], mixed_items[key]), key  # bit-identical: unlabeled images add nothing
    assert torch.equal(plain[:3], mixed[:3])
    for term in ("sl2", "pred_cls", "pred_ld"):
        assert mixed_items[term] > 0 and not torch.isclose(mixed_items[term], plain_items[term]), term


def test_unlabeled_images_reach_the_student_through_kd(tiny_teacher, pool):
    """The KD part of the loss sends a gradient through the unlabeled forward: the student's KD gradient with the pool
    differs from the one without it, for the same labeled batch, weights and adapters."""
    student = student_with_args()
    grads = {}
    for name, files in (("plain", None), ("pool", resolve_images(pool))):
        torch.manual_seed(2)
        d = Distiller(copy.deepcopy(student), Recipe.from_kwargs(teacher=str(tiny_teacher), method="pred"), epochs=1,
                      names=NAMES, unlabeled=files)
        d.train()
        d.set_epoch(0)
        loss, _ = d.loss(labeled_batch())
        loss[3].backward()  # the KD part alone
        grads[name] = torch.cat([p.grad.flatten() for p in d.student.parameters() if p.grad is not None])
    assert grads["pool"].abs().sum() > 0 and not torch.allclose(grads["pool"], grads["plain"])


def test_a_mosaic_never_mixes_labeled_and_unlabeled_images(pool):
    args = train_args(imgsz=64, workers=0, mosaic=1.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, mixup=0.0)
    stream = UnlabeledStream(resolve_images(pool), ratio=1.0)
    stream.build(args, {"names": NAMES, "channels": 3}, imgsz=64, batch=4, stride=32)
    for _ in range(4):
        batch = stream.next_batch()
        assert batch["cls"].numel() == 0 and batch["bboxes"].numel() == 0  # no box, ever, from the pool
        img = batch["img"].permute(0, 2, 3, 1).numpy()  # RGB uint8
        assert not ((img < 60).all(-1)).any()  # no dark labeled-image background anywhere
        assert ((img[..., 1] > 240) & (img[..., 0] < 15)).mean() > 0.2  # the pool's green is there
    assert stream.next("cpu").shape == (4, 3, 64, 64)


def mosaic_probability(transforms) -> float:
    """The probability of the Mosaic step in a dataset's transform pipeline (0 when it has none)."""
    for t in getattr(transforms, "transforms", []):
        if type(t).__name__ == "Mosaic":
            return t.p
        found = mosaic_probability(t)
        if found:
            return found
    return 0.0


def test_close_mosaic_reaches_the_pool(pool):
    args = train_args(imgsz=64, workers=0, mosaic=1.0)
    stream = UnlabeledStream(resolve_images(pool), ratio=1.0)
    stream.build(args, {"names": NAMES, "channels": 3}, imgsz=64, batch=2, stride=32)
    assert mosaic_probability(stream._dataset.transforms) == 1.0
    stream.close_mosaic()
    assert mosaic_probability(stream._dataset.transforms) == 0.0
    assert args.mosaic == 1.0  # the run's own arguments are not changed


def test_ddp_shards_are_disjoint_and_cover_the_pool():
    files = [f"{i}.jpg" for i in range(7)]
    shards = [shard(files, r, 3) for r in range(3)]
    assert sorted(sum(shards, [])) == sorted(files) and all(shards)
    assert not set(shards[0]) & set(shards[1])
    assert shard(["a.jpg"], 1, 2) == ["a.jpg"]


def test_ratio_sets_the_unlabeled_batch():
    assert UnlabeledStream(["a.jpg"], 1.0).batch_size(8) == 8
    assert UnlabeledStream(["a.jpg"], 0.5).batch_size(8) == 4
    assert UnlabeledStream(["a.jpg"], 0.01).batch_size(8) == 1


@pytest.mark.parametrize("make, says", [(lambda p: p / "missing", "does not exist"),
                                        (lambda p: (p / "empty").mkdir() or p / "empty", "holds no images"),
                                        (lambda p: str(p / "*.jpg"), "matches no images")])
def test_a_bad_pool_is_refused_in_one_line(tiny_teacher, tmp_path, make, says):
    with pytest.raises(KDConfigError, match=says) as e:
        yolo_kd.distill(YOLO("yolov8n.yaml"), teacher=str(tiny_teacher), unlabeled=str(make(tmp_path)))
    assert "\n" not in str(e.value)


def test_a_bad_pool_on_the_command_line_writes_nothing(tiny_data, tiny_teacher, tmp_path):
    (tmp_path / "empty").mkdir()
    out = subprocess.run([sys.executable, "-m", "yolo_kd.cli", "train", "model=yolov8n.yaml", f"data={tiny_data}",
                          f"teacher={tiny_teacher}", f"unlabeled={tmp_path / 'empty'}", f"project={tmp_path / 'runs'}",
                          "epochs=1", "imgsz=64", "device=cpu"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "unlabeled=" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_train_on_a_pool_then_resume_keeps_distilling_on_it(tiny_data, tiny_teacher, pool, tmp_path):
    """2 epochs with a pool (mosaic on, closed for the last epoch); last.pt of epoch 1 resumes with the pool."""
    project, saved, seen = tmp_path / "runs", tmp_path / "epoch1_last.pt", {}

    def keep_epoch_one(trainer):
        if trainer.epoch == 0:
            shutil.copy(trainer.last, saved)

    def record(trainer):
        stream = trainer.model.unlabeled
        seen.setdefault("files", stream.files)
        seen.setdefault("closed", []).append(stream.mosaic_closed)

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_model_save", keep_epoch_one)
    model.add_callback("on_train_batch_end", record)
    yolo_kd.distill(model, teacher=str(tiny_teacher), unlabeled=str(pool))
    model.train(data=str(tiny_data), epochs=2, project=str(project), name="run",
                **{**TINY_TRAIN, "mosaic": 1.0, "close_mosaic": 1})
    assert seen["files"] == resolve_images(pool)
    assert seen["closed"][0] is False and seen["closed"][-1] is True  # epoch 2 is a no-mosaic epoch for the pool too
    rows = read_results(project / "run")
    assert all(float(r["train/pred_cls"]) > 0 and float(r["train/sl2"]) > 0 for r in rows)

    ckpt = torch.load(saved, map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 0 and ckpt["yolo_kd"]["recipe"]["unlabeled"] == [str(pool)]
    ckpt["train_args"]["save_dir"] = str(tmp_path / "resumed")  # resume into a folder of its own
    torch.save(ckpt, saved)
    resumed, seen2 = YOLO(str(saved)), {}
    resumed.add_callback("on_train_batch_end", lambda t: seen2.setdefault("files", t.model.unlabeled.files))
    yolo_kd.distill(resumed)  # no teacher: the recipe, pool included, comes back from last.pt
    resumed.train(resume=True)
    assert seen2["files"] == resolve_images(pool)
    again = read_results(tmp_path / "resumed")
    assert [r["epoch"] for r in again] == ["2"] and float(again[0]["train/pred_cls"]) > 0  # a fresh folder: epoch 2
    for key in ("train/box_loss", "train/sl2", "train/pred_cls", "train/pred_ld"):  # the same pool images, too
        assert float(again[0][key]) == pytest.approx(float(rows[1][key]), rel=1e-4), key


def test_data_yaml_unlabeled_entry_is_read_relative_to_its_path(tiny_data, tiny_teacher, pool, tmp_path):
    root = tmp_path / "set"
    shutil.copytree(tiny_data.parent, root)
    shutil.copytree(pool, root / "unlabeled")
    text = tiny_data.read_text().replace(str(tiny_data.parent), str(root))
    (root / "data.yaml").write_text(text + "unlabeled: unlabeled\n")
    seen = {}
    model = YOLO("yolov8n.yaml")
    model.add_callback("on_train_batch_end", lambda t: seen.setdefault("files", t.model.unlabeled.files))
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="pred")
    model.train(data=str(root / "data.yaml"), epochs=1, project=str(tmp_path / "runs"), name="run", **TINY_TRAIN)
    assert [p.rsplit("/", 1)[-1] for p in seen["files"]] == sorted(p.name for p in pool.iterdir())


def test_an_unreadable_pool_image_is_skipped_not_a_crash(pool, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(pool, broken)
    (broken / "zz_truncated.jpg").write_bytes(b"not a jpeg")
    files = resolve_images(broken)
    assert len(files) == 7  # the pool is never scanned: the broken file is in it
    stream = UnlabeledStream(files, ratio=1.0)
    stream.build(train_args(imgsz=64, workers=0, mosaic=0.0), {"names": NAMES, "channels": 3}, imgsz=64, batch=7,
                 stride=32)
    for _ in range(3):  # every image drawn, the broken one included
        assert stream.next("cpu").shape == (7, 3, 64, 64)


def test_a_relative_pool_is_kept_absolute_for_resume(tiny_teacher, pool, monkeypatch):
    monkeypatch.chdir(pool.parent)
    model = yolo_kd.distill(YOLO("yolov8n.yaml"), teacher=str(tiny_teacher), unlabeled=pool.name)
    recipe = model.train.args[2]  # the partial over model.train holds the recipe (as test_new_methods reads it)
    assert recipe.unlabeled == [str(pool.absolute())]


def test_a_bad_data_yaml_pool_is_refused_before_the_run_folder(tiny_data, tiny_teacher, tmp_path):
    data = tmp_path / "data.yaml"
    data.write_text(tiny_data.read_text() + "unlabeled: no_such_pool\n")
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher))
    with pytest.raises(KDConfigError, match="data.yaml unlabeled=.*no_such_pool does not exist") as e:
        model.train(data=str(data), epochs=1, project=str(tmp_path / "runs"), name="run", **TINY_TRAIN)
    assert "\n" not in str(e.value) and not (tmp_path / "runs").exists()
