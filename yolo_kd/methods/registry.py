"""The method registry: the `Method` base class, `@register(name)`, lookup, checks and default weights."""

from __future__ import annotations

import inspect

from torch import nn

from ..errors import KDConfigError
from ..needs import describe, missing, offers

METHODS: dict[str, type] = {}


def register(name: str):
    """Class decorator: make a `Method` available as ``method=name``."""

    def wrap(cls):
        METHODS[name] = cls
        cls.name = name
        return cls

    return wrap


class Method(nn.Module):
    """Base class. Subclasses set `terms` and implement forward(s_taps, t_taps, targets) -> {term: scalar}."""

    name = ""
    terms: tuple[str, ...] = ()
    needs: dict[str, frozenset[str]] = {}  # term -> what it reads from the pair (`yolo_kd.needs`); unlisted: features
    drops_terms = False  # True: a term the pair cannot feed is dropped (one log line); False: compat refuses the method
    needs_head_inputs = False  # reads the Detect head's own inputs (refuses custom `layers`)
    reads_gt = False  # reads the batch's GT boxes: with unlabeled images it sees the labeled rows only
    default_weight = 1.0  # recipe weight when none is given, chosen from `yolo-kd bench` runs (README, Benchmark)

    def __init__(self, student, teacher):
        super().__init__()
        self.student_shapes, self.teacher_shapes = student, teacher

    @classmethod
    def reads_ground_truth(cls, params: dict) -> bool:
        """Whether the method built with recipe `params` reads GT boxes (`reads_gt`), known before it is built."""
        return cls.reads_gt

    def keep_terms(self, wanted: tuple[str, ...]) -> tuple[str, ...]:
        """`wanted` less the terms whose needs this pair lacks, logged in one line; sets and returns `self.terms`."""
        gone = missing({t: self.needs.get(t, frozenset()) for t in wanted}, offers(self.student_shapes,
                                                                                   self.teacher_shapes))
        if gone:
            from ultralytics.utils import LOGGER

            LOGGER.warning(f"yolo-kd {self.name} ({describe(self.student_shapes, self.teacher_shapes)}): dropped "
                           + "; ".join(f"{t} ({why})" for t, why in gone.items()))
        self.terms = tuple(t for t in wanted if t not in gone)
        if not self.terms:
            raise ValueError(f"none of its terms {list(wanted)} applies to this pair: use a feature method (pkd, sl2)")
        return self.terms


def method_weight(spec) -> float:
    """A recipe MethodSpec's weight: its own, or the method's `default_weight` when the recipe names none."""
    if spec.weight is not None:
        return spec.weight
    cls = METHODS.get(spec.name)
    return cls.default_weight if cls else 1.0


def check_method(name: str, params: dict) -> type:
    """The registered class for `name`, with `params` checked against its constructor (clear errors, no swallowing)."""
    if name not in METHODS:
        raise KDConfigError(f"unknown method '{name}': choose from {sorted(METHODS)} (combine with '+', e.g. fgd+pred)")
    cls = METHODS[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in {"self", "student", "teacher"}]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise KDConfigError(f"method '{name}' has no parameter(s) {unknown}: valid ones are {allowed + ['weight']}")
    return cls


def build_method(name: str, params: dict, student, teacher) -> Method:
    """Instantiate method `name` for a student/teacher pair given their TapShapes."""
    cls = check_method(name, params)
    try:
        return cls(student, teacher, **params)
    except (TypeError, ValueError) as e:
        raise KDConfigError(f"method '{name}' cannot be built with {params}: {e}") from e
