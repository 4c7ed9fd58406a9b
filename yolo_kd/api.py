"""The drop-in entry point: one line between ``model = YOLO(...)`` and the user's unchanged ``model.train(...)``."""

from __future__ import annotations

import functools
from pathlib import Path

from . import hooks
from .errors import KDConfigError
from .methods import check_method
from .offline import setup_offline
from .recipe import DEFAULT_METHOD, Recipe, check_labeled_kd
from .teachers import check_teacher_file
from .trainer import trainer_for
from .resume_options import resume_recipe
from .unlabeled import absolute_pool, resolve_images

#: yolo-kd's own options, beside every Ultralytics train argument (both entry points; `yolo-kd train help`)
KD_OPTIONS = {
    "teacher": "the frozen teacher checkpoint (.pt)",
    "method": f"methods joined by +, e.g. pred+pkd (default: {DEFAULT_METHOD})",
    "cfg": "a recipe YAML (or dict): stages, several teachers, schedules",
    "weights": "one number for every method, or {method: weight}",
    "layers": "{student: [...], teacher: [...]}: distil other layers than the Detect inputs",
    "teacher_imgsz": "the teacher's own image size (the loader makes the batch there)",
    "schedule": "{decay, final, warmup_epochs, off_close_mosaic}",
    "auto_balance": "fix each KD term at this share of the detection loss at its first step",
    "class_map": "{dataset class: teacher class} when the teacher's classes differ",
    "unlabeled": "images without labels (a folder, a .txt list or a glob): the teacher teaches on them too",
    "unlabeled_ratio": "unlabeled images per labeled image in each training step (default 1)",
    "unlabeled_bn": "BatchNorm running statistics from all images ('all', default) or the labeled ones only",
    "unlabeled_boxes": "train the student's detection loss on the teacher's boxes on unlabeled images: 'label+0.25' "
                       "(the default): found once at the start on each whole unlabeled image (yolo-kd label's, in "
                       "memory) and moved with its augmentation, as many over the pool as the labeled images hold "
                       "per image and every box at score 0.25; 'label', the count alone; online, on each augmented "
                       "batch: 'match' (the count), a score (e.g. 0.25), 'match+0.25' (both); false: off",
    "unlabeled_topk": "also distil Dense Teacher's dense pseudo-labels on unlabeled images: this fraction of their "
                      "locations, the teacher's highest-scoring, is foreground, the rest background (e.g. 0.01; "
                      "default off)",
    "unlabeled_weight": "multiplies the unlabeled images' own terms, unlabeled_boxes' and unlabeled_topk's (default 1)",
    "unlabeled_views": "'weak-strong': the teacher sees pool images without the photometric augmentation, the student "
                       "with it (default 'same')",
    "unlabeled_kd": "false: the KD terms read the labeled images only and the teacher's forward skips the pool, which "
                    "trains the detection loss on the teacher's boxes made once (unlabeled_boxes label+conf); about "
                    "the compute of a plain student's step less per step; a share such as 0.25: the KD terms and the "
                    "teacher's forward read that share of each step's pool images (default true: all of them)",
    "labeled_kd": "false: with unlabeled images, the teacher's forward and the KD terms read them only, and the "
                  "labeled images train on their labels alone (the teacher's forward skips the labeled images; "
                  "default true: the KD terms read the labeled images too)",
    "teacher_guard": "stop distilling once the student's validation mAP50-95 reaches the teacher's; 'relabel': then "
                     "train on the pool's boxes, relabeled by the student's EMA as it improves (default false)",
}
KD_KEYS = tuple(KD_OPTIONS)


def build_recipe(model=None, **kd) -> Recipe:
    """Recipe from keyword options, or, to resume, from the `yolo_kd` state in the model's checkpoint."""
    unknown = sorted(set(kd) - set(KD_KEYS))
    if unknown:
        raise KDConfigError(f"unknown yolo-kd option(s) {unknown}: valid ones are {list(KD_KEYS)}")
    if kd.get("teacher") is None and kd.get("cfg") is None:
        saved = (getattr(model, "ckpt", None) or {}).get("yolo_kd")
        if saved:
            return Recipe.from_saved(saved["recipe"])
    recipe = Recipe.from_kwargs(**{k: v for k, v in kd.items() if v is not None})
    gt_methods = dict.fromkeys(m.name for stage in recipe.stages for m in stage.methods
                               if check_method(m.name, m.params).reads_ground_truth(m.params))
    check_labeled_kd(recipe, list(gt_methods))
    for name, spec in recipe.teachers.items():
        check_teacher_file(name, spec)
    if recipe.unlabeled:
        resolve_images(recipe.unlabeled)
        # absolute, so last.pt's recipe finds the pool when the run is resumed from another folder
        recipe.unlabeled = absolute_pool(recipe.unlabeled)
    return recipe


def given_options(teacher=None, method=None, **options) -> dict:
    """The yolo-kd keys the user gave (None: not given)."""
    return {k: v for k, v in {"teacher": teacher, "method": method, **options}.items() if v is not None}


def callbacks(teacher=None, method: str | None = None, model=None, **options) -> dict[str, list]:
    """The Ultralytics callbacks dict that distils from `teacher` with `method` on whatever trainer runs: the stock one,
    a `DetectionTrainer` subclass of the user's, `model.train(trainer=MyTrainer)`; `model` only to resume (no
    teacher: the recipe comes back from the `yolo_kd` state of its checkpoint). Same options as `distill`; errors
    raise `KDConfigError` here. Single process (one GPU or CPU); for multi-GPU use `distill`."""
    setup_offline()
    recipe = build_recipe(model, teacher=teacher, method=method if teacher is not None else None, **options)
    return hooks.callbacks(recipe, given_options(teacher, method, **options))


def add_callbacks(model, teacher=None, method: str | None = None, **options):
    """Add `callbacks(...)` to `model` (a YOLO); call it before ``model.train(...)``, which copies the model's
    callbacks into the trainer it builds. A second call replaces the first one's callbacks (one log line). Returns
    `model`."""
    from ultralytics.utils import LOGGER

    fresh = callbacks(teacher, method, model=model, **options)
    replaced = False
    for event, fns in model.callbacks.items():
        kept = [fn for fn in fns if not hooks.is_engine_callback(fn)]
        replaced |= len(kept) != len(fns)
        fns[:] = kept
    if replaced:
        LOGGER.info("yolo-kd: add_callbacks called again: its recipe replaces the earlier one")
    for event, fns in fresh.items():
        for fn in fns:
            model.add_callback(event, fn)
    return model


def distill(model, teacher=None, method: str | None = None, **options):
    """Make ``model.train(...)`` distil from `teacher` (a .pt path) with `method` (default: the default recipe,
    `DEFAULT_METHOD`; or 'pred', 'fgd+pred', ...); sets Ultralytics up air-gapped (`offline.setup_offline`).

    Options: cfg (recipe YAML or dict, for stages and several teachers), weights (number or {method: w}), layers
    ({student: [...], teacher: [...]}), teacher_imgsz, schedule, auto_balance, class_map, unlabeled (images without
    labels), unlabeled_ratio, unlabeled_bn, unlabeled_boxes, unlabeled_topk, unlabeled_weight, unlabeled_views,
    unlabeled_kd, labeled_kd and teacher_guard.
    Every Ultralytics train argument keeps working, `trainer=MyTrainer` included (the engine composes with it:
    `trainer_for`). Unlike `add_callbacks`, the inputs are checked before the run folder exists and DDP works. With
    ``model.train(resume=...)`` the run continues last.pt's recipe: a key given here that differs from it is refused
    (`resume_options`). Errors in the options raise `KDConfigError` here, before training. Calling it again replaces
    the recipe. Returns `model`.
    """
    setup_offline()
    recipe = build_recipe(model, teacher=teacher, method=method if teacher is not None else None, **options)
    train = functools.partial(_train_with, type(model).train, model, recipe, given_options(teacher, method, **options))
    object.__setattr__(model, "train", train)
    return model


def _train_with(original, model, recipe, options, trainer=None, **kwargs):
    resume = kwargs.get("resume")
    if resume:
        checkpoint = resume if isinstance(resume, (str, Path)) else (getattr(model, "ckpt", None) or model.ckpt_path)
        recipe = resume_recipe(recipe, options, checkpoint)
    return original(model, trainer=trainer_for(recipe, base=trainer), **kwargs)
