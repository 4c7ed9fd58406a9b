"""The one description of a distillation run: teachers, stages, methods, weights, layers, schedule.

A recipe is plain data (picklable, YAML-serialisable) and is validated completely before training starts; every
problem raises `KDConfigError` naming the field and the fix. Two spellings build the same object:

- keyword shorthand (drop-in and command line): ``teacher="t.pt", method="fgd+pred", weights={"fgd": 2.0}``
- a YAML file (``cfg=recipe.yaml``)::

      teachers:
        color: {model: weights/color_teacher.pt}
        scale: {model: weights/scale_teacher.pt, imgsz: 640}
      schedule: {decay: cosine, final: 0.1, warmup_epochs: 1}
      stages:
        - {epochs: [0, 40], teachers: [color], methods: {fgd: 1.0}}
        - {epochs: [40, 80], teachers: [scale], methods: {cskd: 1.0, pred: {weight: 0.5, temperature: 2.0}}}
        - {epochs: [80, 100]}            # no distillation for the last epochs

Stage spans are ``epochs: [start, end)`` or ``fraction: [start, end)`` of the run; spans are resolved against the
run's epoch count by `Recipe.resolve_stages`, which rejects overlaps and out-of-range spans.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import KDConfigError, first_line
from .preflight import MIN_GRID, check_teacher_imgsz, image_size

DEFAULT_METHOD = "sl2+pred"  # what `method` is when none is named (README, Benchmark: why this one)
RECIPE_KEYS = {"teachers", "stages", "layers", "schedule", "auto_balance", "class_map", "unlabeled", "unlabeled_ratio",
               "unlabeled_bn", "unlabeled_boxes", "unlabeled_topk", "unlabeled_weight", "unlabeled_views",
               "unlabeled_kd", "labeled_kd", "teacher_guard"}
BOXES_MATCH = "match"  # `unlabeled_boxes: match`: per pool image as many teacher boxes as per labeled image
BOXES_LABEL = "label"  # `unlabeled_boxes: label[+conf]`: the teacher labels the clean pool images once, at the start
DEFAULT_UNLABELED_RATIO = 1.0  # unlabeled images per labeled image in a training step
DEFAULT_UNLABELED_WEIGHT = 1.0  # the pool's own terms (pool_det, pool_dense) as they are
UNLABELED_BN = ("all", "labeled")  # whose batches BatchNorm's running statistics follow (see `norm`)
DEFAULT_UNLABELED_KD = True  # the KD terms read every pool image: docs/benchmarks.md (sessions 25-28)
DEFAULT_LABELED_KD = True  # with a pool, the KD terms read the labeled images too
DEFAULT_UNLABELED_BN = "all"  # measured: the label-scarce bench, docs/benchmarks.md
DEFAULT_UNLABELED_BOXES = f"{BOXES_LABEL}+0.25"  # the pool labeled once by count and 0.25: docs/benchmarks.md
UNLABELED_VIEWS = ("same", "weak-strong")  # the teacher sees the student's pool image, or it without photometric aug.
GUARD_RELABEL = "relabel"  # `teacher_guard: relabel`: once KD stops, the student's EMA relabels the pool (`guard`)
STAGE_KEYS = {"epochs", "fraction", "teachers", "methods", "combine", "teacher_weights", "name"}
TEACHER_KEYS = {"model", "imgsz", "levels"}
LEVEL_PAIRINGS = ("index", "area")
SCHEDULE_KEYS = {"decay", "final", "warmup_epochs", "off_close_mosaic"}
DECAYS = ("constant", "linear", "cosine")
COMBINES = ("sum", "mean")


@dataclass
class TeacherSpec:
    """A frozen teacher: its checkpoint path and, optionally, its own input size and how its Detect levels pair with
    the student's at that size ("index", the default: P3 -> P3, each student cell taught by the best cell of its block
    of teacher cells, distances converted; "area": the level whose cells cover the same image area, P4 -> P3 at 2x,
    only for teachers whose levels are scale-specialised: YOLOv8-family teachers trained at small sizes put nearly
    every object on P3, so their P4 teaches "nothing here")."""

    model: str
    imgsz: int | None = None
    levels: str = "index"


@dataclass
class MethodSpec:
    """One distillation method in a stage: registry name, weight, and keyword parameters for the method."""

    name: str
    weight: float | None = None  # None: the method's own default, looked up where the recipe is used
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageSpec:
    """A span of training with its teachers and methods. `span` is in epochs, or in run fractions if `unit` says so.

    combine="sum": each teacher's losses are computed and summed with `teacher_weights`;
    combine="mean": the teachers' taps are averaged (weighted) into one target, then each method runs once.
    """

    span: tuple[float, float]
    unit: str = "epochs"
    teachers: list[str] = field(default_factory=list)
    methods: list[MethodSpec] = field(default_factory=list)
    teacher_weights: list[float] = field(default_factory=list)
    combine: str = "sum"
    name: str = ""


@dataclass
class Schedule:
    """KD weight multiplier over a stage: warm-up (linear from 0) then constant / linear / cosine decay to `final`."""

    decay: str = "constant"
    final: float = 1.0
    warmup_epochs: float = 0.0
    off_close_mosaic: bool = False  # no KD (and no teacher forward) in the final no-mosaic epochs, as RTMDet's recipe

    def factor(self, epoch: float, start: float, end: float) -> float:
        """Multiplier at `epoch` (fractional) of a stage spanning [start, end) epochs."""
        length = max(end - start, 1e-9)
        t = min(max((epoch - start) / length, 0.0), 1.0)
        if self.decay == "linear":
            f = 1.0 + (self.final - 1.0) * t
        elif self.decay == "cosine":
            f = self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * t))
        else:
            f = 1.0
        if self.warmup_epochs > 0 and epoch - start < self.warmup_epochs:
            f *= max(epoch - start, 0.0) / self.warmup_epochs
        return f


@dataclass
class Recipe:
    """Teachers by name, stages in order, optional tap layers, weight schedule, auto balance and class mapping."""

    teachers: dict[str, TeacherSpec]
    stages: list[StageSpec]
    layers: dict[str, list[int]] | None = None
    schedule: Schedule = field(default_factory=Schedule)
    auto_balance: float | None = None
    class_map: dict[int, int] | None = None
    unlabeled: list[str] | None = None  # images without labels (folders, .txt lists, globs): `yolo_kd.unlabeled`
    unlabeled_ratio: float = DEFAULT_UNLABELED_RATIO
    unlabeled_bn: str = DEFAULT_UNLABELED_BN  # BatchNorm running statistics from both forwards or the labeled one
    unlabeled_boxes: float | str | None = DEFAULT_UNLABELED_BOXES  # pseudo-boxes on the pool: the teacher's on the
    #           clean pool images, made once ("label": as many as the labeled images hold; "label+0.25": and every box
    #           at 0.25); online on each batch: "match", a teacher score threshold, "match+0.25"; None: off
    unlabeled_topk: float | None = None  # Dense Teacher: fraction of pool locations taken as foreground (None: off)
    unlabeled_weight: float = DEFAULT_UNLABELED_WEIGHT  # lambda_u of SSOD papers: multiplies pool_det, pool_dense
    unlabeled_views: str = "same"  # weak-strong: the teacher's pool view skips HSV/Albumentations, the student's not
    unlabeled_kd: bool | float = DEFAULT_UNLABELED_KD  # the stage's KD terms read the pool too; False: the pool
    #           trains pool_det alone and the teacher's forward reads the labeled images only (its boxes on the pool
    #           are made once, at the start); a share in (0, 1): the KD terms read that share of each step's pool
    #           images (`pool_kd_rows`), pool_det all of them
    labeled_kd: bool = DEFAULT_LABELED_KD  # with a pool, the KD terms read the labeled images too; False: the
    #           teacher's forward and the KD terms read the pool images only, the labeled ones train on their labels
    teacher_guard: bool | str = False  # stop KD once the student's validation mAP50-95 reaches the teacher's
    #           (`guard`); "relabel": stop the teacher's terms, and the pool's boxes follow the student's EMA

    # ------------------------------------------------------------------ building
    @classmethod
    def from_kwargs(cls, teacher=None, method=DEFAULT_METHOD, weights=None, cfg=None, layers=None, teacher_imgsz=None,
                    schedule=None, auto_balance=None, class_map=None, unlabeled=None,
                    unlabeled_ratio=None, unlabeled_bn=None, unlabeled_boxes=None, unlabeled_topk=None,
                    unlabeled_weight=None, unlabeled_views=None, unlabeled_kd=None, labeled_kd=None,
                    teacher_guard=None) -> Recipe:
        """Build from the drop-in / command-line shorthand; `cfg` (a YAML path or dict) may hold the full recipe."""
        if cfg is not None:
            data = load_yaml(cfg) if not isinstance(cfg, dict) else dict(cfg)
            if teacher is not None:
                raise KDConfigError("give the teacher either as teacher=... or inside cfg=..., not both")
            for key, value in (("layers", layers), ("schedule", schedule), ("auto_balance", auto_balance),
                               ("class_map", class_map), ("unlabeled", unlabeled),
                               ("unlabeled_ratio", unlabeled_ratio), ("unlabeled_bn", unlabeled_bn),
                               ("unlabeled_boxes", unlabeled_boxes), ("unlabeled_topk", unlabeled_topk),
                               ("unlabeled_weight", unlabeled_weight), ("unlabeled_views", unlabeled_views),
                               ("unlabeled_kd", unlabeled_kd), ("labeled_kd", labeled_kd),
                               ("teacher_guard", teacher_guard)):
                if value is not None:
                    data[key] = value
            return cls.from_dict(data)
        if teacher is None:
            raise KDConfigError("no teacher given: pass teacher=path/to/teacher.pt (or cfg=recipe.yaml with teachers)")
        methods = parse_methods(method, weights)
        data = {
            "teachers": {"teacher": {"model": str(teacher), "imgsz": teacher_imgsz}},
            "stages": [{"fraction": [0.0, 1.0], "teachers": ["teacher"], "methods": methods}],
            "layers": layers, "schedule": schedule, "auto_balance": auto_balance, "class_map": class_map,
            "unlabeled": unlabeled, "unlabeled_ratio": unlabeled_ratio, "unlabeled_bn": unlabeled_bn,
            "unlabeled_boxes": unlabeled_boxes, "unlabeled_topk": unlabeled_topk, "unlabeled_weight": unlabeled_weight,
            "unlabeled_views": unlabeled_views, "unlabeled_kd": unlabeled_kd, "labeled_kd": labeled_kd,
            "teacher_guard": teacher_guard,
        }
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        """Validate a recipe dict (as loaded from YAML) and build it."""
        if not isinstance(data, dict):
            raise KDConfigError(f"a recipe must be a mapping with keys {sorted(RECIPE_KEYS)}, got {type(data).__name__}")
        _check_keys(data, RECIPE_KEYS, "recipe")
        teachers = _parse_teachers(data.get("teachers"))
        stages = [_parse_stage(i, s, teachers) for i, s in enumerate(_as_list(data.get("stages"), "stages"))]
        if not stages:
            raise KDConfigError("recipe has no stages: add stages: [{fraction: [0, 1], teachers: [...], methods: {...}}]")
        used = {t for s in stages for t in s.teachers}
        unused = sorted(set(teachers) - used)
        if unused:
            raise KDConfigError(f"teachers {unused} are defined but used by no stage: add them to a stage or remove them")
        recipe = cls(
            teachers=teachers,
            stages=stages,
            layers=_parse_layers(data.get("layers")),
            schedule=_parse_schedule(data.get("schedule")),
            auto_balance=_parse_positive(data.get("auto_balance"), "auto_balance", allow_none=True),
            class_map=_parse_class_map(data.get("class_map")),
            unlabeled=_parse_unlabeled(data.get("unlabeled")),
            unlabeled_ratio=_parse_positive(DEFAULT_UNLABELED_RATIO if data.get("unlabeled_ratio") is None
                                            else data.get("unlabeled_ratio"), "unlabeled_ratio", allow_zero=False),
            unlabeled_bn=_parse_choice(data.get("unlabeled_bn") or DEFAULT_UNLABELED_BN, "unlabeled_bn", UNLABELED_BN),
            unlabeled_boxes=_parse_boxes(data.get("unlabeled_boxes")),
            unlabeled_topk=_parse_unit(data.get("unlabeled_topk"), "unlabeled_topk",
                                       "a fraction between 0 and 1 (e.g. 0.01 for the top 1%)"),
            unlabeled_weight=_parse_positive(DEFAULT_UNLABELED_WEIGHT if data.get("unlabeled_weight") is None
                                             else data["unlabeled_weight"], "unlabeled_weight", allow_zero=False),
            unlabeled_views=_parse_choice(data.get("unlabeled_views") or "same", "unlabeled_views", UNLABELED_VIEWS),
            unlabeled_kd=_parse_kd_share(DEFAULT_UNLABELED_KD if data.get("unlabeled_kd") is None
                                         else data["unlabeled_kd"]),
            labeled_kd=_parse_bool(DEFAULT_LABELED_KD if data.get("labeled_kd") is None else data["labeled_kd"],
                                   "labeled_kd"),
            teacher_guard=_parse_guard(data.get("teacher_guard")),
        )
        if recipe.teacher_guard == GUARD_RELABEL and not labels_pool_once(recipe.unlabeled_boxes):
            raise KDConfigError(f"teacher_guard={GUARD_RELABEL} relabels the pool's boxes made once: use "
                                f"unlabeled_boxes={DEFAULT_UNLABELED_BOXES} (the default) or label, or "
                                "teacher_guard=True")
        if recipe.unlabeled_kd is not True:
            check_unlabeled_kd(recipe)
        check_labeled_kd(recipe)
        pool_terms_off = recipe.unlabeled_boxes is None and recipe.unlabeled_topk is None
        if recipe.unlabeled_weight != DEFAULT_UNLABELED_WEIGHT and pool_terms_off:
            raise KDConfigError("'unlabeled_weight' multiplies the pool's own terms, and none is on: drop "
                                "unlabeled_boxes=false (or add unlabeled_topk=0.03), or drop unlabeled_weight")
        return recipe

    @classmethod
    def from_saved(cls, data: dict) -> Recipe:
        """The recipe a checkpoint keeps (`to_dict`). `to_dict` writes `unlabeled_boxes: false` for off, so None there is
        a checkpoint from before the pseudo-boxes were on by default: it resumes as it ran, off."""
        return cls.from_dict({**data, "unlabeled_boxes": data.get("unlabeled_boxes") or False})

    def to_dict(self) -> dict:
        """Plain-data form (round-trips through `from_dict`); stored in last.pt so resume needs no recipe file."""
        return {
            "teachers": {k: asdict(v) for k, v in self.teachers.items()},
            "stages": [
                {
                    ("fraction" if s.unit == "fraction" else "epochs"): list(s.span),
                    "teachers": list(s.teachers),
                    "methods": {m.name: {"weight": m.weight, **m.params} for m in s.methods},
                    "teacher_weights": list(s.teacher_weights),
                    "combine": s.combine,
                    "name": s.name,
                }
                for s in self.stages
            ],
            "layers": self.layers,
            "schedule": asdict(self.schedule),
            "auto_balance": self.auto_balance,
            "class_map": self.class_map,
            "unlabeled": self.unlabeled,
            "unlabeled_ratio": self.unlabeled_ratio,
            "unlabeled_bn": self.unlabeled_bn,
            "unlabeled_boxes": False if self.unlabeled_boxes is None else self.unlabeled_boxes,
            "unlabeled_topk": self.unlabeled_topk,
            "unlabeled_weight": self.unlabeled_weight,
            "unlabeled_views": self.unlabeled_views,
            "unlabeled_kd": self.unlabeled_kd,
            "labeled_kd": self.labeled_kd,
            "teacher_guard": self.teacher_guard,
        }

    # ------------------------------------------------------------------ resolving against a run
    def pool_kd_rows(self, images: int) -> int:
        """How many of a step's `images` pool images the teacher's forward and the KD terms read (the first ones, in
        the loader's shuffled order): all (`unlabeled_kd: true`), none (false), or round(share x images), at least 1."""
        if isinstance(self.unlabeled_kd, bool):
            return images if self.unlabeled_kd else 0
        return max(1, round(self.unlabeled_kd * images))

    def source_size(self, imgsz) -> int | None:
        """The training loader's size: the largest teacher's own size when it exceeds the student's `imgsz`, else
        None (the loader runs at `imgsz`)."""
        sizes = [t.imgsz for t in self.teachers.values() if t.imgsz]
        student = image_size(imgsz)
        return max(sizes) if sizes and student and max(sizes) > student else None

    def resolve_stages(self, epochs: int) -> list[tuple[int, int]]:
        """Stage spans as integer epoch ranges [start, end) for a run of `epochs`; rejects overlap and overflow."""
        spans = []
        for i, s in enumerate(self.stages):
            a, b = s.span
            if s.unit == "fraction":
                a, b = round(a * epochs), round(b * epochs)
            a, b = int(a), int(b)
            if b > epochs:
                raise KDConfigError(
                    f"stage {i + 1} ends at epoch {b} but the run has epochs={epochs}: shorten the stage or raise epochs"
                )
            if b <= a:
                raise KDConfigError(f"stage {i + 1} spans epochs [{a}, {b}) which is empty at epochs={epochs}")
            spans.append((a, b))
        order = sorted(range(len(spans)), key=lambda i: spans[i][0])
        for prev, cur in zip(order, order[1:]):
            if spans[cur][0] < spans[prev][1]:
                raise KDConfigError(
                    f"stages {prev + 1} {list(spans[prev])} and {cur + 1} {list(spans[cur])} overlap: "
                    "make each stage start where the previous one ends"
                )
        return spans


# ---------------------------------------------------------------------- parsing helpers
def load_yaml(path) -> dict:
    """Read a recipe YAML file, with a clear error for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise KDConfigError(f"recipe file '{path}' not found: check the cfg= path")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise KDConfigError(f"recipe file '{path}' is not valid YAML ({first_line(e)}): fix its syntax") from e
    return data or {}


def parse_methods(method, weights=None) -> dict[str, Any]:
    """'fgd+pred' (or a list) plus optional weights (a number for all, or {name: weight}; None, the method's own
    default, otherwise) -> {name: {"weight": w}}."""
    names = method.split("+") if isinstance(method, str) else list(method)
    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        raise KDConfigError("method is empty: use e.g. method=fgd or method=fgd+pred")
    if weights is None:
        return {n: {"weight": None} for n in names}
    if isinstance(weights, (int, float)):
        return {n: {"weight": weights} for n in names}
    if not isinstance(weights, dict):
        raise KDConfigError(f"weights must be a number or a mapping {{method: weight}}, got {weights!r}")
    extra = sorted(set(weights) - set(names))
    if extra:
        raise KDConfigError(f"weights given for {extra} which are not in method={'+'.join(names)}: add or remove them")
    return {n: {"weight": weights.get(n)} for n in names}


def _check_keys(d: dict, allowed: set, where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise KDConfigError(f"unknown key(s) {unknown} in {where}: valid keys are {sorted(allowed)}")


def _as_list(value, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise KDConfigError(f"'{where}' must be a list, got {type(value).__name__}")
    return value


def _parse_unlabeled(value) -> list[str] | None:
    """`unlabeled`: a path or glob, or a list of them (checked for images by `yolo_kd.unlabeled.resolve_images`)."""
    if value is None:
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or not all(isinstance(v, (str, Path)) and str(v) for v in values):
        raise KDConfigError(f"'unlabeled' must be a folder, a .txt list or a glob of images (or a list), got {value!r}")
    return [str(v) for v in values]


def _parse_choice(value, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise KDConfigError(f"'{where}' must be one of {list(choices)}, got {value!r}")
    return value


def _parse_positive(value, where: str, allow_none=False, allow_zero=True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise KDConfigError(f"'{where}' must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise KDConfigError(f"'{where}' must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return float(value)


def _parse_bool(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise KDConfigError(f"'{where}' must be true or false, got {value!r}")
    return value


def _parse_kd_share(value) -> bool | float:
    """`unlabeled_kd`: true (1) or false (0), or the share of each step's pool images the KD terms read, in (0, 1)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and 0 <= value <= 1:
        return bool(value) if value in (0, 1) else float(value)
    raise KDConfigError(f"'unlabeled_kd' must be true, false or a share of the pool images between 0 and 1 (e.g. "
                        f"0.25), got {value!r}")


def check_unlabeled_kd(recipe: Recipe) -> None:
    """`unlabeled_kd` false or a share leaves (some of) the pool images to its detection term alone, on boxes made once
    (`label[+conf]`: online boxes would need the teacher's forward on every pool image); with false, the options that
    read the teacher's forward on pool images have nothing to read."""
    if not labels_pool_once(recipe.unlabeled_boxes):
        raise KDConfigError(f"unlabeled_kd={str(recipe.unlabeled_kd).lower()} trains the pool on the teacher's boxes "
                            f"made once, at the start: use unlabeled_boxes={DEFAULT_UNLABELED_BOXES} (the default) or "
                            "label, or drop unlabeled_kd")
    if recipe.unlabeled_kd is not False:
        return
    for key, on in (("unlabeled_topk", recipe.unlabeled_topk is not None),
                    ("unlabeled_views", recipe.unlabeled_views != "same")):
        if on:
            raise KDConfigError(f"{key} reads the teacher's forward on the pool images, which unlabeled_kd=false "
                                "skips: drop one of them")


def check_labeled_kd(recipe: Recipe, gt_methods: list[str] | None = None, has_pool: bool | None = None) -> None:
    """`labeled_kd: false` leaves the KD terms the pool images alone: `unlabeled_kd` must leave them some, the run must
    have unlabeled images (`has_pool`; None: not known yet) and no method may read ground truth (only labeled images
    have it). Each caller checks what it knows: the recipe, its methods, the data set."""
    if recipe.labeled_kd:
        return
    if recipe.unlabeled_kd is False:
        raise KDConfigError("labeled_kd=false and unlabeled_kd=false leave the KD terms no image to read: drop one of "
                            "them (labeled_kd=false: the teacher teaches on the unlabeled images only)")
    if has_pool is False:
        raise KDConfigError("labeled_kd=false: the KD terms read the unlabeled images only, and this run has none: "
                            "give unlabeled=... (or unlabeled: in data.yaml), or drop labeled_kd")
    if gt_methods:
        raise KDConfigError(f"labeled_kd=false: {', '.join(gt_methods)} read{'s' * (len(gt_methods) == 1)} ground "
                            "truth, which only the labeled images have: drop labeled_kd, or use methods that read no "
                            "ground truth (e.g. sl2+pred)")


def _parse_guard(value) -> bool | str:
    """`teacher_guard`: not given or false: off; true: KD stops when the student reaches its teacher; `relabel`."""
    if value is None:
        return False
    if isinstance(value, str) and value.strip().lower() == GUARD_RELABEL:
        return GUARD_RELABEL
    if not isinstance(value, bool):
        raise KDConfigError(f"'teacher_guard' must be true, false or {GUARD_RELABEL}, got {value!r}")
    return value


def _parse_unit(value, where: str, meaning: str) -> float | None:
    """A number in the open interval (0, 1), or None (off); `meaning` says what it is in the error, e.g. "a score
    threshold between 0 and 1 (e.g. 0.5)"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise KDConfigError(f"'{where}' must be {meaning}, got {value!r}")
    return float(value)


def box_selection(boxes: float | str) -> tuple[float | None, bool]:
    """(score threshold or None, whether the labeled count is kept) of a parsed `unlabeled_boxes`: 0.25 -> (0.25,
    False), `match` or `label` -> (None, True), `match+0.25` or `label+0.25` -> (0.25, True)."""
    if isinstance(boxes, str):
        conf = boxes.partition("+")[2]
        return (float(conf) if conf else None), True
    return boxes, False


def labels_pool_once(boxes: float | str | None) -> bool:
    """Whether a parsed `unlabeled_boxes` has the teacher label the clean pool images once, at the start (`label+conf`),
    rather than decode its target on each augmented pool batch."""
    return isinstance(boxes, str) and boxes.startswith(BOXES_LABEL)


def _parse_boxes(value) -> float | str | None:
    """`unlabeled_boxes`: not given: DEFAULT_UNLABELED_BOXES; false: off (None); `match` (BOXES_MATCH); `match+conf`
    (both: the matched count and every box at score >= conf); `label`, `label+conf` (the same two rules on the clean
    pool, labeled once: `pool_labels`); else a teacher score threshold in (0, 1)."""
    if value is None:
        return DEFAULT_UNLABELED_BOXES
    if value is False:
        return None
    meaning = (f"a score threshold between 0 and 1 (e.g. 0.25), '{BOXES_MATCH}', '{BOXES_MATCH}+0.25' (both), "
               f"'{BOXES_LABEL}+0.25' (the clean pool labeled once), or false to turn the pool's pseudo-boxes off")
    text = value.strip().lower() if isinstance(value, str) else None
    if text in (BOXES_MATCH, BOXES_LABEL):
        return text
    if text is not None and text.startswith((BOXES_MATCH + "+", BOXES_LABEL + "+")):
        rule, _, conf = text.partition("+")
        try:
            return f"{rule}+{_parse_unit(float(conf), 'unlabeled_boxes', meaning):g}"
        except (ValueError, KDConfigError):
            raise KDConfigError(f"'unlabeled_boxes' must be {meaning}, got {value!r}") from None
    return _parse_unit(value, "unlabeled_boxes", meaning)


def _parse_teachers(value) -> dict[str, TeacherSpec]:
    if not isinstance(value, dict) or not value:
        raise KDConfigError("recipe needs 'teachers': a mapping {name: path.pt} or {name: {model: path.pt, imgsz: 640}}")
    teachers = {}
    for name, spec in value.items():
        if isinstance(spec, (str, Path)):
            spec = {"model": str(spec)}
        if not isinstance(spec, dict):
            raise KDConfigError(f"teacher '{name}' must be a path or {{model: path.pt, imgsz: N}}, got {spec!r}")
        _check_keys(spec, TEACHER_KEYS, f"teacher '{name}'")
        if not spec.get("model"):
            raise KDConfigError(f"teacher '{name}' has no 'model': give the checkpoint path, e.g. model: teacher.pt")
        imgsz = spec.get("imgsz")
        if imgsz is not None and (isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz <= 0):
            raise KDConfigError(f"teacher '{name}' imgsz must be a positive integer, got {imgsz!r}")
        check_teacher_imgsz(str(name), imgsz, MIN_GRID)  # the exact stride is checked once the teacher is loaded
        levels = spec.get("levels", "index")
        if levels not in LEVEL_PAIRINGS:
            raise KDConfigError(f"teacher '{name}' levels={levels!r} is unknown: use one of {list(LEVEL_PAIRINGS)}")
        teachers[str(name)] = TeacherSpec(model=str(spec["model"]), imgsz=imgsz, levels=levels)
    return teachers


def _parse_stage(i: int, s, teachers: dict) -> StageSpec:
    where = f"stage {i + 1}"
    if not isinstance(s, dict):
        raise KDConfigError(f"{where} must be a mapping with keys {sorted(STAGE_KEYS)}")
    _check_keys(s, STAGE_KEYS, where)
    if ("epochs" in s) == ("fraction" in s):
        raise KDConfigError(f"{where} needs exactly one of 'epochs: [start, end]' or 'fraction: [start, end]'")
    unit = "epochs" if "epochs" in s else "fraction"
    span = s[unit]
    if not (isinstance(span, (list, tuple)) and len(span) == 2 and all(isinstance(v, (int, float)) for v in span)):
        raise KDConfigError(f"{where} {unit} must be [start, end], got {span!r}")
    a, b = float(span[0]), float(span[1])
    if a < 0 or b <= a or (unit == "fraction" and b > 1.0):
        raise KDConfigError(f"{where} {unit} [{span[0]}, {span[1]}] is out of range: need 0 <= start < end"
                            + (" <= 1" if unit == "fraction" else ""))
    names = [str(t) for t in _as_list(s.get("teachers"), f"{where} teachers")]
    missing = [t for t in names if t not in teachers]
    if missing:
        raise KDConfigError(f"{where} uses teachers {missing} not defined under 'teachers': {sorted(teachers)}")
    methods_raw = s.get("methods") or {}
    if isinstance(methods_raw, str):
        methods_raw = parse_methods(methods_raw)
    if not isinstance(methods_raw, dict):
        raise KDConfigError(f"{where} methods must be a mapping {{name: weight}} or 'fgd+pred', got {methods_raw!r}")
    methods = []
    for name, spec in methods_raw.items():
        params = dict(spec) if isinstance(spec, dict) else {"weight": spec}
        weight = _parse_positive(params.pop("weight", None), f"{where} {name} weight", allow_none=True)
        methods.append(MethodSpec(name=str(name), weight=weight, params=params))
    if bool(names) != bool(methods):
        raise KDConfigError(f"{where} needs both teachers and methods, or neither (a no-KD stage)")
    tw = s.get("teacher_weights") or [1.0] * len(names)
    if not isinstance(tw, list) or len(tw) != len(names):
        raise KDConfigError(f"{where} teacher_weights must be a list with one weight per teacher ({len(names)})")
    tw = [_parse_positive(w, f"{where} teacher_weights") for w in tw]
    combine = s.get("combine", "sum")
    if combine not in COMBINES:
        raise KDConfigError(f"{where} combine={combine!r} is unknown: use one of {list(COMBINES)}")
    return StageSpec(span=(a, b), unit=unit, teachers=names, methods=methods, teacher_weights=tw, combine=combine,
                     name=str(s.get("name") or f"stage{i + 1}"))


def _parse_layers(value) -> dict[str, list[int]] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"student", "teacher"}:
        raise KDConfigError("layers must be {student: [i, j, ...], teacher: [i, j, ...]} with equal lengths")
    s, t = value["student"], value["teacher"]
    if not (isinstance(s, list) and isinstance(t, list) and len(s) == len(t) and s
            and all(isinstance(i, int) and not isinstance(i, bool) for i in s + t)):
        raise KDConfigError("layers.student and layers.teacher must be non-empty integer lists of equal length")
    return {"student": list(s), "teacher": list(t)}


def _parse_schedule(value) -> Schedule:
    if value is None:
        return Schedule()
    if isinstance(value, str):
        value = {"decay": value}
    if not isinstance(value, dict):
        raise KDConfigError(f"schedule must be a mapping with keys {sorted(SCHEDULE_KEYS)}, got {value!r}")
    _check_keys(value, SCHEDULE_KEYS, "schedule")
    decay = value.get("decay", "constant")
    if decay not in DECAYS:
        raise KDConfigError(f"schedule decay={decay!r} is unknown: use one of {list(DECAYS)}")
    final = _parse_positive(value.get("final", 1.0 if decay == "constant" else 0.01), "schedule final")
    warmup = _parse_positive(value.get("warmup_epochs", 0.0), "schedule warmup_epochs")
    off = _parse_bool(value.get("off_close_mosaic", False), "schedule off_close_mosaic")
    return Schedule(decay=decay, final=final, warmup_epochs=warmup, off_close_mosaic=off)


def _parse_class_map(value) -> dict[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, int) and isinstance(v, int) and not isinstance(v, bool) for k, v in value.items()
    ):
        raise KDConfigError("class_map must map dataset class index -> teacher class index, e.g. {0: 2, 1: 0}")
    return {int(k): int(v) for k, v in value.items()}
