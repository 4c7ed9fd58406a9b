"""NEON tree crowns: real aerial RGB images with human-drawn crown boxes, tiled into a one-class YOLO dataset.

Source: the ``deepforest==2.1.0`` wheel on PyPI (MIT licence) ships four NEON airborne RGB images (10 cm/px) with
Pascal VOC crown annotations under ``deepforest/data/``. The wheel is fetched with ``pip download --no-deps`` into
``root/_cache`` (once; later calls reuse it) and read as a zip; nothing is installed and no hub is contacted.

==========================================  ===========  =====  =====================
image                                       size         boxes  XML classes
==========================================  ===========  =====  =====================
2019_YELL_2_528000_4978000_image_crop2      2299 x 2472  574    Tree
2019_YELL_2_541000_4977000_image_crop       1249 x 1035  279    Tree
OSBS_029                                    400 x 400    61     Tree
SOAP_061                                    400 x 400    37     Alive, Dead
==========================================  ===========  =====  =====================

Every class (Tree, Alive, Dead) becomes the single class ``tree`` (a dead standing tree is still a crown to count).
The split is by source image, so no val tile shares pixels with a training tile: by default val is the
YELL 541000 crop (same Yellowstone site and season as the big training crop, so val measures detection rather than
site transfer) and train is the other three images. With tile=400, overlap=0, edge="shift", min_visible=0.5 that
gives 44 train tiles and 12 val tiles (box counts: see datasets/README.md).

The VOC numbers are used as 0-based pixel edges, as deepforest itself reads them.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from yolo_kd.errors import KDConfigError

from ._common import LOGGER, positive_int, prepare_root, reuse_existing, split_dirs, stamp, write_data_yaml, yolo_line
from .voc import VocAnnotation, parse_voc_xml

DEEPFOREST_VERSION = "2.1.0"
DEEPFOREST_WHEEL = f"deepforest-{DEEPFOREST_VERSION}-py3-none-any.whl"
NEON_IMAGES = ("2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop", "OSBS_029",
               "SOAP_061")
NEON_VAL_IMAGES = ("2019_YELL_2_541000_4977000_image_crop",)
NEON_NAMES = ("tree",)
_TREE_NAMES = {"tree", "alive", "dead"}
_WHAT = "NEON trees"


# ------------------------------------------------------------------------------------------------------- tiling
def tile_origins(length: int, tile: int, overlap: int = 0, edge: str = "pad") -> list:
    """Start offsets of the tiles along one axis.

    Tiles step by tile - overlap. edge="shift": the last tile is moved back inside the image (it overlaps its
    neighbour; an axis shorter than tile gets one padded tile); edge="pad": the last tile runs past the edge and is
    padded, so with overlap=0 the tiles partition the image.
    """
    stride = tile - overlap
    origins = [0]
    while origins[-1] + tile < length:
        origins.append(origins[-1] + stride)
    if edge == "shift" and len(origins) > 1 and origins[-1] + tile > length:
        origins[-1] = length - tile
        if origins[-1] <= origins[-2]:
            origins.pop()
    return origins


def tile_boxes(boxes: np.ndarray, x0: int, y0: int, x1: int, y1: int, min_visible: float) -> np.ndarray:
    """Boxes (N, 4 pixel edges) kept in the window [x0, x1) x [y0, y1): clipped, in window coordinates.

    A box is kept when at least min_visible of its area lies inside the window.
    """
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float64)
    clipped = np.stack([np.clip(boxes[:, 0], x0, x1), np.clip(boxes[:, 1], y0, y1),
                        np.clip(boxes[:, 2], x0, x1), np.clip(boxes[:, 3], y0, y1)], 1)
    inter = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = (inter > 0) & (inter >= min_visible * area - 1e-9)
    return clipped[keep] - np.array([x0, y0, x0, y0], np.float64)


def _boxes(ann: VocAnnotation, width: int, height: int) -> np.ndarray:
    out = []
    for obj in ann.objects:
        if obj.name.strip().lower() not in _TREE_NAMES:
            LOGGER.warning("%s: %s has class %r; counted as tree", _WHAT, ann.xml.name, obj.name)
        x1, y1, x2, y2 = obj.box(one_based=False)
        x1, x2 = max(0.0, min(x1, width)), max(0.0, min(x2, width))
        y1, y2 = max(0.0, min(y1, height)), max(0.0, min(y2, height))
        if x2 > x1 and y2 > y1:
            out.append((x1, y1, x2, y2))
    return np.array(out, np.float64).reshape(-1, 4)


def write_tiles(image: np.ndarray, boxes: np.ndarray, out_images: Path, out_labels: Path, stem: str, tile: int,
                overlap: int, min_visible: float, edge: str = "pad", pad_value: int = 114) -> tuple:
    """Cut one image into tile x tile PNGs with YOLO labels; return (tiles written, boxes written)."""
    height, width = image.shape[:2]
    n_tiles = n_boxes = 0
    for y0 in tile_origins(height, tile, overlap, edge):
        for x0 in tile_origins(width, tile, overlap, edge):
            crop = np.full((tile, tile, 3), pad_value, np.uint8)
            part = image[y0:y0 + tile, x0:x0 + tile]
            crop[:part.shape[0], :part.shape[1]] = part
            kept = tile_boxes(boxes, x0, y0, x0 + tile, y0 + tile, min_visible)
            name = f"{stem}_y{y0:05d}_x{x0:05d}"
            cv2.imwrite(str(out_images / f"{name}.png"), crop)
            (out_labels / f"{name}.txt").write_text("".join(f"{yolo_line(0, b, tile, tile)}\n" for b in kept))
            n_tiles += 1
            n_boxes += len(kept)
    return n_tiles, n_boxes


# ------------------------------------------------------------------------------------------------------ source
def fetch_deepforest_wheel(cache: Path) -> Path:
    """Path of the deepforest wheel in cache, downloading it with `pip download --no-deps` when absent."""
    cache = Path(cache)
    wheel = cache / DEEPFOREST_WHEEL
    if wheel.is_file() and zipfile.is_zipfile(wheel):
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    LOGGER.info("%s: downloading deepforest==%s (about 21 MB) with pip into %s", _WHAT, DEEPFOREST_VERSION, cache)
    cmd = [sys.executable, "-m", "pip", "download", f"deepforest=={DEEPFOREST_VERSION}", "--no-deps",
           "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", str(cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise KDConfigError(f"{_WHAT}: `pip download deepforest=={DEEPFOREST_VERSION}` failed ({tail[0]}); make PyPI "
                            f"reachable or put {DEEPFOREST_WHEEL} in {cache}")
    return wheel


def read_neon_images(wheel: Path) -> dict:
    """{image stem: (RGB->BGR uint8 image, VocAnnotation)} for the annotated images in the wheel."""
    out = {}
    with zipfile.ZipFile(wheel) as zf:
        members = set(zf.namelist())
        for stem in NEON_IMAGES:
            png, xml = f"deepforest/data/{stem}.png", f"deepforest/data/{stem}.xml"
            if png not in members or xml not in members:
                raise KDConfigError(f"{_WHAT}: {wheel.name} lacks {stem}.png/.xml; delete {wheel} so it is fetched "
                                    f"again")
            image = cv2.imdecode(np.frombuffer(zf.read(png), np.uint8), cv2.IMREAD_COLOR)
            out[stem] = (image, parse_voc_xml(io.BytesIO(zf.read(xml)), name=xml))
    return out


def tile_dataset(sources: dict, root: Path, val_images: Sequence[str], tile: int, overlap: int, min_visible: float,
                 edge: str) -> dict:
    """Tile {stem: (image, annotation)} into root/{images,labels}/{train,val}; return per-split counts."""
    split_dirs(root)
    stats = {s: {"images": [], "tiles": 0, "boxes": 0, "source_boxes": 0} for s in ("train", "val")}
    for stem in sorted(sources):
        image, ann = sources[stem]
        split = "val" if stem in val_images else "train"
        boxes = _boxes(ann, image.shape[1], image.shape[0])
        n_tiles, n_boxes = write_tiles(image, boxes, root / "images" / split, root / "labels" / split, stem, tile,
                                       overlap, min_visible, edge)
        st = stats[split]
        st["images"].append(stem)
        st["tiles"] += n_tiles
        st["boxes"] += n_boxes
        st["source_boxes"] += len(boxes)
    return stats


def _parse_val_images(val_images) -> tuple:
    if isinstance(val_images, str):
        val_images = [v for v in (p.strip() for p in val_images.split(",")) if v]
    return tuple(str(v) for v in val_images)


def prepare_neon_trees(root, tile: int = 400, overlap: int = 0, val_images: Sequence[str] = NEON_VAL_IMAGES,
                       min_visible: float = 0.5, edge: str = "pad", overwrite: bool = False,
                       wheel=None) -> Path:
    """Build the one-class NEON tree-crown YOLO dataset under root from the deepforest wheel; return data.yaml.

    tile: tile side in px; overlap: px shared by neighbouring tiles; val_images: source image stems (a list or a
    comma-separated string) whose tiles form val, all others train; min_visible: fraction of a box's area that must
    lie in a tile for the (clipped) box to be kept; edge: "shift" (last row/col moved inside) or "pad" (padded
    with grey 114); wheel: a local deepforest wheel to read instead of root/_cache (then nothing is downloaded).
    """
    tile = positive_int(tile, "tile", _WHAT, minimum=32)
    overlap = positive_int(overlap, "overlap", _WHAT, minimum=0)
    if overlap >= tile:
        raise KDConfigError(f"{_WHAT}: overlap={overlap} must be smaller than tile={tile}; pass e.g. overlap=0")
    try:
        min_visible = float(min_visible)
    except (TypeError, ValueError):
        min_visible = -1.0
    if not 0.0 < min_visible <= 1.0:
        raise KDConfigError(f"{_WHAT}: min_visible must lie in (0, 1]; pass e.g. min_visible=0.5")
    if edge not in ("shift", "pad"):
        raise KDConfigError(f"{_WHAT}: edge={edge!r} is not known; pass edge=shift or edge=pad")
    val_images = _parse_val_images(val_images)
    unknown = sorted(set(val_images) - set(NEON_IMAGES))
    if unknown or not val_images or set(val_images) >= set(NEON_IMAGES):
        raise KDConfigError(f"{_WHAT}: val_images={list(val_images)} must name some but not all of "
                            f"{list(NEON_IMAGES)}; pass e.g. val_images={NEON_VAL_IMAGES[0]}")
    root = prepare_root(root, _WHAT)
    header = stamp(generator="neon-trees", deepforest=DEEPFOREST_VERSION, tile=tile, overlap=overlap,
                   val_images=",".join(sorted(val_images)), min_visible=min_visible, edge=edge)
    existing = reuse_existing(root, bool(overwrite), header, _WHAT)
    if existing is not None:
        return existing
    wheel = Path(wheel) if wheel else fetch_deepforest_wheel(root / "_cache")
    if not zipfile.is_zipfile(wheel):
        raise KDConfigError(f"{_WHAT}: wheel={wheel} is not a wheel file; pass the path of {DEEPFOREST_WHEEL}")
    stats = tile_dataset(read_neon_images(wheel), root, val_images, tile, overlap, min_visible, edge)
    data = write_data_yaml(root, NEON_NAMES, header)
    for split, st in stats.items():
        LOGGER.info("%s: %s = %s: %d tiles, %d boxes (%d in the source images)", _WHAT, split, ", ".join(st["images"]),
                    st["tiles"], st["boxes"], st["source_boxes"])
    return data
