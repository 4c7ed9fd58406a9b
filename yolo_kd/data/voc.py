"""Pascal VOC XML -> Ultralytics YOLO: the one parser and writer behind the NEU-DET, GC10-DET and PlantDoc converters.

Coordinates: VOC's `<bndbox>` holds 1-based inclusive pixel indices (labelImg and the VOC devkit write xmin >= 1), so
a box spans the pixel edges [xmin - 1, xmax] x [ymin - 1, ymax]; boxes are clipped to the image and empty ones dropped.
The image size is read from the image file itself; when the XML's `<size>` disagrees (a known PlantDoc defect), the
boxes are rescaled from the XML size to the real one.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from yolo_kd.errors import KDConfigError

from ._common import (IMAGE_SUFFIXES, LOGGER, positive_int, prepare_root, reuse_existing, split_dirs, stamp,
                      write_data_yaml, yolo_line)

#: Folder names that mark a source split (lower case).
TRAIN_DIRS = frozenset({"train", "training", "trainval"})
VAL_DIRS = frozenset({"val", "valid", "validation", "test", "testing"})


@dataclass(frozen=True)
class VocObject:
    """One `<object>`: its class name as written and its raw `<bndbox>` numbers."""

    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool = False

    def box(self, one_based: bool = True) -> tuple:
        """Pixel-edge box (x1, y1, x2, y2): VOC's 1-based inclusive indices (default) or raw 0-based edges."""
        off = 1.0 if one_based else 0.0
        return (self.xmin - off, self.ymin - off, self.xmax, self.ymax)


@dataclass(frozen=True)
class VocAnnotation:
    """One VOC XML file: `<filename>`, `<size>` (0 when absent) and its objects."""

    xml: Path
    filename: str
    width: int
    height: int
    objects: tuple


def _text(node, tag: str, default: str = "") -> str:
    child = node.find(tag)
    return child.text.strip() if child is not None and child.text is not None else default


def _number(node, tag: str, xml: Path) -> float:
    try:
        return float(_text(node, tag))
    except ValueError:
        raise KDConfigError(f"{xml}: <{tag}> is not a number; fix or delete this annotation file") from None


def parse_voc_xml(path, name=None) -> VocAnnotation:
    """Read one Pascal VOC annotation (a path, or a binary file object named by name); objects without <bndbox>
    are skipped."""
    source = path if hasattr(path, "read") else Path(path)
    path = Path(name) if name is not None else Path(getattr(path, "name", "<stream>")) if hasattr(path, "read") \
        else source
    try:
        root = ET.parse(source).getroot()
    except (ET.ParseError, OSError) as e:
        raise KDConfigError(f"{path}: not a readable Pascal VOC XML file ({e}); fix or delete it") from None
    size = root.find("size")
    width = height = 0
    if size is not None:
        try:
            width, height = int(float(_text(size, "width", "0"))), int(float(_text(size, "height", "0")))
        except ValueError:
            width = height = 0
    objects = []
    for obj in root.iter("object"):
        bnd = obj.find("bndbox")
        if bnd is None:
            continue
        objects.append(VocObject(_text(obj, "name"), _number(bnd, "xmin", path), _number(bnd, "ymin", path),
                                 _number(bnd, "xmax", path), _number(bnd, "ymax", path),
                                 _text(obj, "difficult", "0") == "1"))
    return VocAnnotation(path, _text(root, "filename"), width, height, tuple(objects))


def image_size(path: Path) -> tuple:
    """(width, height) of an image file, read from its header."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def yolo_lines(ann: VocAnnotation, class_of: Callable[[str], int | None], width: int, height: int,
               one_based: bool = True, skipped: Counter | None = None) -> list:
    """YOLO label lines for an annotation on an image of the given real size (boxes rescaled when <size> differs)."""
    sx = width / ann.width if ann.width > 0 else 1.0
    sy = height / ann.height if ann.height > 0 else 1.0
    lines = []
    for obj in ann.objects:
        cls = class_of(obj.name)
        if cls is None:
            if skipped is not None:
                skipped[obj.name] += 1
            continue
        x1, y1, x2, y2 = obj.box(one_based)
        x1, x2 = max(0.0, min(x1 * sx, width)), max(0.0, min(x2 * sx, width))
        y1, y2 = max(0.0, min(y1 * sy, height)), max(0.0, min(y2 * sy, height))
        if x2 - x1 < 1e-6 or y2 - y1 < 1e-6:
            if skipped is not None:
                skipped["<empty box>"] += 1
            continue
        lines.append(yolo_line(cls, (x1, y1, x2, y2), width, height))
    return lines


# ------------------------------------------------------------------------------------------------- source scanning
@dataclass
class VocSample:
    """An annotation matched to its image, with the split its folders name (None when they name none)."""

    ann: VocAnnotation
    image: Path
    split: str | None


def _split_of(parts: Iterable[str]) -> str | None:
    for part in parts:
        low = part.lower()
        if low in TRAIN_DIRS:
            return "train"
        if low in VAL_DIRS:
            return "val"
    return None


def find_voc_samples(src, what: str, fix: str) -> list:
    """Every *.xml under src matched to the image with the same stem (or its <filename>), sorted by XML path."""
    if src is None or str(src) == "":
        raise KDConfigError(f"{what}: no source folder given; pass src={fix}")
    src = Path(src).expanduser().resolve()
    if not src.is_dir():
        raise KDConfigError(f"{what}: src={src} is not a folder; pass src={fix}")
    images = defaultdict(list)
    xmls = []
    for p in sorted(src.rglob("*")):
        if not p.is_file():
            continue
        suffix = p.suffix.lower()
        if suffix == ".xml":
            xmls.append(p)
        elif suffix in IMAGE_SUFFIXES:
            images[p.stem.lower()].append(p)
    if not xmls:
        raise KDConfigError(f"{what}: no Pascal VOC *.xml annotation under {src}; pass src={fix}")
    samples, missing = [], []
    for xml in xmls:
        ann = parse_voc_xml(xml)
        split = _split_of(xml.relative_to(src).parts[:-1])
        candidates = images.get(xml.stem.lower()) or images.get(Path(ann.filename).stem.lower()) or []
        if not candidates:
            missing.append(xml.name)
            continue

        def rank(img: Path, xml=xml, split=split):
            same_split = _split_of(img.relative_to(src).parts[:-1]) == split
            shared = len([a for a, b in zip(img.relative_to(src).parts, xml.relative_to(src).parts) if a == b])
            exact_name = img.name.lower() == ann.filename.lower()
            return (-same_split, -exact_name, -shared, IMAGE_SUFFIXES.index(img.suffix.lower()), str(img))

        image = min(candidates, key=rank)
        samples.append(VocSample(ann, image, split or _split_of(image.relative_to(src).parts[:-1])))
    if missing:
        LOGGER.warning("%s: %d annotation(s) have no image under %s and were skipped (e.g. %s)", what, len(missing),
                       src, ", ".join(missing[:3]))
    if not samples:
        raise KDConfigError(f"{what}: none of the {len(xmls)} XML files under {src} has a matching image; "
                            f"pass src={fix}")
    return samples


def assign_splits(samples: list, val_fraction: float, seed: int, what: str) -> None:
    """Keep the source's own train/val folders when every sample has one; else split deterministically by seed.

    The fallback split is stratified by each image's first object class: every class group is shuffled with numpy's
    generator(seed), its members are spread evenly over [0, 1), and the round(N * val_fraction) lowest (at least one,
    at most N - 1) become val, so each class gets about val_fraction of its images in val.
    """
    splits = {s.split for s in samples}
    if splits == {"train", "val"}:
        return
    if splits != {None}:
        LOGGER.warning("%s: the source's folders give no complete train/val split; splitting all %d images anew "
                       "(val_fraction=%s, seed=%d)", what, len(samples), val_fraction, seed)
    if len(samples) < 2:
        raise KDConfigError(f"{what}: {len(samples)} image(s) cannot be split into non-empty train and val sets; "
                            f"add images")
    rng = np.random.default_rng(seed)
    groups = defaultdict(list)
    for s in sorted(samples, key=lambda s: str(s.ann.xml)):
        groups[s.ann.objects[0].name.strip().lower() if s.ann.objects else ""].append(s)
    keyed = []
    for key in sorted(groups):
        group = groups[key]
        for rank_, idx in enumerate(rng.permutation(len(group))):
            keyed.append(((rank_ + 0.5) / len(group), rng.random(), group[idx]))
    keyed.sort(key=lambda k: k[:2])
    n_val = min(max(int(round(len(samples) * val_fraction)), 1), len(samples) - 1)
    for i, (_, _, sample) in enumerate(keyed):
        sample.split = "val" if i < n_val else "train"


def _fraction(value, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not 0.0 < number < 1.0:
        raise KDConfigError(f"{what}: val_fraction={value!r} must lie strictly between 0 and 1; pass e.g. "
                            f"val_fraction=0.2")
    return number


def convert_voc_dataset(src, root, names: Sequence[str], class_of: Callable[[str], int | None], *, what: str,
                        fix: str, val_fraction: float = 0.2, seed: int = 0, overwrite: bool = False,
                        unknown: str = "error", samples: list | None = None, stamp_extra: dict | None = None) -> Path:
    """Convert a folder of VOC XML + images to root/{images,labels}/{train,val} and root/data.yaml.

    class_of maps an XML class name to its index or None; unknown="error" raises KDConfigError for a None,
    unknown="skip" drops those objects with one warning. Images keep their file names (prefixed with their parent
    folder when two share a name). An existing root/data.yaml is reused unless overwrite=True.
    """
    val_fraction = _fraction(val_fraction, what)
    seed = positive_int(seed, "seed", what, minimum=0)
    root = prepare_root(root, what)
    header = stamp(converter=what.split()[0], src=Path(src).expanduser().resolve() if src else src,
                   val_fraction=val_fraction, seed=seed, **(stamp_extra or {}))
    existing = reuse_existing(root, bool(overwrite), header, what)
    if existing is not None:
        return existing
    if samples is None:
        samples = find_voc_samples(src, what, fix)
    if unknown == "error":
        for s in samples:
            for obj in s.ann.objects:
                if class_of(obj.name) is None:
                    raise KDConfigError(f"{what}: {s.ann.xml} has class {obj.name!r}, which is not one of "
                                        f"{list(names)}; fix that annotation or pass the right dataset/names=")
    assign_splits(samples, val_fraction, seed, what)
    split_dirs(root)
    used: set = set()
    skipped: Counter = Counter()
    boxes = {"train": Counter(), "val": Counter()}
    n_images = Counter()
    for s in sorted(samples, key=lambda s: str(s.ann.xml)):
        name = s.image.name
        if (s.split, name.lower()) in used:
            name = f"{s.image.parent.name}_{name}"
        used.add((s.split, name.lower()))
        width, height = image_size(s.image)
        lines = yolo_lines(s.ann, class_of, width, height, skipped=skipped)
        shutil.copyfile(s.image, root / "images" / s.split / name)
        (root / "labels" / s.split / f"{Path(name).stem}.txt").write_text("".join(f"{line}\n" for line in lines))
        n_images[s.split] += 1
        boxes[s.split].update(int(line.split()[0]) for line in lines)
    if skipped:
        LOGGER.warning("%s: skipped %d object(s): %s", what, sum(skipped.values()),
                       ", ".join(f"{k} x{v}" for k, v in sorted(skipped.items())))
    data = write_data_yaml(root, names, header)
    for split in ("train", "val"):
        LOGGER.info("%s: %s %d images, boxes per class: %s", what, split, n_images[split],
                    ", ".join(f"{n}={boxes[split][i]}" for i, n in enumerate(names)))
    return data
