"""`KDTrainer`: a `DetectionTrainer` that distils with the class's `recipe` through the engine in `hooks` (one engine
for the callbacks and the trainer class). It adds what callbacks alone cannot give:
- the pre-run checks (`compat.check_before_run`) before Ultralytics creates or writes the run folder;
- the engine attached on every DDP rank (Ultralytics fires `on_pretrain_routine_start` on rank 0 only); the recipe
  rides on the class (`trainer_for(recipe)`), which Ultralytics cloudpickles for its DDP workers.

`trainer_for(recipe, base)` composes with any trainer class: `KDTrainer` first in the MRO contributes only
`__init__`, so every method of `base` (the user's `get_dataloader`, ...) runs, wrapped per instance by the engine.
"""

from __future__ import annotations

from ultralytics.cfg import get_cfg
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG
from ultralytics.utils.callbacks import get_default_callbacks

from .compat import check_before_run
from .hooks import attach, callbacks, merged
from .recipe import Recipe


class KDTrainer(DetectionTrainer):
    """Ultralytics DetectionTrainer with distillation from the class's `recipe`."""

    recipe: Recipe | None = None

    def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None):
        if self.recipe is None:
            raise TypeError("use yolo_kd.trainer_for(recipe) or yolo_kd.distill(...) to make a KD trainer")
        # before Ultralytics creates or writes the run directory; the first stage's teachers stay loaded
        pool, shapes = check_before_run(self.recipe, get_cfg(cfg, overrides))
        attach(self, self.recipe, pool, shapes)  # before __init__, which reads the dataset through get_dataset
        super().__init__(cfg, overrides, merged(_callbacks or get_default_callbacks(), callbacks(self.recipe)))


def trainer_for(recipe: Recipe, base: type | None = None) -> type:
    """A trainer class distilling with `recipe`: a subclass of `base` (default `KDTrainer`), with `KDTrainer` mixed in
    front when `base` is not one (picklable by value, so DDP workers get the same recipe)."""
    base = base or KDTrainer
    bases = (base,) if issubclass(base, KDTrainer) else (KDTrainer, base)
    return type(f"KD{base.__name__}" if base is not KDTrainer else "RecipeKDTrainer", bases,
                {"recipe": recipe, "__module__": __name__})
