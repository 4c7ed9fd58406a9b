"""The seam: every use of Ultralytics internals outside the trainer subclass (`trainer.py`) goes through here.

Tested on ultralytics 8.4.190. Outside this module and `trainer.py`, yolo-kd imports only the public facade
(`from ultralytics import YOLO`) and `from ultralytics.utils import LOGGER` (a test walks the imports). When an
Ultralytics release moves something, this file and `trainer.py` are where it breaks and where it is fixed.
Ultralytics is imported inside each function, so importing this module (or `yolo_kd.losses`) imports none of it.
"""

from __future__ import annotations

import copy

from pathlib import Path

import torch
from torch import nn

# ---------------------------------------------------------------------- the Detect head and its outputs


def detect_head(model: nn.Module) -> nn.Module:
    """The model's last layer, which must be a Detect head (YOLOv8/11/26); TypeError(class name) otherwise."""
    from ultralytics.nn.modules.head import Detect

    head = model.model[-1]
    if not isinstance(head, Detect) or type(head).__name__ not in {"Detect", "v10Detect"}:
        raise TypeError(type(head).__name__)
    return head


def head_outputs(output) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """(head inputs [P3, P4, P5], class logits (N, nc, A), box outputs (N, 4 * reg_max, A)) from a Detect head's
    output in train (dict) or eval ((decoded, dict)) form; the dense one-to-many branch for YOLO26."""
    if isinstance(output, (tuple, list)):
        output = output[1]
    if "one2many" in output:
        output = output["one2many"]
    return list(output["feats"]), output["scores"], output["boxes"]


def one2one_outputs(output) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(class logits (N, nc, A), box outputs (N, 4 * reg_max, A)) of a YOLO26 head's one-to-one branch (the deployed,
    NMS-free one; it runs on detached head inputs), or None for a head without one."""
    if isinstance(output, (tuple, list)):
        output = output[1]
    if "one2one" not in output:
        return None
    return output["one2one"]["scores"], output["one2one"]["boxes"]


def has_one2one(head: nn.Module) -> bool:
    """Whether a Detect head has a one-to-one branch (YOLO26, end-to-end)."""
    return getattr(head, "one2one_cv2", None) is not None


def dense_predictions(head: nn.Module, feats: list[torch.Tensor],
                      levels: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(class logits (N, nc, A), box outputs (N, 4*reg_max, A)) of a Detect head's dense (one-to-many) branch, its
    level levels[i] (default i) run on feats[i] with the head's weights detached: gradients flow into `feats` only,
    never into the head, whatever its requires_grad."""
    from torch.func import functional_call

    def run(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return functional_call(module, {k: v.detach() for k, v in module.named_parameters()}, (x,))

    branch = head.one2many
    levels = range(len(feats)) if levels is None else levels
    n = feats[0].shape[0]
    boxes = [run(branch["box_head"][k], f).view(n, 4 * head.reg_max, -1) for k, f in zip(levels, feats)]
    scores = [run(branch["cls_head"][k], f).view(n, head.nc, -1) for k, f in zip(levels, feats)]
    return torch.cat(scores, -1), torch.cat(boxes, -1)


# ---------------------------------------------------------------------- models and checkpoints


class StudentSurface:
    """The surface of Ultralytics' `DistillationModel` that its trainer, validator and criterion read, forwarded to
    `self.student` (a mixin for a wrapper `nn.Module`): model, criterion, init_criterion, class_weights, end2end,
    set_head_attr, fuse."""

    @property
    def model(self):
        """The student's layers (Ultralytics reads `model.model[-1]` for the head)."""
        return self.student.model

    @property
    def criterion(self):
        return self.student.criterion

    @criterion.setter
    def criterion(self, value):
        self.student.criterion = value

    def init_criterion(self):
        return self.student.init_criterion()

    @property
    def class_weights(self):
        """The student's per-class loss weights (Ultralytics sets them for cls_pw > 0); its criterion reads them."""
        return getattr(self.student, "class_weights", None)

    @class_weights.setter
    def class_weights(self, value):
        self.student.class_weights = value

    @property
    def end2end(self):
        return getattr(self.student, "end2end", False)

    @end2end.setter
    def end2end(self, value):
        self.student.end2end = value

    def set_head_attr(self, **kwargs):
        self.student.set_head_attr(**kwargs)

    def fuse(self, verbose: bool = True, imgsz: int = 640):
        return self.student.fuse(verbose=verbose, imgsz=imgsz)



def load_model(path) -> nn.Module:
    """The model object of an Ultralytics checkpoint (FP32 as saved by `load_checkpoint`)."""
    from ultralytics.nn.tasks import load_checkpoint

    return load_checkpoint(str(path))[0]


def detection_model(cfg, nc: int, ch: int = 3) -> nn.Module:
    """A fresh DetectionModel from a model yaml (path or dict)."""
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel(cfg, ch=ch, nc=nc, verbose=False)


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold each Conv's BatchNorm into its weights (inference speed). Unlike Ultralytics' `fuse()`, Detect heads are
    left whole: YOLO26's one2many branch, which `fuse()` drops, is what the KD losses read."""
    from ultralytics.nn.modules import Conv, DWConv
    from ultralytics.utils.torch_utils import fuse_conv_and_bn

    for m in model.modules():
        if type(m) in (Conv, DWConv) and hasattr(m, "bn"):
            m.conv = fuse_conv_and_bn(m.conv, m.bn)
            delattr(m, "bn")
            m.forward = m.forward_fuse
    return model


def copy_attributes(dst: nn.Module, src: nn.Module) -> None:
    """Ultralytics' copy_attr: the public attributes of `src` (yaml, names, args, stride...) onto `dst`."""
    from ultralytics.utils.torch_utils import copy_attr

    copy_attr(dst, src)


def train_args(**overrides):
    """Ultralytics' default train arguments with `overrides` (what a trainer attaches to `model.args`)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG

    return get_cfg(DEFAULT_CFG, overrides)


def train_arg_names() -> set[str]:
    """Every key Ultralytics' train/val/export accept (its cfg/default.yaml)."""
    from ultralytics.utils import DEFAULT_CFG_KEYS

    return set(DEFAULT_CFG_KEYS)


def parse_value(text: str):
    """A command-line value as Ultralytics reads it ('3' -> 3, 'True' -> True, 'none' -> None)."""
    from ultralytics.cfg import smart_value

    return smart_value(text)


def builtin_distillation_model(teacher: str, student: nn.Module) -> nn.Module:
    """Ultralytics' own KD wrapper (`distill_model=`), for the step-time bench."""
    from ultralytics.nn.distill_model import DistillationModel

    return DistillationModel(teacher_model=teacher, student_model=student)


# ---------------------------------------------------------------------- data sets and files


def resolve_dataset(data, autodownload: bool = False) -> dict:
    """Ultralytics' check_det_dataset: a data.yaml (or a folder holding one) resolved to absolute split paths."""
    from ultralytics.data.utils import check_det_dataset

    return check_det_dataset(str(data), autodownload=autodownload)


def find_dataset_yaml(name: str) -> str | None:
    """Where Ultralytics' check_det_dataset finds a data name that is not a local path (the dataset yamls it ships,
    with or without the .yaml suffix), without downloading; None when it finds none."""
    from ultralytics.utils.checks import check_file

    for candidate in (name, f"{name}.yaml", f"{name}.yml") if Path(name).suffix == "" else (name,):
        found = check_file(candidate, download=False, hard=False)
        if found:
            return str(found)
    return None


def online() -> bool:
    """Whether Ultralytics thinks it can download (False under YOLO_OFFLINE=1)."""
    from ultralytics.utils import ONLINE

    return bool(ONLINE)


def label_paths(images: list[str]) -> list[str]:
    """The YOLO label file of each image path (images/ -> labels/, suffix -> .txt), as Ultralytics finds them."""
    from ultralytics.data.utils import img2label_paths

    return img2label_paths([str(i) for i in images])


def image_formats() -> set[str]:
    """Image file suffixes Ultralytics reads (lower case, no dot)."""
    from ultralytics.data.utils import IMG_FORMATS

    return set(IMG_FORMATS)


def read_image_labels(image: str, label: str, nc: int):
    """Ultralytics' verify_image_label for one detection image: (im_file, labels, shape, ..., corrupt, msg)."""
    from ultralytics.data.utils import verify_image_label

    return verify_image_label((image, label, "", False, nc, 0, 0, False))


def next_run_dir(path: Path, exist_ok: bool = False) -> Path:
    """A run folder named as Ultralytics names them (increment_path: val, val2, val3...)."""
    from ultralytics.utils.files import increment_path

    return increment_path(path, exist_ok=exist_ok)


def predict_stream(model, source: str, predict: dict):
    """Ultralytics' Results on `source`, streamed, quiet, nothing saved: `model` a YOLO object, or a detection model in
    memory, run by the predictor on a copy (it fuses what it runs)."""
    from ultralytics.engine.model import Model

    if isinstance(model, Model):
        yield from model.predict(source, stream=True, verbose=False, save=False, **predict)
        return
    from ultralytics.models.yolo.detect import DetectionPredictor

    predictor = DetectionPredictor(overrides={"mode": "predict", "verbose": False, "save": False, **predict})
    yield from predictor(source=source, model=copy.deepcopy(model), stream=True)


def progress(iterable, total: int, desc: str):
    """Ultralytics' progress bar (TQDM) over `iterable`."""
    from ultralytics.utils import TQDM

    return TQDM(iterable, total=total, desc=desc)


def config_dir() -> Path:
    """Ultralytics' user config folder (where it looks for its fonts)."""
    from ultralytics.utils import USER_CONFIG_DIR

    return Path(USER_CONFIG_DIR)


# ---------------------------------------------------------------------- inference, validation, export


def letterbox(image, imgsz) -> "object":
    """Ultralytics' LetterBox (no auto-padding, scale up allowed) applied to one HWC image."""
    from ultralytics.data.augment import LetterBox

    return LetterBox(new_shape=tuple(imgsz), auto=False, scaleup=True)(image=image)


def grid_imgsz(imgsz, stride: int):
    """Ultralytics' check_imgsz: `imgsz` rounded up to the stride grid."""
    from ultralytics.utils.checks import check_imgsz

    return check_imgsz(imgsz, stride=stride, min_dim=1)


def backend(path, device):
    """Ultralytics' AutoBackend for any exported format (.pt, .onnx, .torchscript, ...), in eval mode."""
    from ultralytics.nn.autobackend import AutoBackend

    return AutoBackend(str(path), device=device, verbose=False).eval()


def device(name):
    """Ultralytics' select_device."""
    from ultralytics.utils.torch_utils import select_device

    return select_device(name, verbose=False)


def gflops(model: nn.Module, imgsz) -> float:
    """Ultralytics' FLOPs count at `imgsz`."""
    from ultralytics.utils.torch_utils import get_flops

    return get_flops(model, imgsz)


def capturing_validator(sink: list, info: dict):
    """A DetectionValidator class that also appends each image's final detections, in original-image pixels, to
    `sink` (im_file, bboxes xyxy, conf, cls) and records the settings it ran with in `info`."""
    from ultralytics.models.yolo.detect import DetectionValidator

    class CapturingValidator(DetectionValidator):
        def update_metrics(self, preds, batch):
            super().update_metrics(preds, batch)
            for si, pred in enumerate(preds):
                pbatch = self._prepare_batch(si, batch)
                scaled = self.scale_preds(pred, pbatch)
                sink.append(
                    {
                        "im_file": pbatch["im_file"],
                        "bboxes": scaled["bboxes"].detach().cpu().numpy(),
                        "conf": pred["conf"].detach().cpu().numpy(),
                        "cls": pred["cls"].detach().cpu().numpy(),
                    }
                )

        def finalize_metrics(self):
            super().finalize_metrics()
            info.update(imgsz=self.args.imgsz, batch=self.args.batch, rect=self.args.rect, speed=dict(self.speed),
                        conf=self.args.conf, iou=self.args.iou, max_det=self.args.max_det)

    return CapturingValidator


# ---------------------------------------------------------------------- unlabeled images


class PoolLabels:
    """Labels of a pool of unlabeled images, made on demand: no scan, no cache, one path per image in memory. Empty,
    or with `boxes` ({path: (n, 5) [class, x, y, w, h] normalised}, `pool_labels.teacher_labels`) the teacher's."""

    def __init__(self, files: list[str], boxes: dict | None = None):
        self.files, self.boxes = files, boxes or {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        import numpy as np

        rows = self.boxes.get(self.files[i], np.zeros((0, 5), dtype=np.float32))
        return {"im_file": self.files[i], "shape": (0, 0), "cls": rows[:, :1].copy(), "bboxes": rows[:, 1:].copy(),
                "segments": [], "normalized": True, "bbox_format": "xywh"}


def _unlabeled_images_class():
    """`UnlabeledImages`: Ultralytics' YOLODataset over a given file list whose labels are all empty (built on first
    use, so importing this module imports no Ultralytics; published as `yolo_kd.ultra.UnlabeledImages` for pickling)."""
    if "UnlabeledImages" not in globals():
        from ultralytics.data.dataset import YOLODataset

        class UnlabeledImages(YOLODataset):
            two_views = False  # `img` the weak view, `img_strong` the photometric one (`with_strong_view`)

            def __init__(self, *args, boxes: dict | None = None, **kwargs):
                self.pool_boxes = boxes  # read by get_labels, which YOLODataset's constructor calls
                super().__init__(*args, **kwargs)

            def build_transforms(self, hyp):
                transforms = super().build_transforms(hyp)
                return with_strong_view(transforms) if self.two_views else transforms

            def get_img_files(self, img_path):
                return list(img_path)

            def get_labels(self):
                return PoolLabels(self.im_files, self.pool_boxes)

            def get_image_and_label(self, index):
                """An unreadable pool image (never scanned: the pool may hold 500k paths) is skipped with one warning
                and another image drawn in its place."""
                import numpy as np

                from .errors import KDConfigError

                for _ in range(100):
                    try:
                        return super().get_image_and_label(index)
                    except (FileNotFoundError, OSError) as e:
                        if not getattr(self, "_warned", False):
                            from ultralytics.utils import LOGGER

                            LOGGER.warning(f"yolo-kd unlabeled: skipping unreadable images ({e})")
                            self._warned = True
                        index = int(np.random.randint(len(self)))
                raise KDConfigError("unlabeled: 100 unreadable images in a row: check the pool's files")

        UnlabeledImages.__module__ = __name__
        UnlabeledImages.__qualname__ = "UnlabeledImages"
        globals()["UnlabeledImages"] = UnlabeledImages
    return globals()["UnlabeledImages"]


#: Ultralytics names the engine uses as they are, imported on first use (`from .ultra import RANK`)
LAZY = {"RANK": "ultralytics.utils", "ModelEMA": "ultralytics.utils.torch_utils",
        "unwrap_model": "ultralytics.utils.torch_utils"}


def __getattr__(name):
    if name == "UnlabeledImages":
        return _unlabeled_images_class()
    if name in LAZY:
        import importlib

        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def unlabeled_dataset(files: list[str], hyp, data: dict, imgsz: int, batch: int, stride: int,
                      two_views: bool = False, boxes: dict | None = None):
    """A training dataset (the run's augmentation: mosaic, mixup, HSV, flips...) over unlabeled image `files`; with
    `two_views`, each item also holds `img_strong` (`with_strong_view`); with `boxes` (`PoolLabels`), the images carry
    them through the augmentation as labels."""
    from ultralytics.utils import colorstr

    dataset = _unlabeled_images_class()(
        img_path=files, imgsz=imgsz, batch_size=batch, augment=True, hyp=hyp, rect=False, cache=None,
        single_cls=False, stride=stride, pad=0.0, prefix=colorstr("unlabeled: "), task="detect", classes=None,
        data=data, fraction=1.0, boxes=boxes)
    if two_views:
        dataset.two_views = True
        dataset.transforms = dataset.build_transforms(hyp=copy.copy(hyp))
    return dataset


class StrongView:
    """Put `img_strong` beside `img`: the same augmented image (same mosaic, affine, mixup, flips) through the run's
    photometric transforms, as a (3, H, W) uint8 tensor like Format's `img`; `img` itself skips them (the weak view)."""

    def __init__(self, photometric: list, to_tensor):
        self.photometric, self.to_tensor = photometric, to_tensor

    def __call__(self, labels: dict) -> dict:
        view = {**labels, "img": labels["img"].copy()}
        for transform in self.photometric:
            view = transform(view)
        labels["img_strong"] = self.to_tensor(view["img"])
        return labels


def with_strong_view(transforms):
    """A training Compose whose photometric steps (RandomHSV; Albumentations when it holds no spatial transform) move
    out of the shared path into a `StrongView` just before Format (after the flips, which commute with them)."""
    from ultralytics.data.augment import Albumentations, RandomHSV

    steps = transforms.transforms
    photometric = [t for t in steps if isinstance(t, RandomHSV)
                   or (isinstance(t, Albumentations) and not getattr(t, "contains_spatial", False))]
    shared = [t for t in steps if all(t is not p for p in photometric)]
    fmt = shared[-1]
    transforms.transforms = shared[:-1] + [StrongView(photometric, fmt._format_img), fmt]
    return transforms


def pool_dataloader(dataset, batch: int, workers: int, sampler, generator):
    """A DataLoader of `batch` images per draw from `sampler` (endless), with Ultralytics' collate and worker seeding
    (the workers' seeds come from `generator`)."""
    import os

    from torch.utils.data import DataLoader
    from ultralytics.data.build import seed_worker

    workers = min(os.cpu_count() or 1, int(workers or 0))
    return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                      collate_fn=dataset.collate_fn, worker_init_fn=seed_worker, generator=generator,
                      prefetch_factor=4 if workers else None, pin_memory=torch.cuda.is_available())


def empty_mosaic_buffer(dataset) -> None:
    """Forget the images a training dataset keeps for mosaic partners (its `buffer`, and the decoded images it holds
    for them unless cached in RAM), as a freshly built dataset would have none."""
    if getattr(dataset, "cache", None) != "ram":
        for i in dataset.buffer:
            dataset.ims[i] = dataset.im_hw0[i] = dataset.im_hw[i] = None
    dataset.buffer.clear()
