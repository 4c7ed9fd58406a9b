"""The only room that touches Ultralytics' trainer internals (tested on ultralytics 8.4.190).

`KDTrainer` is a `DetectionTrainer` that:
- wraps the student in a `Distiller` right after Ultralytics sets nc/names/args on it and before freezing, AMP,
  DDP, the optimizer and the EMA are set up, so adapters are trained, synced, EMA'd and resumable;
- saves checkpoints with the plain student in place of the distiller (stock Ultralytics can load them) and adds the
  adapters' state as plain tensors under `yolo_kd` in last.pt, which resume and NaN recovery read back;
- selects the KD stage each epoch and logs it as the `kd_stage` column of results.csv;
- refuses, before training, inputs Ultralytics only warns about: an image size off the stride grid, a train split
  without labels (`yolo_kd.preflight`).

A run's recipe rides on the trainer class (`trainer_for(recipe)`), which Ultralytics passes to DDP workers.
"""

from __future__ import annotations

import io
import os
import random
from copy import copy
from pathlib import Path

import torch
from ultralytics.cfg import get_cfg
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, LOGGER, RANK
from ultralytics.utils.torch_utils import ModelEMA, unwrap_model

from .distiller import KD_STATE_KEY, Distiller
from .compat import check_before_run
from .preflight import MIN_GRID, check_imgsz, check_train_labels
from .recipe import Recipe
from .resolution import resample
from .unlabeled import unlabeled_files


class KDTrainer(DetectionTrainer):
    """Ultralytics DetectionTrainer with distillation from the class's `recipe`."""

    recipe: Recipe | None = None

    def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None):
        if self.recipe is None:
            raise TypeError("use yolo_kd.trainer_for(recipe) or yolo_kd.distill(...) to make a KD trainer")
        # before Ultralytics creates or writes the run directory; the first stage's teachers stay loaded
        self._pool, self._teacher_shapes = check_before_run(self.recipe, get_cfg(cfg, overrides))
        super().__init__(cfg, overrides, _callbacks)
        self.recipe.resolve_stages(self.epochs)
        self.source_imgsz = self.recipe.source_size(self.args.imgsz)
        if self.args.compile:  # the distiller runs the student itself: a compiled forward would be a second one
            LOGGER.warning("yolo-kd: 'compile' is not supported with distillation and is disabled")
            self.args.compile = False
        self._kd_resume_state = None
        for event, callback in (("on_train_epoch_start", select_stage), ("on_train_epoch_end", log_stage)):
            if callback not in self.callbacks[event]:  # DDP workers receive the parent's callbacks already added
                self.add_callback(event, callback)

    def get_dataset(self):
        """Ultralytics' dataset check, then ours: a train split without a single label cannot be distilled; the
        unlabeled pool (`unlabeled=`, or `unlabeled:` in data.yaml) must hold images."""
        data = super().get_dataset()
        check_train_labels(data)
        self._unlabeled_files = unlabeled_files(self.recipe, data)
        return data

    # ------------------------------------------------------------------ a high-resolution source for teachers at their own size
    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None):
        """With a teacher at a larger size, the train set is built (mosaic, letterbox, augmentation) at that size;
        validation stays at the student's `imgsz`."""
        if mode != "train" or not self.source_imgsz:
            return super().build_dataset(img_path, mode, batch)
        args = self.args
        self.args = copy(args)
        self.args.imgsz = self.source_imgsz
        try:
            return super().build_dataset(img_path, mode, batch)
        finally:
            self.args = args

    def preprocess_batch(self, batch: dict) -> dict:
        """Ultralytics' preprocessing; with a high-resolution source, `teacher_img` keeps the loader's batch and `img`
        becomes its anti-aliased (area) downsample to the student's size (multi-scale applied to the student's size)."""
        if not self.source_imgsz:
            return super().preprocess_batch(batch)
        multi_scale, self.args.multi_scale = self.args.multi_scale, 0.0
        try:
            batch = super().preprocess_batch(batch)
        finally:
            self.args.multi_scale = multi_scale
        source = batch["img"]
        size = student_size(self.args.imgsz, multi_scale, self.stride)
        hw = tuple(max(self.stride, round(d * size / max(source.shape[-2:]) / self.stride) * self.stride)
                   for d in source.shape[-2:])
        batch["teacher_img"], batch["img"] = source, resample(source, hw)
        return batch

    # ------------------------------------------------------------------ model set-up
    def setup_model(self):
        """Ultralytics' set-up; on resume, keep last.pt's KD state for the distiller built next."""
        ckpt = super().setup_model()
        if self.resume and ckpt:
            self._kd_resume_state = ckpt.get(KD_STATE_KEY)
        return ckpt

    def set_model_attributes(self):
        """Set nc/names/args on the student, then wrap it (before freeze, AMP, DDP, optimizer and EMA)."""
        super().set_model_attributes()
        if not isinstance(self.model, Distiller):
            check_imgsz(self.args.imgsz, max(int(self.model.stride.max()), MIN_GRID))  # Ultralytics' grid size
            self.model = Distiller(self.model, self.recipe, epochs=self.epochs, names=self.data["names"],
                                   pool=self._pool, teacher_shapes=self._teacher_shapes,
                                   unlabeled=self._unlabeled_files)
            self.model.to(self.device)
            if self._kd_resume_state:
                self.model.load_kd_state(self._kd_resume_state)

    # ------------------------------------------------------------------ checkpoints
    def save_model(self):
        """Write Ultralytics' checkpoints with the student alone, each one atomically; last.pt adds the KD state.

        Ultralytics serialises the checkpoint once and writes the same bytes to last.pt and best.pt in place. Here it
        writes them into in-memory sinks instead; best.pt gets those bytes, last.pt gets them with the KD state
        added, each through a temp file renamed over the target, so a kill at any moment leaves a whole checkpoint.
        """
        model, ema, last, best = self.model, self.ema.ema, self.last, self.best
        self.model, self.ema.ema = unwrap_model(model).student, ema.student
        last_sink, best_sink = CheckpointSink(), CheckpointSink()
        self.last, self.best = last_sink, best_sink
        try:
            saved = super().save_model()
        finally:
            self.model, self.ema.ema, self.last, self.best = model, ema, last, best
        if best_sink.data is not None:
            atomic_write(best, best_sink.data)
        if last_sink.data is not None:
            atomic_write(last, with_kd_state(last_sink.data, unwrap_model(model).kd_state(adapters=ema.methods)))
        return saved

    def _load_checkpoint_state(self, ckpt):
        """Ultralytics' optimizer/scaler/stopper restore; the EMA and adapters are rebuilt around the distiller."""
        super()._load_checkpoint_state({**ckpt, "ema": None})
        if self.ema and ckpt.get("ema"):
            self.ema = ModelEMA(self.model)
            self.ema.ema.student.load_state_dict(ckpt["ema"].float().state_dict())
            self.ema.updates = ckpt["updates"]
        state = ckpt.get(KD_STATE_KEY)
        if state:
            unwrap_model(self.model).load_kd_state(state)
            if self.ema:
                self.ema.ema.load_kd_state(state)


class CheckpointSink:
    """Stands in for a checkpoint path while Ultralytics saves: keeps the bytes it would have written in place."""

    def __init__(self):
        self.data = None

    def write_bytes(self, data: bytes) -> int:
        self.data = data
        return len(data)


def with_kd_state(data: bytes, state: dict) -> bytes:
    """A serialised Ultralytics checkpoint with the plain-data KD state added under `yolo_kd` (in memory)."""
    ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    ckpt[KD_STATE_KEY] = state
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return buffer.getvalue()


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


def select_stage(trainer) -> None:
    """on_train_epoch_start: activate the stage covering this epoch; log switches."""
    distiller = unwrap_model(trainer.model)
    message = distiller.set_epoch(trainer.epoch, len(trainer.train_loader))
    if message and RANK in {-1, 0}:
        LOGGER.info(message)


def log_stage(trainer) -> None:
    """on_train_epoch_end: record the stage (1-based, 0 = no KD) and dropped non-finite terms in results.csv."""
    distiller = unwrap_model(trainer.model)
    trainer.lr["kd_stage"] = 0 if distiller.stage is None else distiller.stage + 1
    trainer.lr["kd_nan_skips"] = distiller.nan_skips
    if distiller.nan_skips and RANK in {-1, 0}:
        LOGGER.warning(f"yolo-kd: {distiller.nan_skips} non-finite KD term(s) dropped so far")


def trainer_for(recipe: Recipe, base: type = KDTrainer) -> type:
    """A KDTrainer subclass carrying `recipe` (picklable by value, so DDP workers get the same recipe)."""
    return type("RecipeKDTrainer", (base,), {"recipe": recipe, "__module__": __name__})
