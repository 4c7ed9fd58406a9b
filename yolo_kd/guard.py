"""The teacher guard (`teacher_guard: true`): distillation stops once the student has caught up with its teacher on
the validation set, so a teacher no better than the student stops pulling it back (and adding pool images cannot
leave the student below where it would be without them for long).

The teachers are scored once, at the first validation, by a fresh copy of the run's validator on the run's
validation images at each teacher's own size (a deepcopy of the teacher: Ultralytics fuses what it validates).
After every validation (in `Trainer.validate`, before the epoch's last.pt is written): stop when the student's
mAP50-95 (the EMA model Ultralytics validates) >= the best teacher's. From then on every KD term is zero and the pool
is not drawn; the decision and the teachers' scores are kept in last.pt, so a resumed run continues with them. The
rule reads the validation set, not the labeled training images: a teacher trained on those images scores better on
them than it generalises, so a loss on them would keep a weak teacher in charge. Without validation every epoch
(`val=False`) the guard never acts before the last epoch, and says so at the start.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from ultralytics.utils import LOGGER

from .ultra import RANK, unwrap_model

MAP_KEY = "metrics/mAP50-95(B)"


def teacher_score(trainer, teacher, imgsz: int | None) -> float:
    """The teacher's mAP50-95 on the run's validation set, by a fresh validator of the run's kind (no plots, no
    JSON), at `imgsz` (the teacher's own size) or the run's."""
    args = copy.copy(trainer.args)
    args.plots, args.save_json, args.save_txt, args.verbose = False, False, False, False
    if imgsz:
        args.imgsz = imgsz
    validator = type(trainer.validator)(None, save_dir=Path(trainer.save_dir), args=args)
    stats = validator(model=copy.deepcopy(teacher))
    return float(stats[MAP_KEY])


def caught_up(student_map: float, teacher_map: float) -> bool:
    """Whether the student has reached its teacher: student mAP50-95 >= the teacher's."""
    return student_map >= teacher_map


def announce_guard(trainer) -> None:
    """on_train_start, with `teacher_guard`: say what it compares, or that without validation it cannot act."""
    if not trainer.yolo_kd.recipe.teacher_guard or RANK not in {-1, 0}:
        return
    if trainer.args.val:
        LOGGER.info("yolo-kd: teacher_guard: KD stops once the student's validation mAP50-95 reaches its teacher's")
    else:
        LOGGER.warning("yolo-kd: teacher_guard needs validation every epoch (val=True); with val=False it never acts")


def validate(trainer, base):
    """Trainer.validate, then, with `teacher_guard`: stop KD for good once the student's mAP50-95 reaches the best
    teacher's of the active stage. Decided here, before the epoch's last.pt is written, so a resumed run continues
    with the same decision; rank 0 decides, the other ranks follow."""
    metrics, fitness = base()
    distiller = unwrap_model(trainer.model)
    if not distiller.recipe.teacher_guard or distiller.kd_stopped or distiller.stage is None:
        return metrics, fitness
    stop = False
    if RANK in {-1, 0} and MAP_KEY in (metrics or {}):
        names = distiller.recipe.stages[distiller.stage].teachers
        missing = [n for n in names if n not in distiller.teacher_scores]
        if missing:
            teachers = distiller.pool.acquire(names, next(distiller.parameters()).device)
            for n in missing:
                distiller.teacher_scores[n] = teacher_score(trainer, teachers[n], distiller.recipe.teachers[n].imgsz)
        best = max(distiller.teacher_scores[n] for n in names)
        student = float(metrics[MAP_KEY])
        stop = caught_up(student, best)
        if stop:
            LOGGER.info(f"yolo-kd: epoch {trainer.epoch + 1}: the student's mAP50-95 {student:.4f} has reached its "
                        f"teacher's {best:.4f}: KD off for the rest of the run (teacher_guard)")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = torch.tensor([float(stop)], device=next(distiller.parameters()).device)
        torch.distributed.broadcast(flag, 0)
        stop = bool(flag.item())
    distiller.kd_stopped = stop
    return metrics, fitness
