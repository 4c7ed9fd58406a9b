"""The teacher guard (`teacher_guard: true`): distillation stops once the student has caught up with its teacher on
the validation set, so a teacher no better than the student stops pulling it back (and adding pool images cannot
leave the student below where it would be without them for long).

The teachers are scored once, at the first validation, by a fresh copy of the run's validator on the run's
validation images at each teacher's own size (a deepcopy of the teacher: Ultralytics fuses what it validates).
After every validation: stop when the student's mAP50-95 (the EMA model Ultralytics validates) >= the best teacher's.
From then on every KD term is zero and the pool is not drawn; the decision and the teachers' scores are kept in
last.pt. The rule reads the validation set, not the labeled training images: a teacher trained on those images
scores better on them than it generalises, so a loss on them would keep a weak teacher in charge. Without validation
(`val=False`) the guard can only act on the final epoch's and says so at the start.
"""

from __future__ import annotations

import copy
from pathlib import Path

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
