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

`teacher_guard: relabel` (self-training, for a teacher the student outgrows): when the guard fires, the teachers'
terms stop but the pool stays in training through its detection term (`unlabeled_boxes: label[+conf]`), and the
pool's boxes follow the best model seen: after each validation where the student's EMA scores at least
(1 + RELABEL_GAIN) x the model that made the current boxes (the teacher first), the EMA relabels the pool by the same
rule (`pool_labels.relabel_pool`), used from the next epoch. The gain bounds the relabelings (a student that doubles
its teacher's mAP relabels about 7 times) and keeps a boxes' source that validation cannot tell from the last one.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from ultralytics.utils import LOGGER

from .pool_labels import relabel_pool
from .recipe import GUARD_RELABEL
from .ultra import RANK, unwrap_model

MAP_KEY = "metrics/mAP50-95(B)"
RELABEL_GAIN = 0.1  # teacher_guard: relabel: the EMA relabels the pool once it scores 10% above the boxes' source


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


def relabel_due(student_map: float, source_map: float) -> bool:
    """Whether the student's EMA should relabel the pool: its mAP50-95 >= (1 + RELABEL_GAIN) x that of the model that
    made the pool's current boxes."""
    return student_map >= (1 + RELABEL_GAIN) * source_map


def announce_guard(trainer) -> None:
    """on_train_start, with `teacher_guard`: say what it compares, or that without validation it cannot act."""
    guard = trainer.yolo_kd.recipe.teacher_guard
    if not guard or RANK not in {-1, 0}:
        return
    if not trainer.args.val:
        LOGGER.warning("yolo-kd: teacher_guard needs validation every epoch (val=True); with val=False it never acts")
    elif guard == GUARD_RELABEL:
        LOGGER.info("yolo-kd: teacher_guard: relabel: once the student's validation mAP50-95 reaches its teacher's, "
                    "the teacher's terms stop and the student trains on the pool's boxes, relabeled by its EMA each "
                    f"time it scores {RELABEL_GAIN:.0%} above the model that made them")
    else:
        LOGGER.info("yolo-kd: teacher_guard: KD stops once the student's validation mAP50-95 reaches its teacher's")


def validate(trainer, base):
    """Trainer.validate, then, with `teacher_guard`: stop KD for good once the student's mAP50-95 reaches the best
    teacher's of the active stage; with `relabel`, from then on relabel the pool when the student is due
    (`relabel_due`). Decided here, before the epoch's last.pt is written, so a resumed run continues with the same
    decisions; rank 0 decides, the other ranks follow."""
    metrics, fitness = base()
    distiller = unwrap_model(trainer.model)
    if not distiller.recipe.teacher_guard or distiller.stage is None:
        return metrics, fitness
    student = float(metrics[MAP_KEY]) if RANK in {-1, 0} and MAP_KEY in (metrics or {}) else None
    if not distiller.kd_stopped:
        best = best_teacher_score(trainer, distiller) if student is not None else None
        stop = student is not None and caught_up(student, best)
        if stop:
            LOGGER.info(f"yolo-kd: epoch {trainer.epoch + 1}: the student's mAP50-95 {student:.4f} has reached its "
                        f"teacher's {best:.4f}: " + (
                            "the teacher's terms off for the rest of the run, the pool's boxes go on (teacher_guard: "
                            "relabel)" if distiller.recipe.teacher_guard == GUARD_RELABEL
                            else "KD off for the rest of the run (teacher_guard)"))
        distiller.kd_stopped = bool(from_rank0([float(stop)], distiller)[0])
    if distiller.self_training and trainer.epoch + 1 < trainer.epochs:  # boxes made after the last epoch go unused
        source = distiller.boxes_score if distiller.boxes_score is not None else max(distiller.teacher_scores.values(),
                                                                                    default=0.0)
        due, score = from_rank0([float(student is not None and relabel_due(student, source)), student or 0.0],
                                distiller)
        if due:
            relabel_pool(trainer)
            distiller.boxes_score = score
            if RANK in {-1, 0}:
                LOGGER.info(f"yolo-kd: epoch {trainer.epoch + 1}: the student's EMA (mAP50-95 {score:.4f}, the boxes' "
                            f"source {source:.4f}) relabeled the pool (teacher_guard: relabel)")
    return metrics, fitness


def best_teacher_score(trainer, distiller) -> float:
    """The best validation mAP50-95 of the active stage's teachers, each scored once (`teacher_score`)."""
    names = distiller.recipe.stages[distiller.stage].teachers
    missing = [n for n in names if n not in distiller.teacher_scores]
    if missing:
        teachers = distiller.pool.acquire(names, next(distiller.parameters()).device)
        for n in missing:
            distiller.teacher_scores[n] = teacher_score(trainer, teachers[n], distiller.recipe.teachers[n].imgsz)
    return max(distiller.teacher_scores[n] for n in names)


def from_rank0(values: list[float], distiller) -> list[float]:
    """`values` as rank 0 has them, on every rank (as they are outside DDP)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = torch.tensor(values, dtype=torch.float64, device=next(distiller.parameters()).device)
        torch.distributed.broadcast(flag, 0)
        return flag.tolist()
    return values
