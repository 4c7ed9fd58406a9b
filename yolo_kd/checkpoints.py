"""Checkpoint I/O of the engine (part of the seam): plain student checkpoints written atomically, the KD state in
last.pt, and what a resumed run needs to continue the interrupted one exactly.

Wrappers `(trainer, base, *args)` around the trainer's own methods (installed by `hooks.attach`):
- `save_model`: Ultralytics writes last.pt / best.pt into temp files beside them (`self.last` / `self.best` are real
  paths throughout, so a user's override that copies them works); best.pt is renamed into place, last.pt gets the KD
  state under `yolo_kd` first; a kill at any moment leaves whole checkpoints;
- `_load_checkpoint_state`: resume and NaN recovery rebuild the EMA around the distiller and restore the adapters;
- `resume_training`: continue from the live weights, the float32 EMA and optimizer, the mosaic buffer, and the
  gradients accumulated since the last optimizer step with the step counter (`continuation`).
`drop_continuation` (on_train_end) takes the resume-only tensors out of a finished run's last.pt.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from .distiller import KD_STATE_KEY, Distiller
from .ultra import ModelEMA, unwrap_model


def partial_path(path: Path) -> Path:
    """The temp file a checkpoint is written to before it is renamed over `path`."""
    return path.with_name(f".{path.name}.partial")


def save_model(trainer, base):
    """Write the trainer's checkpoints with the student alone, each one atomically; last.pt adds the KD state."""
    model, ema, last, best = trainer.model, trainer.ema.ema, trainer.last, trainer.best
    tmp_last, tmp_best = partial_path(last), partial_path(best)
    for tmp in (tmp_last, tmp_best):
        tmp.unlink(missing_ok=True)
    trainer.model, trainer.ema.ema = unwrap_model(model).student, ema.student
    trainer.last, trainer.best = tmp_last, tmp_best
    try:
        saved = base()
    finally:
        trainer.model, trainer.ema.ema, trainer.last, trainer.best = model, ema, last, best
    if tmp_best.exists():
        os.replace(tmp_best, best)
    if tmp_last.exists():
        atomic_write(last, with_kd_state(tmp_last.read_bytes(), trainer, unwrap_model(model), ema))  # renames tmp_last
    return saved


def with_kd_state(data: bytes, trainer, distiller: Distiller, ema: Distiller) -> bytes:
    """A serialised Ultralytics checkpoint with the plain-data KD state added under `yolo_kd` (in memory): the
    distiller's (EMA adapters, recipe, stage, balance) and what resume needs to continue the run (`continuation`)."""
    ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    ckpt[KD_STATE_KEY] = {**distiller.kd_state(adapters=ema.methods),
                          "continue": continuation(trainer, distiller, ema, ckpt["optimizer"])}
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return buffer.getvalue()


def optimizer_params(optimizer) -> list:
    """The optimizer's parameters in its state dict's index order."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def continuation(trainer, distiller: Distiller, ema: Distiller, saved_optimizer: dict | None) -> dict:
    """What Ultralytics' checkpoint leaves out or rounds, as plain tensors: the live student and adapters (its resume
    starts from the EMA), the EMA at full precision (saved in float16), each optimizer tensor it saved at a lower
    precision than the live one (SGD's momentum; Adam's moments are kept in float32), by parameter index, the train
    set's mosaic buffer (the images recently loaded, which mosaic draws its partners from), and the gradients
    accumulated since the last optimizer step with the step counter (`accumulation`); under `teacher_guard:
    relabel`, the pool's boxes once the student's EMA has made them (a resumed run cannot make them again)."""
    def plain(state: dict) -> dict:
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    optimizer = {}
    for i, live in (trainer.optimizer.state_dict()["state"].items() if saved_optimizer else ()):
        kept = saved_optimizer["state"].get(i, {})
        rounded = {k: v.detach().cpu().clone() for k, v in live.items()
                   if torch.is_tensor(v) and torch.is_tensor(kept.get(k)) and kept[k].dtype != v.dtype}
        if rounded:
            optimizer[i] = rounded
    grads = {i: p.grad.detach().cpu().clone() for i, p in enumerate(optimizer_params(trainer.optimizer))
             if p.grad is not None}
    buffer = list(getattr(trainer.train_loader.dataset, "buffer", None) or [])  # empty with loader workers
    return {"model": plain(distiller.state_dict()), "ema": plain(ema.state_dict()), "optimizer": optimizer,
            "buffer": buffer, "grads": grads, "last_opt_step": trainer.yolo_kd.accumulation.last_opt_step,
            "pool_boxes": trainer.yolo_kd.pool_boxes if distiller.boxes_score is not None else None}


def resumed_pool_boxes(state: dict | None) -> dict | None:
    """The pool's boxes a relabeled run kept in last.pt's continuation (`teacher_guard: relabel`), or None."""
    return ((state or {}).get("continue") or {}).get("pool_boxes")


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
    """The trainer's resume, then what continues the interrupted run rather than restarting from its EMA (see
    `continuation`). The accumulated gradients wait in `trainer.yolo_kd.resumed_grads` for the first epoch's start
    (Ultralytics zeroes the gradients once more before its loop)."""
    base(ckpt)
    saved = ((ckpt or {}).get(KD_STATE_KEY) or {}).get("continue") if trainer.resume else None
    if not saved:
        return
    unwrap_model(trainer.model).load_state_dict(saved["model"])
    trainer.ema.ema.load_state_dict(saved["ema"])
    params = optimizer_params(trainer.optimizer)
    for i, tensors in saved["optimizer"].items():
        for key, value in tensors.items():
            trainer.optimizer.state[params[i]][key].copy_(value)
    dataset = trainer.train_loader.dataset
    for i in saved.get("buffer", ()):  # reloads the images in the same order, which rebuilds the same buffer
        dataset.load_image(i)
    trainer.yolo_kd.accumulation.last_opt_step = int(saved.get("last_opt_step", -1))
    trainer.yolo_kd.resumed_grads = saved.get("grads") or {}


def restore_grads(trainer) -> None:
    """on_train_epoch_start: put a resumed run's accumulated gradients back (once)."""
    grads, trainer.yolo_kd.resumed_grads = trainer.yolo_kd.resumed_grads, None
    if grads:
        params = optimizer_params(trainer.optimizer)
        for i, grad in grads.items():
            params[i].grad = grad.to(device=params[i].device, dtype=params[i].dtype)


def drop_continuation(trainer) -> None:
    """on_train_end: a finished run's last.pt cannot be resumed, so the resume-only tensors leave it (its size)."""
    if not trainer.last.exists():
        return
    ckpt = torch.load(trainer.last, map_location="cpu", weights_only=False)
    if (ckpt.get(KD_STATE_KEY) or {}).pop("continue", None) is not None:
        buffer = io.BytesIO()
        torch.save(ckpt, buffer)
        atomic_write(trainer.last, buffer.getvalue())


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, then rename it over `path`: readers see the old or the new file."""
    tmp = partial_path(path)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(data)
    os.replace(tmp, path)
