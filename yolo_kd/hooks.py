"""The engine: distillation attached to one Ultralytics trainer object, whatever its class (part of the seam).

`callbacks(recipe)` is an Ultralytics callbacks dict. Its `on_pretrain_routine_start` hook (`Attach`, fired inside
`BaseTrainer.__init__` before the dataset is read) runs the pre-run checks and `attach`es the engine: per-instance
wrappers around the trainer's own bound methods (the user's subclass overrides included), so it composes with any
`DetectionTrainer` subclass:
- `get_dataset`: the trainer's check, then a train split without a single label is refused; the unlabeled pool's
  files are resolved;
- `build_dataset` / `preprocess_batch`: with a teacher at a larger size, the train set is built at that size and each
  batch keeps it as `teacher_img` while `img` becomes its downsample to the student's size;
- `get_dataloader`: beside the train loader, the unlabeled pool's loader (`unlabeled_loader`), rebuilt with it;
  `preprocess_batch` puts its images into the batch (`unlabeled_img`, `unlabeled_teacher_img`) when the step's KD
  reads them, and `_close_dataloader_mosaic` closes its mosaic with the labeled loader's;
- `preprocess_batch` / `optimizer_step` / `_handle_nan_recovery`: the engine decides when the optimizer steps, by
  Ultralytics' rule, with a counter it saves (`accumulation`);
- `setup_model`: on resume, keep last.pt's KD state;
- `set_model_attributes`: after nc/names/args are set, wrap the student in a `Distiller` (before compile, freeze,
  AMP, DDP, the optimizer and the EMA: adapters are optimised, synced, EMA'd, saved, resumed); compile is disabled;
- `save_model`, `_load_checkpoint_state`, `resume_training`: checkpoint I/O (`checkpoints`);
- `label_loss_items`: no `val/<KD term>` columns (validation scores the student alone).
Per epoch, `reseed` re-derives the random state from (seed, epoch), `restart_unlabeled` restarts the pool's stream
from it, `restore_grads` puts a resumed run's accumulated gradients back, `count_batches` restarts the step
counter's batch index and `select_stage` activates the stage; at its end `log_stage` writes the `kd_stage` /
`kd_nan_skips` columns, `log_kd_share` the KD share of the loss (a log line and the `kd_share` column) and
`prime_unlabeled` restarts the pool's stream for the next epoch (its workers start during validation); after the
run, `drop_continuation` takes the resume-only tensors out of last.pt, `draw_kd_results` draws `kd_results.png`
beside results.png and `close_unlabeled` shuts the pool's loader down.
Every hook is a module-level function or a plain object (picklable for DDP).

Ultralytics fires `on_pretrain_routine_start` only on rank 0 and after the run folder exists, so `Attach` removes a
folder it refuses while still empty, and refuses multi-GPU runs; `trainer.KDTrainer` attaches in its own `__init__`
instead (before the run folder, on every rank).
"""

from __future__ import annotations

import functools
import random
import shutil
from copy import copy
from pathlib import Path

import numpy as np
import torch
from ultralytics.utils import LOGGER

from .accumulation import Accumulation, StepEveryBatch
from .checkpoints import (_load_checkpoint_state, drop_continuation, restore_grads, resume_training, resumed_pool_boxes,
                          save_model)
from .compat import check_before_run
from .distiller import KD_STATE_KEY, Distiller
from .errors import KDConfigError
from .preflight import MIN_GRID, check_imgsz, check_train_labels, image_size
from .recipe import DEFAULT_UNLABELED_WEIGHT, GUARD_RELABEL, Recipe, box_selection, labels_pool_once
from .resolution import resample
from .resume_options import resume_recipe
from .guard import announce_guard, validate
from .pool_labels import label_pool
from .ultra import RANK, unwrap_model
from .unlabeled import images_per_step, rank_share, unlabeled_files
from .unlabeled_loader import UnlabeledLoader


class KDRun:
    """What the engine keeps on a trainer (`trainer.yolo_kd`): the recipe, the teachers checked before the run,
    last.pt's KD state on resume, the unlabeled pool (its files and loader) and the optimizer-step counter."""

    def __init__(self, recipe: Recipe, teacher_pool=None, teacher_shapes=None):
        self.recipe, self.teacher_pool, self.teacher_shapes = recipe, teacher_pool, teacher_shapes
        self.resume_state = None
        self.unlabeled = None  # the pool's image files, resolved with the data set (`get_dataset`)
        self.unlabeled_loader = None  # built beside the train loader (`get_dataloader`)
        self.pool_boxes = None  # `unlabeled_boxes: label+conf`: the teacher's boxes per pool image, made once
        self.accumulation = Accumulation()
        self.resumed_grads = None  # a resumed run's accumulated gradients, put back at its first epoch's start


def attach(trainer, recipe: Recipe, teacher_pool=None, teacher_shapes=None) -> None:
    """Wrap the trainer object's methods listed in `WRAPPERS` (once); `teacher_pool`, `teacher_shapes`:
    `check_before_run`'s."""
    if getattr(trainer, "yolo_kd", None) is not None:
        return
    trainer.yolo_kd = KDRun(recipe, teacher_pool, teacher_shapes)
    for name, wrapper in WRAPPERS.items():
        setattr(trainer, name, functools.partial(wrapper, trainer, getattr(trainer, name)))


class Attach:
    """on_pretrain_routine_start: check the run's inputs, then `attach` the engine (no-op when already attached).
    `options`: the yolo-kd keys the user gave, checked against last.pt's recipe on resume (`resume_recipe`)."""

    def __init__(self, recipe: Recipe, options: dict | None = None):
        self.recipe, self.options = recipe, dict(options or {})

    def __call__(self, trainer) -> None:
        if getattr(trainer, "yolo_kd", None) is not None:
            return
        if trainer.world_size > 1:  # Ultralytics runs this event on rank 0 only: the other ranks would not distil
            raise KDConfigError("yolo_kd.callbacks runs in one process: for multi-GPU training use "
                                "yolo_kd.distill(model, ...) (it composes with trainer=)")
        try:
            recipe = resume_recipe(self.recipe, self.options, trainer.args.model) if trainer.resume else self.recipe
            teacher_pool, shapes = check_before_run(recipe, trainer.args)
        except KDConfigError:
            discard_fresh_run(Path(trainer.save_dir))
            raise
        attach(trainer, recipe, teacher_pool, shapes)


def discard_fresh_run(save_dir: Path) -> None:
    """Remove a run folder holding only what the trainer just wrote (args.yaml, an empty weights/)."""
    weights = save_dir / "weights"
    fresh = {p.name for p in save_dir.iterdir()} <= {"args.yaml", "weights"}
    if fresh and not (weights.is_dir() and any(weights.iterdir())):
        shutil.rmtree(save_dir)


def callbacks(recipe: Recipe, options: dict | None = None) -> dict[str, list]:
    """The Ultralytics callbacks dict that distils with `recipe` on any trainer."""
    return {"on_pretrain_routine_start": [Attach(recipe, options)],
            "on_train_epoch_start": [reseed, restart_unlabeled, restore_grads, count_batches, select_stage],
            "on_train_start": [announce_guard],
            "on_train_epoch_end": [log_stage, log_kd_share, prime_unlabeled],
            "on_train_end": [drop_continuation, draw_kd_results, close_unlabeled]}


def is_engine_callback(fn) -> bool:
    """Whether `fn` is one of the callbacks `callbacks` returns (to replace an earlier recipe's)."""
    return isinstance(fn, Attach) or any(fn in fns for fns in callbacks(None).values())


def merged(base: dict[str, list], extra: dict[str, list]) -> dict[str, list]:
    """`base` with each of `extra`'s callbacks appended to its event unless already there (a copy)."""
    out = {event: list(fns) for event, fns in base.items()}
    for event, fns in extra.items():
        out.setdefault(event, []).extend(f for f in fns if f not in out[event])
    return out


# ---------------------------------------------------------------------- per-epoch hooks
def select_stage(trainer) -> None:
    """on_train_epoch_start: activate the stage covering this epoch; log switches."""
    distiller = unwrap_model(trainer.model)
    message = distiller.set_epoch(trainer.epoch, len(trainer.train_loader))
    if message and RANK in {-1, 0}:
        LOGGER.info(message)


def epoch_seed(trainer, epoch: int | None = None) -> int:
    """The random seed of `epoch` (default: the trainer's) on this rank: a function of (seed, epoch, rank) alone."""
    epoch = trainer.epoch if epoch is None else epoch
    return (int(trainer.args.seed) * 1_000_003 + int(epoch) * 7919 + max(RANK, 0)) % 2**31


def reseed(trainer) -> None:
    """on_train_epoch_start: from the second epoch on, seed random, numpy, torch and the train loader's shuffling from
    (seed, epoch, rank) and restart the loader's iterator, so epoch e draws the same order and augmentation whether
    the run started at 0 or resumed at e (Ultralytics seeds once, at start, and saves no random state). The first
    epoch keeps Ultralytics' own seeding, so a run with KD weight 0 matches a plain run there. Works on any trainer
    (the bench and the demo give it to their plain baselines)."""
    if trainer.epoch == 0:
        return
    seed = epoch_seed(trainer)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    loader = trainer.train_loader
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(seed)
    if hasattr(loader, "reset"):
        loader.reset()  # a new iterator draws its worker seeds from the generator just seeded


def pool_seed(trainer, epoch: int | None = None) -> int:
    """The seed the unlabeled pool's stream starts from in `epoch` (default: the trainer's)."""
    return epoch_seed(trainer, epoch) + 1


def restart_unlabeled(trainer) -> None:
    """on_train_epoch_start: the unlabeled pool's stream starts from the epoch's seed, every epoch (the first
    included: it draws from random states of its own), so a resumed run draws what the uninterrupted one drew."""
    if trainer.yolo_kd.unlabeled_loader is not None:
        trainer.yolo_kd.unlabeled_loader.start(pool_seed(trainer))


def prime_unlabeled(trainer) -> None:
    """on_train_epoch_end: restart the pool's stream for the next epoch now, so its workers start and prefetch while
    the trainer validates and saves (`restart_unlabeled` then finds it at that start and leaves it)."""
    if trainer.yolo_kd.unlabeled_loader is not None and trainer.epoch + 1 < trainer.epochs:
        trainer.yolo_kd.unlabeled_loader.restart(pool_seed(trainer, trainer.epoch + 1))


def count_batches(trainer) -> None:
    """on_train_epoch_start: the optimizer-step counter's batch index restarts at this epoch's first batch."""
    trainer.yolo_kd.accumulation.start_epoch(trainer.epoch, len(trainer.train_loader))


def log_stage(trainer) -> None:
    """on_train_epoch_end: record the stage (1-based, 0 = no KD, also once the teacher guard has stopped it) and
    dropped non-finite terms in results.csv."""
    distiller = unwrap_model(trainer.model)
    trainer.lr["kd_stage"] = 0 if distiller.stage is None or distiller.kd_stopped else distiller.stage + 1
    trainer.lr["kd_nan_skips"] = distiller.nan_skips
    if distiller.nan_skips and RANK in {-1, 0}:
        LOGGER.warning(f"yolo-kd: {distiller.nan_skips} step(s) so far whose KD was non-finite and dropped")


def log_kd_share(trainer) -> None:
    """on_train_epoch_end: the KD terms' share of the epoch's mean training loss, as the `kd_share` column and, while a
    stage is active, one line: `yolo-kd: epoch 3: KD 38.2% of the loss (pred_cls 21.0%, pred_ld 17.2%)`. The loss
    items already carry their gains and weights, and sum to the loss the optimiser steps on (per image)."""
    distiller = unwrap_model(trainer.model)
    items = {k: float(v) for k, v in (trainer.tloss or {}).items()}
    total = sum(items.values())
    shares = {t: items.get(t, 0.0) / total if total > 0 else 0.0 for t in distiller.term_names}
    trainer.lr["kd_share"] = round(sum(shares.values()), 5)
    if distiller.stage is not None and RANK in {-1, 0}:
        parts = ", ".join(f"{t} {share:.1%}" for t, share in shares.items())
        LOGGER.info(f"yolo-kd: epoch {trainer.epoch + 1}: KD {sum(shares.values()):.1%} of the loss ({parts})")


def draw_kd_results(trainer) -> None:
    """on_train_end: with `plots=True`, `kd_results.png` beside results.png: each KD term and `kd_share` per epoch."""
    csv = Path(trainer.save_dir) / "results.csv"
    if trainer.args.plots and RANK in {-1, 0} and csv.is_file():
        from .plots import plot_kd_results

        plot_kd_results(csv, unwrap_model(trainer.model).term_names, Path(trainer.save_dir) / "kd_results.png")


def close_unlabeled(trainer) -> None:
    """on_train_end: shut the unlabeled pool's loader down (Ultralytics closes only its own loaders)."""
    if trainer.yolo_kd.unlabeled_loader is not None:
        trainer.yolo_kd.unlabeled_loader.close()


# ---------------------------------------------------------------------- method wrappers: (trainer, base, *args)
def get_dataset(trainer, base):
    """The trainer's dataset check, then ours: a train split without a single label cannot be distilled; the
    unlabeled pool (`unlabeled=`, or `unlabeled:` in data.yaml) must hold images, and be there for `teacher_guard:
    relabel`."""
    data = base()
    check_train_labels(data)
    recipe = trainer.yolo_kd.recipe
    trainer.yolo_kd.unlabeled = unlabeled_files(recipe, data)
    if recipe.teacher_guard == GUARD_RELABEL and not trainer.yolo_kd.unlabeled:
        raise KDConfigError(f"teacher_guard={GUARD_RELABEL} relabels the unlabeled pool and the run has none: give "
                            "unlabeled=folder (or unlabeled: in data.yaml), or use teacher_guard=True")
    return data


def build_dataset(trainer, base, img_path: str, mode: str = "train", batch: int | None = None):
    """With a teacher at a larger size, the train set is built (mosaic, letterbox, augmentation) at that size;
    validation stays at the student's `imgsz`."""
    source = trainer.yolo_kd.recipe.source_size(trainer.args.imgsz)
    if mode != "train" or not source:
        return base(img_path, mode, batch)
    args = trainer.args
    trainer.args = copy(args)
    trainer.args.imgsz = source
    try:
        return base(img_path, mode, batch)
    finally:
        trainer.args = args


def get_dataloader(trainer, base, dataset_path, batch_size: int = 16, rank: int = 0, mode: str = "train"):
    """The trainer's loader; beside the train loader (first built, or rebuilt at a smaller batch after an OOM), the
    unlabeled pool's loader of `round(unlabeled_ratio x batch)` images per step, on this rank's share of the pool,
    at the train loader's size; the optimizer-step counter restarts with it, as Ultralytics' own does."""
    loader = base(dataset_path, batch_size, rank, mode)
    run = trainer.yolo_kd
    if mode != "train":
        return loader
    run.accumulation.reset()
    if run.unlabeled:
        close_unlabeled(trainer)
        run.unlabeled_loader = build_unlabeled_loader(trainer, batch_size, loader.dataset)
        if RANK in {-1, 0}:
            gt = unwrap_model(trainer.model).gt_only_methods
            LOGGER.info(f"yolo-kd: {len(run.unlabeled):,} unlabeled images, {run.unlabeled_loader.batch} per step "
                        f"beside {batch_size} labeled (unlabeled_ratio {run.recipe.unlabeled_ratio:g}); BatchNorm "
                        f"running statistics from "
                        f"{'labeled images only' if run.recipe.unlabeled_bn == 'labeled' else 'all images'}"
                        + (f"; detection loss on the teacher's boxes, {boxes_rule(run.recipe.unlabeled_boxes)} "
                           "(unlabeled_boxes)" if run.recipe.unlabeled_boxes is not None else "")
                        + (f"; Dense Teacher's pseudo-labels, the top {run.recipe.unlabeled_topk:.2%} of locations by "
                           "teacher score as foreground (unlabeled_topk)" if run.recipe.unlabeled_topk is not None
                           else "")
                        + (f"; those terms x{run.recipe.unlabeled_weight:g} (unlabeled_weight)"
                           if run.recipe.unlabeled_weight != DEFAULT_UNLABELED_WEIGHT else "")
                        + ("; the teacher sees each pool image without the photometric augmentation, the student "
                           "with it (unlabeled_views: weak-strong)" if run.recipe.unlabeled_views == "weak-strong"
                           else "")
                        + pool_kd_rule(run.recipe.unlabeled_kd, gt, run.recipe.labeled_kd))
    return loader


def pool_kd_rule(share: bool | float, gt_only: list[str], labeled_kd: bool) -> str:
    """Which images the KD terms read (`unlabeled_kd`, `labeled_kd`), for the log line."""
    if share is False:
        return ("; the KD terms read the labeled images only and the teacher's forward skips the pool "
                "(unlabeled_kd: false)")
    rule = (f"; the KD terms and the teacher's forward read {share:.0%} of each step's pool images, the detection term "
            f"all of them (unlabeled_kd: {share:g})" if share is not True else "")
    if not labeled_kd:
        rule += ("; the KD terms and the teacher's forward skip the labeled images, which train on their labels "
                 "alone (labeled_kd: false)")
    return rule + (f"; {', '.join(gt_only)} read ground truth and see the labeled images only" if gt_only else "")


def boxes_rule(boxes: float | str) -> str:
    """How `unlabeled_boxes` picks the teacher's boxes, for the log line."""
    conf, matched = box_selection(boxes)
    if labels_pool_once(boxes):
        return ("found once on each whole pool image, as many as the labeled images hold per image, the best across "
                "the pool" + (f", and every box at score >= {conf:g}" if conf is not None else "")
                + ", and moved with each image's augmentation")
    rules = (["as many per image as the labeled images beside them hold"] if matched else []) + (
        [f"at score >= {conf:g}"] if conf is not None else [])
    return " and every box ".join(rules)


def build_unlabeled_loader(trainer, batch_size: int, labeled=None) -> UnlabeledLoader:
    """The pool's loader for a labeled batch of `batch_size`: `round(unlabeled_ratio x batch)` images per step (at
    least 1), this rank's share of the pool, at the train loader's size, with the run's augmentation; with
    `unlabeled_boxes: label[+conf]`, the teacher's boxes on its images (`label_pool`, counted from `labeled`, the train
    loader's dataset) as their labels."""
    run, args = trainer.yolo_kd, trainer.args
    size = run.recipe.source_size(args.imgsz) or image_size(args.imgsz)
    files = rank_share(run.unlabeled)
    if labels_pool_once(run.recipe.unlabeled_boxes) and run.pool_boxes is None:
        run.pool_boxes = resumed_pool_boxes(run.resume_state) or label_pool(trainer, files, labeled)
    return UnlabeledLoader(files, args, trainer.data, size,
                           images_per_step(run.recipe.unlabeled_ratio, batch_size), int(trainer.stride), args.workers,
                           two_views=run.recipe.unlabeled_views == "weak-strong", boxes=run.pool_boxes)


def preprocess_batch(trainer, base, batch: dict) -> dict:
    """The trainer's preprocessing, then the engine's: the step counter advances (`accumulation`); with a
    high-resolution source, `teacher_img` keeps the loader's batch and `img` becomes its anti-aliased (area)
    downsample to the student's size (multi-scale applied to the student's size); when this step's KD reads the
    unlabeled pool, its images join the batch (`add_unlabeled`)."""
    run = trainer.yolo_kd
    run.accumulation.next_batch(int(trainer.accumulate))
    trainer.accumulate = StepEveryBatch(run.accumulation.accumulate)  # the engine decides (`optimizer_step`)
    if run.recipe.source_size(trainer.args.imgsz):
        batch = teacher_size_batch(trainer, base, batch)
    else:
        batch = base(batch)
    model = unwrap_model(trainer.model)
    if run.unlabeled_loader is not None and model.reads_unlabeled:
        images = images_per_step(run.recipe.unlabeled_ratio, len(batch["img"]))
        add_unlabeled(batch, run.unlabeled_loader, images,
                      teacher_rows=run.recipe.pool_kd_rows(images) if model.teacher_reads_pool else 0)
    return batch


def teacher_size_batch(trainer, base, batch: dict) -> dict:
    """`teacher_img`: the loader's batch at the teacher's size; `img`: its downsample to the student's size."""
    args = trainer.args
    multi_scale, args.multi_scale = args.multi_scale, 0.0
    try:
        batch = base(batch)
    finally:
        args.multi_scale = multi_scale
    source, stride = batch["img"], trainer.stride
    size = student_size(args.imgsz, multi_scale, stride)
    hw = tuple(max(stride, round(d * size / max(source.shape[-2:]) / stride) * stride) for d in source.shape[-2:])
    batch["teacher_img"], batch["img"] = source, resample(source, hw)
    return batch


def add_unlabeled(batch: dict, loader: UnlabeledLoader, images: int, *, teacher_rows: int) -> None:
    """`unlabeled_img`: `images` pool images as float [0, 1] at the size of `img`, for the student; with two views it
    is the strong view. For the first `teacher_rows` of them (those the teacher reads, `Recipe.pool_kd_rows`; 0: none),
    also the teacher's views: `unlabeled_weak_img`, the weak view, with two views; `unlabeled_teacher_img`, its view
    at the size of `teacher_img`, when the batch has one."""
    img, source = batch["img"], batch.get("teacher_img")
    drawn = loader.next(images)

    def scaled(x, like):
        return resample(x.to(img.device, non_blocking=True).float() / 255, tuple(like.shape[-2:])).to(like.dtype)

    weak = drawn["img"]
    batch["unlabeled_img"] = scaled(drawn.get("img_strong", weak), img)
    if loader.has_boxes:
        batch["unlabeled_boxes"] = {k: drawn[k].to(img.device) for k in ("batch_idx", "cls", "bboxes")}
    teacher_view = weak[:teacher_rows]
    if teacher_rows and "img_strong" in drawn:
        batch["unlabeled_weak_img"] = scaled(teacher_view, img)
    if teacher_rows and source is not None:
        batch["unlabeled_teacher_img"] = scaled(teacher_view, source)


def _close_dataloader_mosaic(trainer, base) -> None:
    """The trainer's final no-mosaic epochs start for the unlabeled pool too."""
    base()
    if trainer.yolo_kd.unlabeled_loader is not None:
        trainer.yolo_kd.unlabeled_loader.close_mosaic()


def optimizer_step(trainer, base) -> None:
    """Step (the trainer's clip, step, zero_grad, EMA update) only when Ultralytics' rule says the step is due, by the
    engine's counter (`accumulation`)."""
    accumulation = trainer.yolo_kd.accumulation
    if accumulation.due():
        base()
        accumulation.stepped()


def _handle_nan_recovery(trainer, base, epoch):
    """The trainer's NaN recovery; when it redoes the epoch, the step counter restarts as Ultralytics' does."""
    redo = base(epoch)
    if redo:
        trainer.yolo_kd.accumulation.reset()
    return redo


def setup_model(trainer, base):
    """The trainer's set-up; on resume, keep last.pt's KD state for the distiller built next."""
    ckpt = base()
    if trainer.resume and ckpt:
        trainer.yolo_kd.resume_state = ckpt.get(KD_STATE_KEY)
    return ckpt


def set_model_attributes(trainer, base) -> None:
    """Set nc/names/args on the student, then wrap it (before compile, freeze, AMP, DDP, optimizer and EMA)."""
    base()
    if isinstance(trainer.model, Distiller):
        return
    if trainer.args.compile:  # the distiller runs the student itself: a compiled forward would be a second one
        LOGGER.warning("yolo-kd: 'compile' is not supported with distillation and is disabled")
        trainer.args.compile = False
    run = trainer.yolo_kd
    check_imgsz(trainer.args.imgsz, max(int(trainer.model.stride.max()), MIN_GRID))  # Ultralytics' grid size
    trainer.model = Distiller(trainer.model, run.recipe, epochs=trainer.epochs, names=trainer.data["names"],
                              pool=run.teacher_pool, teacher_shapes=run.teacher_shapes, has_pool=bool(run.unlabeled))
    trainer.model.to(trainer.device)
    if run.resume_state:
        trainer.model.load_kd_state(run.resume_state)


def label_loss_items(trainer, base, loss_items=None, prefix: str = "train"):
    """The trainer's loss labels, without `val/<KD term>`: validation scores the student alone (its KD terms would
    be columns of zeros)."""
    out = base(loss_items, prefix)
    if prefix != "val":
        return out
    kd = {f"val/{t}" for t in unwrap_model(trainer.model).term_names}
    return [k for k in out if k not in kd] if loss_items is None else {k: v for k, v in out.items() if k not in kd}


WRAPPERS = {f.__name__: f for f in (get_dataset, build_dataset, get_dataloader, preprocess_batch, setup_model,
                                    set_model_attributes, save_model, _load_checkpoint_state, resume_training,
                                    _close_dataloader_mosaic, optimizer_step, _handle_nan_recovery, label_loss_items,
                                    validate)}


# ---------------------------------------------------------------------- helpers
def student_size(imgsz: int, multi_scale: float, stride: int) -> int:
    """The student's batch size this step: `imgsz`, or a random multi-scale size drawn as Ultralytics draws it."""
    if multi_scale <= 0:
        return int(imgsz)
    low = max(stride, int(imgsz * (1.0 - multi_scale)))
    return random.randrange(low, int(imgsz * (1.0 + multi_scale) + stride)) // stride * stride
