"""Teacher / student / data compatibility: every check that the files alone can decide, done before Ultralytics
creates the run folder (so a refused run writes nothing), and again by the distiller once the student is built.

Checks: teacher task and head (on load), image channels, class names (or a class_map), Detect strides (unless
`layers` pairs other layers), the teacher's own image size against its grid, what each method's terms read from the
pair (`yolo_kd.needs`: a method that can drop the terms the pair cannot feed drops them, logged, when it is built;
one that cannot, or has no term left, is refused), and methods that need the teacher head's own inputs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import KDConfigError, first_line
from .methods import METHODS
from .needs import describe, missing, offers
from .preflight import (MIN_GRID, check_imgsz, check_student_task, check_teacher_imgsz, check_train_labels,
                        locate_data)
from .recipe import Recipe, check_labeled_kd
from .taps import TapShapes
from .teachers import HEAD_TASKS, TeacherPool, check_classes, check_teacher_file, probe, probe_size
from .ultra import detect_head, detection_model, has_one2one, load_model, online, resolve_dataset
from .unlabeled import unlabeled_files


def check_pair(name: str, teacher: nn.Module, student: nn.Module, ch: int, names: dict, recipe: Recipe) -> None:
    """A teacher fits a student and a data set: channels, classes, its own image size, Detect strides, heads."""
    t_ch = teacher.yaml.get("channels", 3)
    if t_ch != ch:
        raise KDConfigError(f"teacher '{name}' takes {t_ch}-channel images but the student takes {ch}: "
                            "use a teacher trained with the same channels")
    check_classes(name, teacher, names, recipe.class_map)
    check_teacher_imgsz(name, recipe.teachers[name].imgsz, int(teacher.stride.max()))
    s_strides, t_strides = student.stride.tolist(), teacher.stride.tolist()
    if not recipe.layers and s_strides != t_strides:
        raise KDConfigError(
            f"teacher '{name}' has Detect levels at strides {t_strides} but the student at {s_strides}: use a "
            "teacher with the same levels, or pick matching layers with layers={student: [...], teacher: [...]}"
        )
    s_head, t_head = head_shapes(student), head_shapes(teacher)
    offered = offers(s_head, t_head)
    for stage in recipe.stages:
        if name not in stage.teachers:
            continue
        for m in stage.methods:
            cls = METHODS[m.name]
            gone = missing(cls.needs, offered)
            if gone and (not cls.drops_terms or set(gone) >= set(cls.terms)):
                term, why = next(iter(gone.items()))
                raise KDConfigError(
                    f"method '{m.name}' cannot run with teacher '{name}': {term} {why} "
                    f"({describe(s_head, t_head)}): pick a teacher of the same head family, or pkd / sl2 (features)"
                )
            if cls.needs_head_inputs and stage.combine == "mean" and len(stage.teachers) > 1:
                raise KDConfigError(f"method '{m.name}' runs the student's features through one teacher's head, which "
                                    f"does not predict the combine: mean target of {stage.teachers}: use combine: sum")
            if cls.needs_head_inputs and (recipe.layers or recipe.class_map):
                raise KDConfigError(f"method '{m.name}' runs the student's Detect inputs through teacher '{name}''s "
                                    "head, so it cannot be combined with layers= or class_map=: drop those, or use pred")


def head_shapes(model: nn.Module) -> TapShapes:
    """The head facts the declared needs are checked against (no forward): classes, reg_max, one-to-one branch."""
    head = detect_head(model)
    return TapShapes(channels=[], nc=int(head.nc), reg_max=int(head.reg_max), one2one=has_one2one(head))


def first_stage_teachers(recipe: Recipe, epochs: int) -> list[str]:
    """Teachers of the first stage (in epoch order) that has any: the ones to keep loaded after the checks."""
    spans = recipe.resolve_stages(epochs)
    for i in sorted(range(len(spans)), key=lambda i: spans[i][0]):
        if recipe.stages[i].teachers:
            return list(recipe.stages[i].teachers)
    return []


def check_teachers(recipe: Recipe, pool: TeacherPool, student: nn.Module, ch: int, names: dict, device,
                   keep: list[str]) -> dict[str, TapShapes]:
    """Load each teacher through `pool` (once), check it against the student and data, probe its tap shapes; the
    teachers in `keep` stay loaded for the first stage, the others are released."""
    size = probe_size(student)
    layers = recipe.layers["teacher"] if recipe.layers else None
    shapes = {}
    for name in recipe.teachers:
        teacher = pool.acquire([*(n for n in keep if n in pool.loaded), name], device)[name]
        check_pair(name, teacher, student, ch, names, recipe)
        shapes[name] = probe(teacher, size, ch, layers)
        if name not in keep:
            pool.release(name)
    return shapes


def student_from_files(model, ch: int, nc: int) -> nn.Module | None:
    """The student as the trainer will build it (a *.yaml, or a local *.pt), or None when it is neither."""
    if model is None:
        return None
    path = Path(str(model))
    if path.suffix in {".yaml", ".yml"}:
        try:
            return detection_model(str(model), nc=nc, ch=ch)
        except Exception:  # an unknown yaml is Ultralytics' own error, reported in its words a moment later
            return None
    if path.suffix == ".pt" and path.is_file():
        return load_model(path)
    return None


def check_student_head(model, student: nn.Module) -> None:
    """The student built from its file must end in a Detect head (a segment yaml built as task=detect does not)."""
    try:
        detect_head(student)
    except TypeError as e:
        kind = HEAD_TASKS.get(str(e), str(e))
        raise KDConfigError(f"the student {model} has a {e} head ('{kind}' model), but yolo-kd distils detection "
                            "only: use a detect model such as yolov8n.yaml") from None


def check_fixed_budget(args) -> None:
    """AutoBatch and `time=` are refused: AutoBatch (batch=-1, or a memory fraction) sizes the batch from the
    student's forward alone, while each step also runs the teachers (and the student and teachers on the unlabeled
    pool); `time=` re-estimates the epochs during the run, while the stages and the schedule are fixed to them."""
    batch = args.batch
    if isinstance(batch, (int, float)) and not isinstance(batch, bool) and batch < 1:
        raise KDConfigError(f"batch={batch} (AutoBatch) sizes the batch from the student alone, but each distillation "
                            "step also runs the teacher (and the unlabeled pool): give a fixed batch=, e.g. batch=16")
    if args.time:
        raise KDConfigError(f"time={args.time} re-estimates the epochs during the run, but the distillation stages and "
                            "schedule are fixed to epochs=: give epochs= instead")


def check_before_run(recipe: Recipe, args) -> tuple[TeacherPool, dict[str, TapShapes] | None]:
    """Everything decidable from the files, before Ultralytics creates or writes the run folder: image size, the
    student's task, each teacher file, the data set (a local YAML or folder, or a dataset Ultralytics ships, must
    exist, resolve and have labels; its `unlabeled:` pool, if any, must hold images), the student's head, then each
    teacher against the student and data.
    Returns the teacher pool (first-stage teachers loaded) and the teachers' tap shapes, or None for the shapes when
    the data or the student cannot be resolved yet (remote data, hub weights, resume: the distiller checks then)."""
    check_imgsz(args.imgsz, MIN_GRID)
    check_fixed_budget(args)
    if not args.resume:
        check_student_task(args.task, args.model)
    for name, spec in recipe.teachers.items():
        check_teacher_file(name, spec)
    pool = TeacherPool(recipe.teachers)
    data = str(args.data or "")
    if args.resume or "://" in data or not data:
        return pool, None
    local = locate_data(data)
    try:
        resolved = resolve_dataset(local)
    except Exception as e:
        if local != data:  # a dataset Ultralytics ships, downloaded on first use
            if online():
                return pool, None
            raise KDConfigError(f"data={data} is a dataset Ultralytics ships, but its images are not here and "
                                f"downloads are off ({first_line(e)}): fetch it once online, or pass a local "
                                "data.yaml") from None
        raise KDConfigError(f"data={data} cannot be read as a detection data set ({first_line(e)}): give a data.yaml "
                            "with path, train, val and names (or a folder holding one)") from None
    check_train_labels(resolved)
    check_labeled_kd(recipe, has_pool=bool(unlabeled_files(recipe, resolved)))  # data.yaml's `unlabeled:` must
    #           hold images too
    ch, names = int(resolved.get("channels", 3)), resolved["names"]
    student = student_from_files(args.model, ch, len(names))
    if student is None:
        return pool, None
    check_student_head(args.model, student)
    check_imgsz(args.imgsz, max(int(student.stride.max()), MIN_GRID))
    keep = first_stage_teachers(recipe, args.epochs)
    return pool, check_teachers(recipe, pool, student, ch, names, torch.device("cpu"), keep)
