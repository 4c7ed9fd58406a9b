"""The engine: distillation attached to one Ultralytics trainer object, whatever its class (part of the seam).

`callbacks(recipe)` is an Ultralytics callbacks dict. Its `on_pretrain_routine_start` hook (`Attach`, fired inside
`BaseTrainer.__init__` before the dataset is read) runs the pre-run checks and `attach`es the engine: per-instance
wrappers around the trainer's own bound methods (the user's subclass overrides included), so it composes with any
`DetectionTrainer` subclass:
- `get_dataset`: the trainer's check, then a train split without a single label is refused;
- `build_dataset` / `preprocess_batch`: with a teacher at a larger size, the train set is built at that size and each
  batch keeps it as `teacher_img` while `img` becomes its downsample to the student's size;
- `setup_model`: on resume, keep last.pt's KD state;
- `set_model_attributes`: after nc/names/args are set, wrap the student in a `Distiller` (before compile, freeze,
  AMP, DDP, the optimizer and the EMA: adapters are optimised, synced, EMA'd, saved, resumed); compile is disabled;
- `save_model`: plain student checkpoints, written atomically; last.pt adds the KD state under `yolo_kd`;
- `_load_checkpoint_state`: resume and NaN recovery rebuild the EMA around the distiller and restore the adapters;
- `label_loss_items`: no `val/<KD term>` columns (validation scores the student alone);
- `resume_training`: a resumed run continues from the live weights, the float32 EMA and optimizer (`continuation`).
Per epoch, `reseed` re-derives the random state from (seed, epoch) and `select_stage` activates the stage; at its
end `log_stage` writes the `kd_stage` / `kd_nan_skips` columns and `log_kd_share` the KD share of the loss (a log
line and the `kd_share` column); after the run, `drop_continuation` takes the resume-only tensors out of last.pt.
Every hook is a module-level function or a plain object (picklable for DDP).

Ultralytics fires `on_pretrain_routine_start` only on rank 0 and after the run folder exists, so `Attach` removes a
folder it refuses while still empty, and refuses multi-GPU runs; `trainer.KDTrainer` attaches in its own `__init__`
instead (before the run folder, on every rank).
"""

from __future__ import annotations

import functools
import io
import os
import random
import shutil
from copy import copy
from pathlib import Path

import numpy as np
import torch
from ultralytics.utils import LOGGER, RANK
from ultralytics.utils.torch_utils import ModelEMA, unwrap_model

from .compat import check_before_run
from .distiller import KD_STATE_KEY, Distiller
from .errors import KDConfigError
from .preflight import MIN_GRID, check_imgsz, check_train_labels
from .recipe import Recipe
from .resolution import resample
from .unlabeled import unlabeled_files


class KDRun:
    """What the engine keeps on a trainer (`trainer.yolo_kd`): the recipe, the teachers checked before the run, and
    last.pt's KD state on resume."""

    def __init__(self, recipe: Recipe, pool=None, teacher_shapes=None):
        self.recipe, self.pool, self.teacher_shapes = recipe, pool, teacher_shapes
        self.resume_state = None
        self.unlabeled = None  # the pool's image files, resolved with the data set (`get_dataset`)


def attach(trainer, recipe: Recipe, pool=None, teacher_shapes=None) -> None:
    """Wrap the trainer object's methods listed in `WRAPPERS` (once); `pool`, `teacher_shapes`: `check_before_run`'s."""
    if getattr(trainer, "yolo_kd", None) is not None:
        return
    trainer.yolo_kd = KDRun(recipe, pool, teacher_shapes)
    for name, wrapper in WRAPPERS.items():
        setattr(trainer, name, functools.partial(wrapper, trainer, getattr(trainer, name)))


class Attach:
    """on_pretrain_routine_start: check the run's inputs, then `attach` the engine (no-op when already attached)."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def __call__(self, trainer) -> None:
        if getattr(trainer, "yolo_kd", None) is not None:
            return
        if trainer.world_size > 1:  # Ultralytics runs this event on rank 0 only: the other ranks would not distil
            raise KDConfigError("yolo_kd.callbacks runs in one process: for multi-GPU training use "
                                "yolo_kd.distill(model, ...) (it composes with trainer=)")
        try:
            pool, shapes = check_before_run(self.recipe, trainer.args)
        except KDConfigError:
            discard_fresh_run(Path(trainer.save_dir))
            raise
        attach(trainer, self.recipe, pool, shapes)


def discard_fresh_run(save_dir: Path) -> None:
    """Remove a run folder holding only what the trainer just wrote (args.yaml, an empty weights/)."""
    weights = save_dir / "weights"
    fresh = {p.name for p in save_dir.iterdir()} <= {"args.yaml", "weights"}
    if fresh and not (weights.is_dir() and any(weights.iterdir())):
        shutil.rmtree(save_dir)


def callbacks(recipe: Recipe) -> dict[str, list]:
    """The Ultralytics callbacks dict that distils with `recipe` on any trainer."""
    return {"on_pretrain_routine_start": [Attach(recipe)], "on_train_epoch_start": [reseed, select_stage],
            "on_train_epoch_end": [log_stage, log_kd_share], "on_train_end": [drop_continuation, close_pool]}


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


def reseed(trainer) -> None:
    """on_train_epoch_start, from the second epoch on: seed random, numpy, torch and the train loader's shuffling from
    (seed, epoch, rank) and restart the loader's iterator, so epoch e draws the same order and augmentation whether
    the run started at 0 or resumed at e (Ultralytics seeds once, at start, and saves no random state). The first
    epoch keeps Ultralytics' own seeding, so a run with KD weight 0 matches a plain run there."""
    if trainer.epoch == 0:
        return
    seed = (int(trainer.args.seed) * 1_000_003 + int(trainer.epoch) * 7919 + max(RANK, 0)) % 2**31
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    loader = trainer.train_loader
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(seed)
    if hasattr(loader, "reset"):
        loader.reset()  # a new iterator draws its worker seeds from the generator just seeded
    pool = getattr(unwrap_model(trainer.model), "unlabeled", None)
    if pool is not None:
        pool.reseed(seed + 1)


def log_stage(trainer) -> None:
    """on_train_epoch_end: record the stage (1-based, 0 = no KD) and dropped non-finite terms in results.csv."""
    distiller = unwrap_model(trainer.model)
    trainer.lr["kd_stage"] = 0 if distiller.stage is None else distiller.stage + 1
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


def drop_continuation(trainer) -> None:
    """on_train_end: a finished run's last.pt cannot be resumed, so the resume-only tensors leave it (its size)."""
    if not trainer.last.exists():
        return
    ckpt = torch.load(trainer.last, map_location="cpu", weights_only=False)
    if (ckpt.get(KD_STATE_KEY) or {}).pop("continue", None) is not None:
        buffer = io.BytesIO()
        torch.save(ckpt, buffer)
        atomic_write(trainer.last, buffer.getvalue())


def close_pool(trainer) -> None:
    """on_train_end: shut the unlabeled pool's loader workers down (Ultralytics closes only its own loaders)."""
    pool = getattr(unwrap_model(trainer.model), "unlabeled", None)
    if pool is not None:
        pool.close()


# ---------------------------------------------------------------------- method wrappers: (trainer, base, *args)
def get_dataset(trainer, base):
    """The trainer's dataset check, then ours: a train split without a single label cannot be distilled; the
    unlabeled pool (`unlabeled=`, or `unlabeled:` in data.yaml) must hold images."""
    data = base()
    check_train_labels(data)
    trainer.yolo_kd.unlabeled = unlabeled_files(trainer.yolo_kd.recipe, data)
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


def preprocess_batch(trainer, base, batch: dict) -> dict:
    """The trainer's preprocessing; with a high-resolution source, `teacher_img` keeps the loader's batch and `img`
    becomes its anti-aliased (area) downsample to the student's size (multi-scale applied to the student's size)."""
    if not trainer.yolo_kd.recipe.source_size(trainer.args.imgsz):
        return base(batch)
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
                              pool=run.pool, teacher_shapes=run.teacher_shapes, unlabeled=run.unlabeled)
    trainer.model.to(trainer.device)
    if run.resume_state:
        trainer.model.load_kd_state(run.resume_state)


def save_model(trainer, base):
    """Write the trainer's checkpoints with the student alone, each one atomically; last.pt adds the KD state.

    Ultralytics serialises the checkpoint once and writes the same bytes to last.pt and best.pt in place. Here it
    writes them into in-memory sinks instead; best.pt gets those bytes, last.pt gets them with the KD state added,
    each through a temp file renamed over the target, so a kill at any moment leaves a whole checkpoint.
    """
    model, ema, last, best = trainer.model, trainer.ema.ema, trainer.last, trainer.best
    trainer.model, trainer.ema.ema = unwrap_model(model).student, ema.student
    last_sink, best_sink = CheckpointSink(), CheckpointSink()
    trainer.last, trainer.best = last_sink, best_sink
    try:
        saved = base()
    finally:
        trainer.model, trainer.ema.ema, trainer.last, trainer.best = model, ema, last, best
    if best_sink.data is not None:
        atomic_write(best, best_sink.data)
    if last_sink.data is not None:
        atomic_write(last, with_kd_state(last_sink.data, trainer, unwrap_model(model), ema))
    return saved


def _load_checkpoint_state(trainer, base, ckpt) -> None:
    """The trainer's optimizer/scaler/stopper restore; the EMA and adapters are rebuilt around the distiller."""
    base({**ckpt, "ema": None})
    if trainer.ema and ckpt.get("ema"):
        trainer.ema = ModelEMA(trainer.model)
        trainer.ema.ema.student.load_state_dict(ckpt["ema"].float().state_dict())
        trainer.ema.updates = ckpt["updates"]
    state = ckpt.get(KD_STATE_KEY)
    if state:
        unwrap_model(trainer.model).load_kd_state(state)
        if trainer.ema:
            trainer.ema.ema.load_kd_state(state)


def resume_training(trainer, base, ckpt) -> None:
    """The trainer's resume, then what continues the interrupted run rather than restarting from its EMA: the live
    weights, the EMA in float32, the optimizer tensors Ultralytics saved in float16 and the mosaic buffer
    (`continuation`)."""
    base(ckpt)
    saved = ((ckpt or {}).get(KD_STATE_KEY) or {}).get("continue") if trainer.resume else None
    if not saved:
        return
    unwrap_model(trainer.model).load_state_dict(saved["model"])
    trainer.ema.ema.load_state_dict(saved["ema"])
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    for i, tensors in saved["optimizer"].items():
        for key, value in tensors.items():
            trainer.optimizer.state[params[i]][key].copy_(value)
    dataset = trainer.train_loader.dataset
    for i in saved.get("buffer", ()):  # reloads the images in the same order, which rebuilds the same buffer
        dataset.load_image(i)


def label_loss_items(trainer, base, loss_items=None, prefix: str = "train"):
    """The trainer's loss labels, without `val/<KD term>`: validation scores the student alone (its KD terms would
    be columns of zeros)."""
    out = base(loss_items, prefix)
    if prefix != "val":
        return out
    kd = {f"val/{t}" for t in unwrap_model(trainer.model).term_names}
    return [k for k in out if k not in kd] if loss_items is None else {k: v for k, v in out.items() if k not in kd}


WRAPPERS = {f.__name__: f for f in (get_dataset, build_dataset, preprocess_batch, setup_model, set_model_attributes,
                                    save_model, _load_checkpoint_state, resume_training, label_loss_items)}


# ---------------------------------------------------------------------- helpers
class CheckpointSink:
    """Stands in for a checkpoint path while Ultralytics saves: keeps the bytes it would have written in place."""

    def __init__(self):
        self.data = None

    def write_bytes(self, data: bytes) -> int:
        self.data = data
        return len(data)


def with_kd_state(data: bytes, trainer, distiller: Distiller, ema: Distiller) -> bytes:
    """A serialised Ultralytics checkpoint with the plain-data KD state added under `yolo_kd` (in memory): the
    distiller's (EMA adapters, recipe, stage, balance) and what resume needs to continue the run (`continuation`)."""
    ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    ckpt[KD_STATE_KEY] = {**distiller.kd_state(adapters=ema.methods),
                          "continue": continuation(trainer, distiller, ema, ckpt["optimizer"])}
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return buffer.getvalue()


def continuation(trainer, distiller: Distiller, ema: Distiller, saved_optimizer: dict | None) -> dict:
    """What Ultralytics' checkpoint leaves out or rounds, as plain tensors: the live student and adapters (its resume
    starts from the EMA), the EMA at full precision (saved in float16), each optimizer tensor it saved at a lower
    precision than the live one (SGD's momentum; Adam's moments are kept in float32), by parameter index, and the
    train set's mosaic buffer (the images recently loaded, which mosaic draws its partners from)."""
    def plain(state: dict) -> dict:
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    optimizer = {}
    for i, live in (trainer.optimizer.state_dict()["state"].items() if saved_optimizer else ()):
        kept = saved_optimizer["state"].get(i, {})
        rounded = {k: v.detach().cpu().clone() for k, v in live.items()
                   if torch.is_tensor(v) and torch.is_tensor(kept.get(k)) and kept[k].dtype != v.dtype}
        if rounded:
            optimizer[i] = rounded
    buffer = list(getattr(trainer.train_loader.dataset, "buffer", None) or [])  # empty with loader workers
    return {"model": plain(distiller.state_dict()), "ema": plain(ema.state_dict()), "optimizer": optimizer,
            "buffer": buffer}


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, then rename it over `path`: readers see the old or the new file."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def student_size(imgsz: int, multi_scale: float, stride: int) -> int:
    """The student's batch size this step: `imgsz`, or a random multi-scale size drawn as Ultralytics draws it."""
    if multi_scale <= 0:
        return int(imgsz)
    low = max(stride, int(imgsz * (1.0 - multi_scale)))
    return random.randrange(low, int(imgsz * (1.0 + multi_scale) + stride)) // stride * stride
