"""Issues 22 and 29: distillation on unlabeled images (`unlabeled=`), the pool owned by the engine: the detection loss
reads labeled images only, KD reads all of them; the labeled stream is the same with and without a pool; every step
gets exactly round(ratio x batch) pool images; the teacher sees the student's pool images; mosaics stay within the
pool; BatchNorm's running statistics follow the labeled images; DDP ranks read disjoint shards; bad pools are
refused before anything is written; resume keeps the pool."""

import copy
import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import DDP_WORKER_EXIT, TINY_NAMES, TINY_TRAIN, read_results, run_gloo_ranks
from ultralytics import YOLO
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.nn.tasks import DetectionModel

import yolo_kd
from yolo_kd import KDConfigError
from yolo_kd.distiller import Distiller
from yolo_kd.recipe import Recipe
from yolo_kd.resolution import resample
from yolo_kd.ultra import train_args
from yolo_kd.unlabeled import resolve_images, shard
from yolo_kd.unlabeled_loader import UnlabeledLoader

NAMES = dict(enumerate(TINY_NAMES))


@pytest.fixture(scope="module")
def pool(tiny_pool):
    return tiny_pool


def student_with_args(**overrides):
    torch.manual_seed(0)
    student = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    student.names = NAMES
    student.args = train_args(imgsz=64, workers=0, **overrides)
    return student


def labeled_batch(pool_images: int = 0):
    """Two labeled images with a box each; `pool_images` unlabeled ones as `unlabeled_img`, as the engine adds them."""
    torch.manual_seed(1)
    batch = {"img": torch.rand(2, 3, 64, 64), "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.3], [0.3, 0.3, 0.2, 0.2]]),
             "cls": torch.tensor([[0.0], [1.0]]), "batch_idx": torch.tensor([0.0, 1.0])}
    if pool_images:
        batch["unlabeled_img"] = torch.rand(pool_images, 3, 64, 64)
    return batch


def distiller(tiny_teacher, student, **recipe):
    torch.manual_seed(2)  # the same adapters in every distiller
    d = Distiller(copy.deepcopy(student), Recipe.from_kwargs(teacher=str(tiny_teacher), **recipe), epochs=1,
                  names=NAMES)
    d.train()
    d.set_epoch(0)
    return d


def test_detection_terms_unchanged_by_unlabeled_images_and_kd_reads_them(tiny_teacher):
    student = student_with_args()
    plain, plain_items = distiller(tiny_teacher, student).loss(labeled_batch())
    mixed, mixed_items = distiller(tiny_teacher, student).loss(labeled_batch(pool_images=3))
    for key in ("box_loss", "cls_loss", "dfl_loss"):
        assert torch.equal(plain_items[key], mixed_items[key]), key  # bit-identical: unlabeled images add nothing
    assert torch.equal(plain[:3], mixed[:3])
    for term in ("sl2", "pred_cls", "pred_ld"):
        assert mixed_items[term] > 0 and not torch.isclose(mixed_items[term], plain_items[term]), term


def test_unlabeled_images_reach_the_student_through_kd(tiny_teacher):
    """The KD part of the loss sends a gradient through the unlabeled forward: the student's KD gradient with the pool
    differs from the one without it, for the same labeled batch, weights and adapters."""
    student = student_with_args()
    grads = {}
    for name, n in (("plain", 0), ("pool", 2)):
        d = distiller(tiny_teacher, student, method="pred")
        loss, _ = d.loss(labeled_batch(n))
        loss[3].backward()  # the KD part alone
        grads[name] = torch.cat([p.grad.flatten() for p in d.student.parameters() if p.grad is not None])
    assert grads["pool"].abs().sum() > 0 and not torch.allclose(grads["pool"], grads["plain"])


def batchnorm_state(model):
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    return torch.cat([m.running_mean for m in norms]), {int(m.num_batches_tracked) for m in norms}


@pytest.mark.parametrize("bn", ["labeled", None])
def test_batchnorm_running_statistics_follow_the_chosen_images(tiny_teacher, bn):
    """`unlabeled_bn: labeled`: after a step with a pool, BatchNorm's running statistics are exactly those of the step
    without it (one update per step); the default, `all`: the pool's forward updates them too (two per step)."""
    student = student_with_args()
    plain = distiller(tiny_teacher, student)
    plain.loss(labeled_batch())
    mixed = distiller(tiny_teacher, student, **({"unlabeled_bn": bn} if bn else {}))
    mixed.loss(labeled_batch(pool_images=2))
    plain_mean, plain_count = batchnorm_state(plain.student)
    mixed_mean, mixed_count = batchnorm_state(mixed.student)
    assert plain_count == {1}
    if bn == "labeled":
        assert mixed_count == {1} and torch.equal(mixed_mean, plain_mean)
    else:
        assert mixed_count == {2} and not torch.allclose(mixed_mean, plain_mean)


def mosaic_probability(transforms) -> float:
    """The probability of the Mosaic step in a dataset's transform pipeline (0 when it has none)."""
    for t in getattr(transforms, "transforms", []):
        if type(t).__name__ == "Mosaic":
            return t.p
        found = mosaic_probability(t)
        if found:
            return found
    return 0.0


def pool_loader(files, batch, workers=0, **args):
    return UnlabeledLoader(files, train_args(imgsz=64, workers=workers, **args), {"names": NAMES, "channels": 3},
                           imgsz=64, batch=batch, stride=32, workers=workers)


def test_close_mosaic_reaches_the_pool(pool):
    args = train_args(imgsz=64, workers=0, mosaic=1.0)
    loader = UnlabeledLoader(resolve_images(pool), args, {"names": NAMES, "channels": 3}, 64, 2, 32, 0)
    assert mosaic_probability(loader.dataset.transforms) == 1.0
    loader.close_mosaic()
    assert mosaic_probability(loader.dataset.transforms) == 0.0
    assert args.mosaic == 1.0  # the run's own arguments are not changed


@pytest.mark.parametrize("pool_size", [3, 4, 6, 10])
def test_every_draw_has_exactly_the_asked_images(pool, tmp_path, pool_size):
    """A pool smaller than, equal to, larger than and not a multiple of the 4 images a step asks for: every draw
    has 4 (never a short last batch), and a cut draw (the epoch's last labeled batch) its share; each pass over the
    pool is a permutation of it."""
    files = [str(p) for p in sorted(pool.iterdir())]
    files = [files[i % len(files)] for i in range(pool_size)]
    loader = pool_loader(files, batch=4, mosaic=0.0)
    loader.restart(7)
    drawn = [loader.next()["im_file"] for _ in range(5)]
    assert [len(d) for d in drawn] == [4] * 5
    seen = [f for d in drawn for f in d]
    assert sorted(seen[:pool_size]) == sorted(files)  # the first pass covers the pool once
    assert loader.next(3)["img"].shape == (3, 3, 64, 64)


def test_the_pool_draws_from_its_own_random_state(pool):
    """Drawing from the pool (augmentation on, workers=0) leaves Python's, NumPy's and torch's global random state as
    it found it, and a restart from the same seed draws the same images, augmented the same."""
    loader = pool_loader(resolve_images(pool), batch=4, mosaic=1.0, degrees=10.0)
    torch.manual_seed(0), np.random.seed(0)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy())
    loader.restart(3)
    first = [loader.next()["img"] for _ in range(3)]
    assert torch.equal(before[0], torch.get_rng_state()) and np.array_equal(before[1], np.random.get_state()[1])
    loader.restart(3)
    assert all(torch.equal(a, loader.next()["img"]) for a in first)
    loader.restart(4)
    assert not torch.equal(first[0], loader.next()["img"])


@pytest.mark.parametrize("workers", [0, 2])
def test_start_keeps_a_stream_at_its_start_and_restarts_one_drawn_from(pool, workers):
    """`start(seed)` after `restart(seed)` (the engine's restart at an epoch's end, for the next one) draws what the
    restart alone draws; once a batch is drawn, `start(seed)` restarts: the first batch comes again, and another
    seed's stream differs."""
    loader = pool_loader(resolve_images(pool), batch=4, workers=workers, mosaic=1.0, degrees=10.0)
    loader.restart(5)
    first = [loader.next()["img"] for _ in range(2)]
    loader.restart(5)
    loader.start(5)
    assert all(torch.equal(a, loader.next()["img"]) for a in first)
    loader.start(5)
    assert torch.equal(first[0], loader.next()["img"])
    loader.start(6)
    assert not torch.equal(first[1], loader.next()["img"])
    loader.close()


class RecordingTrainer(DetectionTrainer):
    """Records what each training step sees: hashes of the labeled batches (pixels and boxes, as the loader gave
    them), the student's pool input and the teacher's input (`seen`, a class attribute the test reads)."""

    seen: dict = {}

    def preprocess_batch(self, batch):
        batch = super().preprocess_batch(batch)
        digest = hashlib.sha1(batch["img"].numpy().tobytes() + batch["bboxes"].numpy().tobytes()).hexdigest()
        self.seen.setdefault("labeled", []).append(digest)
        self.seen.setdefault("labeled_img", []).append(batch["img"].clone())
        return batch


def record_forwards(trainer):
    """on_train_start: record the student's training inputs (labeled, then pool) and the teacher's inputs."""
    seen, distiller = RecordingTrainer.seen, trainer.model
    seen["pool_boxes"] = trainer.yolo_kd.pool_boxes

    def student_input(module, args):
        if module.training:
            seen.setdefault("student", []).append(args[0].detach().clone())

    def teacher_input(module, args):
        seen.setdefault("teacher", []).append(args[0].detach().clone())

    distiller.student.register_forward_pre_hook(student_input)
    distiller.pool.loaded["teacher"].register_forward_pre_hook(teacher_input)


def recorded_run(tmp_path, data, teacher, pool=None, teacher_imgsz=None, unlabeled_views=None, unlabeled_boxes=None,
                 unlabeled_kd=None, labeled_kd=None, method="sl2+pred", **train):
    RecordingTrainer.seen = {}
    model = YOLO("yolov8n.yaml")
    model.add_callback("on_train_start", record_forwards)
    yolo_kd.distill(model, teacher=str(teacher), method=method, teacher_imgsz=teacher_imgsz,
                    unlabeled_views=unlabeled_views, unlabeled_boxes=unlabeled_boxes, unlabeled_kd=unlabeled_kd,
                    labeled_kd=labeled_kd, **({"unlabeled": str(pool)} if pool else {}))
    model.train(data=str(data), project=str(tmp_path), name="run", trainer=RecordingTrainer,
                **{**TINY_TRAIN, "epochs": 2, **train})
    return RecordingTrainer.seen


@pytest.mark.parametrize("workers", [0, 2])
def test_the_labeled_stream_is_the_same_with_and_without_a_pool(tiny_data, tiny_teacher, pool, tmp_path, workers):
    """2 epochs with mosaic (3 images a batch: 3, 3, 2): the labeled batches hash equal with and without the pool;
    each step has as many pool images as labeled ones; no labeled image holds the pool's green, no pool image the
    labeled images' dark background (mosaics never mix the two)."""
    train = {"batch": 3, "nbs": 3, "mosaic": 1.0, "workers": workers, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}
    plain = recorded_run(tmp_path / "plain", tiny_data, tiny_teacher, **train)["labeled"]
    seen = recorded_run(tmp_path / "pool", tiny_data, tiny_teacher, pool, **train)
    assert len(plain) == 6 and seen["labeled"] == plain
    labeled, pooled = seen["student"][0::2], seen["student"][1::2]  # each step: labeled forward, then pool forward
    assert [len(x) for x in labeled] == [3, 3, 2] * 2 and [len(x) for x in pooled] == [3, 3, 2] * 2
    for img in seen["labeled_img"]:
        rgb = img.permute(0, 2, 3, 1)
        assert not ((rgb[..., 1] > 0.94) & (rgb[..., 0] < 0.06)).any()  # no pool green in a labeled image
    for img in pooled:
        rgb = img.permute(0, 2, 3, 1)
        assert not (rgb < 0.235).all(-1).any()  # no dark labeled background in a pool image
        assert ((rgb[..., 1] > 0.94) & (rgb[..., 0] < 0.06)).float().mean() > 0.2


@pytest.mark.parametrize("teacher_imgsz", [None, 128])
def test_the_teacher_sees_the_students_pool_images(tiny_data, tiny_teacher, pool, tmp_path, teacher_imgsz):
    """The teacher's rows after the labeled ones are the student's pool input: the same tensor at the student's size;
    at its own size, the images the student's pool input is the area downsample of."""
    seen = recorded_run(tmp_path, tiny_data, tiny_teacher, pool, epochs=1, teacher_imgsz=teacher_imgsz)
    labeled, pooled = seen["student"][0::2], seen["student"][1::2]
    assert len(seen["teacher"]) == len(pooled) == 2
    for n, student_pool, teacher in zip((len(x) for x in labeled), pooled, seen["teacher"]):
        teacher_pool = teacher[n:]
        if teacher_imgsz is None:
            assert torch.equal(teacher_pool, student_pool)
        else:
            assert teacher_pool.shape[-1] == 128 and student_pool.shape[-1] == 64
            assert torch.allclose(resample(teacher_pool, (64, 64)), student_pool, atol=1e-6)


def test_one_image_file_is_a_pool_of_one(pool):
    image = str(sorted(pool.iterdir())[0])
    assert resolve_images(image) == [image]
    loader = pool_loader([image], batch=2, mosaic=0.0)
    assert list(loader.next()["im_file"]) == [image, image]


def test_ddp_shards_are_disjoint_and_cover_the_pool():
    files = [f"{i}.jpg" for i in range(7)]
    shards = [shard(files, r, 3) for r in range(3)]
    assert sorted(sum(shards, [])) == sorted(files) and all(shards)
    assert not set(shards[0]) & set(shards[1])
    assert shard(["a.jpg"], 1, 2) == ["a.jpg"]


DDP_POOL_WORKER = """
import json, os, sys
import torch.distributed as dist
from types import SimpleNamespace

import numpy as np

rank, pool, out, teacher = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", rank=rank, world_size=2)
from yolo_kd.hooks import KDRun, build_unlabeled_loader
from yolo_kd.recipe import Recipe
from yolo_kd.ultra import train_args
from yolo_kd.unlabeled import resolve_images

run = KDRun(Recipe.from_kwargs(teacher=teacher, unlabeled=pool, unlabeled_boxes="label+0.001"))
run.unlabeled = resolve_images(pool)
trainer = SimpleNamespace(yolo_kd=run, args=train_args(imgsz=64, workers=0, mosaic=0.0), stride=32,
                          data={"names": {0: "a"}, "channels": 3}, device="cpu")
labeled = SimpleNamespace(labels=[{"cls": np.zeros((2, 1))}])  # the train set's boxes: 2 per image
loader = build_unlabeled_loader(trainer, batch_size=1, labeled=labeled)
loader.restart(0)
files = sorted({f for _ in range(6) for f in loader.next()["im_file"]})
with open(f"{out}.{rank}", "w") as f:
    f.write(json.dumps({"drawn": files, "labeled": sorted(run.pool_boxes)}))
"""


def test_ddp_ranks_read_disjoint_shards_of_the_pool(pool, tiny_teacher, tmp_path):
    """Two gloo ranks build the pool's loader as the engine does: they read, and their teacher labels
    (`unlabeled_boxes: label`), disjoint files that cover the pool."""
    script, out = tmp_path / "worker.py", tmp_path / "files"
    script.write_text(DDP_POOL_WORKER + DDP_WORKER_EXIT)
    run_gloo_ranks(script, [str(pool), str(out), str(tiny_teacher)])
    seen = [json.loads((tmp_path / f"files.{r}").read_text()) for r in range(2)]
    ranks = [set(s["drawn"]) for s in seen]
    assert ranks[0] and ranks[1] and not ranks[0] & ranks[1]
    assert ranks[0] | ranks[1] == set(resolve_images(pool))
    assert [set(s["labeled"]) for s in seen] == ranks  # each rank's teacher labeled its own shard, nothing else


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
        loader = trainer.yolo_kd.unlabeled_loader
        seen.setdefault("files", loader.files)
        seen.setdefault("closed", []).append(loader.mosaic_closed)

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
    resumed.add_callback("on_train_batch_end", lambda t: seen2.setdefault("files", t.yolo_kd.unlabeled_loader.files))
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
    model.add_callback("on_train_batch_end", lambda t: seen.setdefault("files", t.yolo_kd.unlabeled_loader.files))
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="pred")
    model.train(data=str(root / "data.yaml"), epochs=1, project=str(tmp_path / "runs"), name="run", **TINY_TRAIN)
    assert [p.rsplit("/", 1)[-1] for p in seen["files"]] == sorted(p.name for p in pool.iterdir())


def test_an_unreadable_pool_image_is_skipped_not_a_crash(pool, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(pool, broken)
    (broken / "zz_truncated.jpg").write_bytes(b"not a jpeg")
    files = resolve_images(broken)
    assert len(files) == 7  # the pool is never scanned: the broken file is in it
    loader = pool_loader(files, batch=7, mosaic=0.0)
    for _ in range(3):  # every image drawn, the broken one included
        assert loader.next()["img"].shape == (7, 3, 64, 64)


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
