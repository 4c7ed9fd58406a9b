"""Frozen teachers: validated loading from checkpoints, compatibility checks, and a pool that keeps only the
current stage's teachers in memory.

The pool is deliberately not an `nn.Module`: teachers never enter the student's state_dict, the optimizer, the EMA
or DDP. A deepcopy (EMA, NaN recovery) shares the pool; pickling (checkpoints, DDP launch) keeps only the specs, so
each process reloads teachers from their paths.
"""

from __future__ import annotations

import gc
import zipfile
from pathlib import Path

import torch
from torch import nn

from .errors import KDConfigError, first_line
from .preflight import MIN_GRID
from .recipe import TeacherSpec
from .taps import TapShapes, head_taps, record_layers
from .ultra import detect_head, fuse_conv_bn, has_one2one, load_model

FEATURE_LOSS_TASKS = {"detect"}
HEAD_TASKS = {"Segment": "segment", "Segment26": "segment", "Pose": "pose", "Pose26": "pose", "OBB": "obb",
              "OBB26": "obb", "Classify": "classify"}


def check_teacher_file(name: str, spec: TeacherSpec) -> None:
    """Cheap checks done before anything else starts: the path exists and looks like a PyTorch checkpoint."""
    path = Path(spec.model)
    if path.suffix in {".yaml", ".yml"}:
        raise KDConfigError(
            f"teacher '{name}' is a model yaml ({path}) without weights: an untrained teacher cannot teach; "
            "train it first (yolo train model=... data=...) and pass its best.pt"
        )
    if not path.is_file():
        raise KDConfigError(f"teacher '{name}' checkpoint '{path}' not found: check the path (teacher=path/to/best.pt)")
    if path.stat().st_size == 0 or not zipfile.is_zipfile(path):
        raise KDConfigError(
            f"teacher '{name}' file '{path}' is not a PyTorch checkpoint (empty, truncated or another format): "
            "pass a .pt file saved by Ultralytics training"
        )


def load_teacher(name: str, spec: TeacherSpec) -> nn.Module:
    """Load a teacher checkpoint as a frozen FP32 detection model in eval mode, or raise a clear KDConfigError."""
    check_teacher_file(name, spec)
    try:
        model = load_model(spec.model)
    except (RuntimeError, EOFError, KeyError, TypeError, AttributeError, ValueError, zipfile.BadZipFile) as e:
        raise KDConfigError(
            f"teacher '{name}' checkpoint '{spec.model}' cannot be loaded ({type(e).__name__}: "
            f"{first_line(e, 120)}): the file is corrupt or not an Ultralytics model; re-export or retrain it"
        ) from e
    task = getattr(model, "task", None)
    if task not in FEATURE_LOSS_TASKS:
        raise KDConfigError(
            f"teacher '{name}' is a '{task}' model but yolo-kd distils detection: use a detect teacher "
            "(trained with task=detect, e.g. from yolov8s.yaml) with the same classes as your data"
        )
    try:
        detect_head(model)
    except TypeError as e:
        kind = HEAD_TASKS.get(str(e), str(e))
        raise KDConfigError(f"teacher '{name}' is a '{kind}' model ({e} head) but yolo-kd distils detection: use a "
                            "YOLOv8/11/26 detect checkpoint trained on your data's classes") from None
    return freeze(model)


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no gradients, FP32, BatchNorm folded into its conv: the teacher's weights can never change."""
    model.float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if hasattr(model, "criterion"):
        model.criterion = None
    return fuse_conv_bn(model)


def probe_size(student: nn.Module) -> int:
    """Image size of the dummy forward that reads tap shapes: two cells of the student's coarsest grid."""
    return int(max(student.stride.max().item(), MIN_GRID)) * 2


@torch.no_grad()
def probe(model: nn.Module, imgsz: int, ch: int, layers: list[int] | None = None) -> TapShapes:
    """Tap shapes from one dummy forward in eval mode (the model's train/eval state is restored)."""
    was_training = model.training
    model.eval()
    p = next(model.parameters())
    x = torch.zeros(1, ch, imgsz, imgsz, device=p.device, dtype=p.dtype)
    with record_layers(model, layers) as feats:
        out = model(x)
    taps = head_taps(out, feats)
    model.train(was_training)
    head = detect_head(model)
    return TapShapes(channels=[f.shape[1] for f in taps.feats], nc=int(head.nc), reg_max=int(head.reg_max),
                     strides=tuple(model.stride.tolist()), one2one=has_one2one(head))


def check_classes(name: str, teacher: nn.Module, names: dict, class_map: dict | None) -> None:
    """The teacher must predict the dataset's classes (same count and names), unless a class_map says how."""
    t_names = dict(getattr(teacher, "names", {}) or {})
    if class_map is not None:
        bad = {k: v for k, v in class_map.items() if k not in names or v not in t_names}
        missing = sorted(set(names) - set(class_map))
        if bad or missing:
            raise KDConfigError(
                f"class_map for teacher '{name}' must map every dataset class {sorted(names)} to a teacher class "
                f"{sorted(t_names)}; bad entries {bad}, unmapped {missing}"
            )
        return
    if len(t_names) != len(names) or [t_names[k] for k in sorted(t_names)] != [names[k] for k in sorted(names)]:
        raise KDConfigError(
            f"teacher '{name}' classes {list(t_names.values())[:8]} ({len(t_names)}) differ from the dataset's "
            f"{list(names.values())[:8]} ({len(names)}): train the teacher on the same classes, or pass "
            "class_map={dataset_class: teacher_class}"
        )


class TeacherPool:
    """Teachers by name, loaded on demand and released when a stage no longer needs them."""

    def __init__(self, specs: dict[str, TeacherSpec]):
        self.specs = dict(specs)
        self.loaded: dict[str, nn.Module] = {}
        self.loads = 0  # how many times a teacher was loaded (for tests and logs)

    def acquire(self, names: list[str], device: torch.device,
                dtype: torch.dtype = torch.float32) -> dict[str, nn.Module]:
        """Make exactly `names` resident on `device` in `dtype` (the autocast dtype under AMP: fp16 or bf16;
        channels_last on CUDA); others are released."""
        for n in list(self.loaded):
            if n not in names:
                self.release(n)
        for n in names:
            if n not in self.loaded:
                self.loaded[n] = load_teacher(n, self.specs[n])
                self.loads += 1
            m = self.loaded[n]
            if next(m.parameters()).device != device:
                m.to(device)
                if device.type == "cuda":
                    m.to(memory_format=torch.channels_last)
            if next(m.parameters()).dtype != dtype:
                m.to(dtype)
        return {n: self.loaded[n] for n in names}

    def release(self, name: str) -> None:
        """Drop a teacher from memory."""
        if self.loaded.pop(name, None) is not None:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def __deepcopy__(self, memo):
        return self  # teachers are frozen and shared; an EMA copy must not duplicate them

    def __getstate__(self):
        return {"specs": self.specs, "loaded": {}, "loads": 0}
