"""COCO-format datasets (an `instances_*.json` + an images folder) for evaluation.

COCO category ids are not contiguous (1..90 with gaps for COCO itself, or any ids such as 1, 3, 7); a YOLO model
predicts contiguous class indices 0..nc-1. `CategoryMap` maps sorted category ids to indices and back, the order
Ultralytics' `convert_coco` and `coco80_to_coco91_class` use. `load_coco_dataset` also writes a YOLO mirror of the
split (symlinked images + label txt files + data.yaml) because Ultralytics' validator reads YOLO labels.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from yolo_kd.errors import KDConfigError
from yolo_kd.evaluation.coco_format import EvalSet, image_key


class CategoryMap:
    """COCO category id <-> contiguous model class index (ids sorted ascending)."""

    def __init__(self, categories: Iterable[dict]):
        categories = sorted(categories, key=lambda c: int(c["id"]))
        if not categories:
            raise KDConfigError("the COCO json has no 'categories': add them ({'id': 1, 'name': 'person'}, ...)")
        self.category_ids = [int(c["id"]) for c in categories]
        if len(set(self.category_ids)) != len(self.category_ids):
            raise KDConfigError("the COCO json repeats a category id: give every category a distinct id")
        self.names = [str(c.get("name", c["id"])) for c in categories]
        self._index = {cid: i for i, cid in enumerate(self.category_ids)}

    @classmethod
    def from_json(cls, path: str | Path) -> "CategoryMap":
        """Read the `categories` of a COCO json file."""
        return cls(read_coco_json(path)["categories"])

    def __len__(self) -> int:
        return len(self.category_ids)

    def to_index(self, category_id: int) -> int:
        """COCO category id -> model class index."""
        try:
            return self._index[int(category_id)]
        except KeyError:
            raise KDConfigError(f"category id {category_id} is not in the COCO json: use one of {self.category_ids}")

    def to_category_id(self, index: int) -> int:
        """Model class index -> COCO category id."""
        if not 0 <= int(index) < len(self.category_ids):
            raise KDConfigError(f"class index {index} is out of range for {len(self)} COCO categories")
        return self.category_ids[int(index)]


def read_coco_json(path: str | Path) -> dict:
    """Load a COCO json and check it has images, annotations and categories."""
    path = Path(path)
    if not path.is_file():
        raise KDConfigError(f"COCO annotation file {path} does not exist: pass data=path/to/instances_val.json")
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise KDConfigError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}): fix or re-export the file") from e
    missing = [k for k in ("images", "annotations", "categories") if k not in coco]
    if missing:
        raise KDConfigError(f"{path} has no '{missing[0]}' list: it must be a COCO instances file")
    return coco


def _split_name(json_path: Path) -> str:
    stem = json_path.stem
    return stem[len("instances_"):] if stem.startswith("instances_") and len(stem) > len("instances_") else "val"


def find_images_dir(json_path: Path, coco: dict, images_dir: str | Path | None = None) -> Path:
    """The folder holding the json's `file_name`s: `images_dir` if given, else the usual COCO layouts."""
    split = _split_name(json_path)
    first = coco["images"][0]["file_name"] if coco["images"] else None
    if images_dir is not None:
        candidates = [Path(images_dir)]
    else:
        root = json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent
        candidates = [root / split, root / "images" / split, root / "images", root, json_path.parent]
    for c in candidates:
        if c.is_dir() and (first is None or (c / first).is_file()):
            return c
    hint = "images=path/to/images" if images_dir is None else f"an images= folder that contains {first}"
    raise KDConfigError(f"cannot find the images of {json_path.name} (looked in {candidates[0]}): pass {hint}")


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    try:
        os.symlink(os.path.abspath(src), dst)
    except OSError:  # filesystems without symlinks
        shutil.copyfile(src, dst)


def load_coco_dataset(
    annotation_json: str | Path, work_dir: str | Path, images_dir: str | Path | None = None
) -> EvalSet:
    """Evaluation split from a COCO instances json + images folder.

    Ground truth is the json itself (crowd regions stay as COCO ignore regions, missing `area`/`iscrowd`/`id` are
    filled in). A YOLO mirror is written under `work_dir` (images symlinked, crowd boxes left out as Ultralytics'
    `convert_coco` does) for Ultralytics' validator; its image paths map back to the json's image ids.
    """
    json_path = Path(annotation_json)
    coco = read_coco_json(json_path)
    cmap = CategoryMap(coco["categories"])
    source_dir = find_images_dir(json_path, coco, images_dir)
    split = _split_name(json_path)
    work_dir = Path(work_dir)
    image_root, label_root = work_dir / "images" / split, work_dir / "labels" / split

    gt = {k: v for k, v in coco.items() if k not in {"annotations"}}
    anns_by_image: dict[int, list[dict]] = {}
    annotations = []
    for i, a in enumerate(coco["annotations"]):
        a = dict(a)
        a.setdefault("id", i + 1)
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2]) * float(a["bbox"][3]))
        cmap.to_index(a["category_id"])  # unknown category -> KDConfigError
        annotations.append(a)
        anns_by_image.setdefault(a["image_id"], []).append(a)
    gt["annotations"] = annotations

    image_ids, crowd = {}, 0
    for im in coco["images"]:
        src = source_dir / im["file_name"]
        if not src.is_file():
            raise KDConfigError(f"image {src} listed in {json_path.name} is missing: fix images= or the json")
        dst = image_root / im["file_name"]
        _link(src, dst)
        image_ids[image_key(dst)] = int(im["id"])
        w, h = float(im["width"]), float(im["height"])
        lines = []
        for a in anns_by_image.get(im["id"], []):
            x, y, bw, bh = (float(v) for v in a["bbox"])
            if a["iscrowd"]:
                crowd += 1
                continue
            if bw <= 0 or bh <= 0:
                continue
            cls = cmap.to_index(a["category_id"])
            lines.append(f"{cls} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}")
        label = (label_root / im["file_name"]).with_suffix(".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")

    names = "\n".join(f"  {i}: {json.dumps(n)}" for i, n in enumerate(cmap.names))
    data_yaml = work_dir / "data.yaml"
    rel = f"images/{split}"
    data_yaml.write_text(f"path: {work_dir.resolve()}\ntrain: {rel}\nval: {rel}\nnames:\n{names}\n")
    notes = [f"{crowd} crowd annotations are COCO ignore regions (not GT boxes for Ultralytics)"] if crowd else []
    return EvalSet(gt=gt, image_ids=image_ids, category_ids=cmap.category_ids, names=cmap.names,
                   data_yaml=str(data_yaml), split="val", notes=notes)
