"""yolo-kd keys given when a run is resumed. The rule, one for every key: a resumed run continues last.pt's recipe, so
a key equal to last.pt's value is accepted and a key that differs is refused in one line naming the key and both
values (before the trainer starts when the run is resumed through `distill` or `yolo-kd train`). To change the
recipe, start a new run from the checkpoint (`model=last.pt` without `resume`)."""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import KDConfigError
from .methods import method_weight
from .recipe import RECIPE_KEYS, Recipe
from .unlabeled import absolute_pool

#: options that are fields of the recipe itself; the others (teacher, teacher_imgsz, method, weights) are shorthand
RECIPE_FIELDS = RECIPE_KEYS - {"teachers", "stages"}


def saved_recipe(checkpoint) -> Recipe | None:
    """The recipe in a checkpoint's `yolo_kd` state (a path or a loaded dict), or None when it has none."""
    ckpt = checkpoint if isinstance(checkpoint, dict) else torch.load(checkpoint, map_location="cpu",
                                                                      weights_only=False)
    state = (ckpt or {}).get("yolo_kd") or {}
    return Recipe.from_saved(state["recipe"]) if state.get("recipe") else None


def resume_recipe(recipe: Recipe, options: dict, checkpoint) -> Recipe:
    """The recipe a resumed run continues with: last.pt's, once every key in `options` (the yolo-kd keys the user
    gave) agrees with it; `recipe` when the checkpoint holds none (a plain Ultralytics run resumed with KD)."""
    saved = saved_recipe(checkpoint) if checkpoint else None
    if saved is None:
        return recipe
    for key, value in options.items():
        if value is None:
            continue
        ours = saved_value(saved, key)
        if given_value(saved, key, value) != ours:
            raise KDConfigError(f"resume: {key}={value} differs from last.pt's {key}={ours}: a resumed run continues "
                                f"its recipe; drop {key}= to resume, or start a new run (model=last.pt) to change it")
    return saved


def _single(saved: Recipe):
    """(teacher spec, stage) of a one-teacher, one-stage recipe (the shorthand's), else None."""
    if len(saved.teachers) == 1 and len(saved.stages) == 1:
        return next(iter(saved.teachers.values())), saved.stages[0]
    return None


def saved_value(saved: Recipe, key: str):
    """last.pt's value of option `key`, in the option's own terms."""
    if key == "cfg":
        return "its recipe"
    if key in RECIPE_FIELDS:
        return saved.to_dict()[key]
    single = _single(saved)
    if single is None:
        return "a multi-stage recipe"
    spec, stage = single
    return {"teacher": str(Path(spec.model).absolute()), "teacher_imgsz": spec.imgsz,
            "method": "+".join(m.name for m in stage.methods),
            "weights": {m.name: method_weight(m) for m in stage.methods}}[key]


def given_value(saved: Recipe, key: str, value):
    """The user's value of option `key`, parsed as a new run would parse it, in `saved_value`'s terms."""
    if key == "cfg":
        return "its recipe" if Recipe.from_kwargs(cfg=value).to_dict() == saved.to_dict() else value
    if key in RECIPE_FIELDS:
        if key == "unlabeled":
            value = absolute_pool(value if isinstance(value, (list, tuple)) else [value])
        return Recipe.from_dict({**saved.to_dict(), key: value}).to_dict()[key]
    if key == "teacher":
        return str(Path(value).absolute())
    if key == "teacher_imgsz":
        return int(value)
    single = _single(saved)
    method = value if key == "method" else saved_value(saved, "method") if single else None
    methods = Recipe.from_kwargs(teacher="t.pt", method=method, weights=value if key == "weights" else None
                                 ).stages[0].methods
    if key == "method":
        return "+".join(m.name for m in methods)
    return {m.name: method_weight(m) for m in methods}

