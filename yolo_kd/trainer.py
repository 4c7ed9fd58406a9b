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

import os
from pathlib import Path

import torch
from ultralytics.cfg import get_cfg
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, LOGGER, RANK
from ultralytics.utils.torch_utils import ModelEMA, unwrap_model

from .distiller import KD_STATE_KEY, Distiller
from .preflight import MIN_GRID, check_imgsz, check_train_labels, early_checks
from .recipe import Recipe
from .teachers import check_teacher_file


class KDTrainer(DetectionTrainer):
    """Ultralytics DetectionTrainer with distillation from the class's `recipe`."""

    recipe: Recipe | None = None

    def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None):
        if self.recipe is None:
            raise TypeError("use yolo_kd.trainer_for(recipe) or yolo_kd.distill(...) to make a KD trainer")
        early_checks(get_cfg(cfg, overrides))  # before Ultralytics creates or writes the run directory
        super().__init__(cfg, overrides, _callbacks)
        for name, spec in self.recipe.teachers.items():
            check_teacher_file(name, spec)
        self.recipe.resolve_stages(self.epochs)
        self._kd_resume_state = None
        for event, callback in (("on_train_epoch_start", select_stage), ("on_train_epoch_end", log_stage)):
            if callback not in self.callbacks[event]:  # DDP workers receive the parent's callbacks already added
                self.add_callback(event, callback)

    def get_dataset(self):
        """Ultralytics' dataset check, then ours: a train split without a single label cannot be distilled."""
        data = super().get_dataset()
        check_train_labels(data)
        return data

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
            self.model = Distiller(self.model, self.recipe, epochs=self.epochs, names=self.data["names"])
            self.model.to(self.device)
            if self._kd_resume_state:
                self.model.load_kd_state(self._kd_resume_state)

    # ------------------------------------------------------------------ checkpoints
    def save_model(self):
        """Write Ultralytics' checkpoints with the student alone; last.pt gets the KD state and appears atomically.

        Ultralytics writes last.pt in place; it is redirected to a temp file that receives the KD state and then
        replaces last.pt, so a kill at any moment leaves either the previous complete last.pt or the new one.
        """
        model, ema, last = self.model, self.ema.ema, self.last
        tmp = last.with_name(f".{last.name}.partial")
        self.model, self.ema.ema, self.last = unwrap_model(model).student, ema.student, tmp
        try:
            saved = super().save_model()
        finally:
            self.model, self.ema.ema, self.last = model, ema, last
        add_kd_state(tmp, unwrap_model(model).kd_state(adapters=ema.methods), last)
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


def add_kd_state(src: Path, state: dict, dest: Path) -> None:
    """Add the KD state to the temp checkpoint `src`, then rename it onto `dest` (atomic: a kill never tears it)."""
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    ckpt[KD_STATE_KEY] = state
    torch.save(ckpt, src)
    os.replace(src, dest)


def select_stage(trainer) -> None:
    """on_train_epoch_start: activate the stage covering this epoch; log switches."""
    distiller = unwrap_model(trainer.model)
    message = distiller.set_epoch(trainer.epoch)
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
