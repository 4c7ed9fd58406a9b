"""Helpers shared by the dataset generators and converters: YOLO label lines, data.yaml, reuse of a finished dataset."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ultralytics.utils import LOGGER  # the logger the rest of yolo-kd prints through

from yolo_kd.errors import KDConfigError

#: Image suffixes the converters read (lower case), in the order they are tried.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def yolo_line(cls: int, box: Sequence[float], width: int, height: int) -> str:
    """One YOLO label line `cls xc yc w h` (normalised, 6 decimals) for a pixel box (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = max(0.0, min(x1, width)), max(0.0, min(x2, width))
    y1, y2 = max(0.0, min(y1, height)), max(0.0, min(y2, height))
    return (f"{cls} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
            f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")


def stamp(**params) -> str:
    """The comment line written at the top of data.yaml that records how the dataset was made."""
    return "# yolo-kd dataset: " + " ".join(f"{k}={v}" for k, v in params.items())


def write_data_yaml(root: Path, names: Sequence[str], header: str = "", train: str = "images/train",
                    val: str = "images/val", extra: Mapping[str, object] | None = None) -> Path:
    """Write root/data.yaml (path, train, val, names; Ultralytics layout) and return its path."""
    import yaml

    root = Path(root).resolve()
    body = {"path": str(root), "train": train, "val": val,
            "names": {i: str(n) for i, n in enumerate(names)}}
    if extra:
        body.update(extra)
    text = (header + "\n" if header else "") + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)
    data = root / "data.yaml"
    data.write_text(text, encoding="utf-8")
    return data


def reuse_existing(root: Path, overwrite: bool, header: str, what: str) -> Path | None:
    """Return root/data.yaml when it exists and overwrite is False (logging the reuse), else clear old outputs."""
    data = Path(root) / "data.yaml"
    if data.exists() and not overwrite:
        first = data.read_text(encoding="utf-8").splitlines()[:1]
        if header and first != [header]:
            LOGGER.warning("%s: reusing %s although it was made with other settings (%s); pass overwrite=True to "
                           "rebuild it", what, data, first[0][2:] if first else "unknown")
        else:
            LOGGER.info("%s: reusing existing %s (pass overwrite=True to rebuild it)", what, data)
        return data
    for sub in ("images", "labels"):
        if (Path(root) / sub).exists():
            shutil.rmtree(Path(root) / sub)
    if data.exists():
        data.unlink()
    return None


def prepare_root(root, what: str) -> Path:
    """Resolve the output folder, refusing a path that is an existing file."""
    if root is None or str(root) == "":
        raise KDConfigError(f"{what}: no output folder given; pass root=<folder>")
    root = Path(root).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise KDConfigError(f"{what}: root={root} is a file, not a folder; pass root=<a folder for the dataset>")
    root.mkdir(parents=True, exist_ok=True)
    return root


def split_dirs(root: Path, splits: Iterable[str] = ("train", "val")) -> None:
    """Create images/<split> and labels/<split> under root."""
    for split in splits:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)


def positive_int(value, name: str, what: str, minimum: int = 1) -> int:
    """Parse a whole number >= minimum (command-line strings included) or raise KDConfigError."""
    try:
        number = int(value)
        if number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise KDConfigError(f"{what}: {name}={value!r} is not a whole number; "
                            f"pass {name}=<integer >= {minimum}>") from None
    if number < minimum:
        raise KDConfigError(f"{what}: {name}={number} is too small; pass {name}=<integer >= {minimum}>")
    return number
