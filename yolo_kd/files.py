"""The image files of a data set split, found the way Ultralytics finds them (shared by preflight, evaluation, demo)."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence

from .errors import KDConfigError
from .ultra import image_formats


def list_image_files(img_path: str | Path | Sequence[str | Path]) -> list[str]:
    """Image files of an Ultralytics split entry (a folder, a .txt list of images, or a list of those), sorted.

    Mirrors `ultralytics.data.base.BaseDataset.get_img_files` so both sides see the same images.
    """
    files: list[str] = []
    for p in img_path if isinstance(img_path, (list, tuple)) else [img_path]:
        p = Path(p)
        if p.is_dir():
            files += glob.glob(str(Path(glob.escape(str(p))) / "**" / "*.*"), recursive=True)
        elif p.is_file():
            lines = p.read_text(encoding="utf-8-sig").strip().splitlines()
            parent = str(p.parent) + os.sep
            files += [x.replace("./", parent, 1) if x.startswith("./") else x for x in lines]
        else:
            raise KDConfigError(f"image path {p} does not exist: fix the split entry in your data.yaml")
    formats = image_formats()
    images = sorted(x.replace("/", os.sep) for x in files if x.rpartition(".")[-1].lower() in formats)
    if not images:
        raise KDConfigError(f"no images found in {img_path}: point the split at a folder or .txt list of images")
    return images
