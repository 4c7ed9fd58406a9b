"""GC10-DET (steel sheet surface defects, 10 classes, Pascal VOC XML) -> Ultralytics YOLO.

Layout as distributed: ``GC10-DET/lable/*.xml`` (sic) and the images in numbered class folders ``GC10-DET/1`` ...
``GC10-DET/10`` (``img_01_...jpg``); images are matched to XML files by file stem anywhere under src. GC10-DET has
no official split: a deterministic, class-stratified split with val_fraction and seed is made.

The XML class names are pinyin with a number prefix; they map to these English names (class ids 0..9):

==  =============  =============
id  XML name       English name
==  =============  =============
0   1_chongkong    punching_hole
1   2_hanfeng      welding_line
2   3_yueyawan     crescent_gap
3   4_shuiban      water_spot
4   5_youban       oil_spot
5   6_siban        silk_spot
6   7_yiwu         inclusion
7   8_yahen        rolled_pit
8   9_zhehen       crease
9   10_yaozhe      waist_folding
==  =============  =============

The English names themselves, the pinyin without the number and the misspelling ``10_yaozhed`` found in the
public release are accepted too. Any other name (the release holds one corrupt ``d``) is skipped with a warning.
"""

from __future__ import annotations

import re
from pathlib import Path

from .voc import convert_voc_dataset

GC10_PINYIN = ("chongkong", "hanfeng", "yueyawan", "shuiban", "youban", "siban", "yiwu", "yahen", "zhehen", "yaozhe")
GC10_NAMES = ("punching_hole", "welding_line", "crescent_gap", "water_spot", "oil_spot", "silk_spot", "inclusion",
              "rolled_pit", "crease", "waist_folding")

_LOOKUP = {**{p: i for i, p in enumerate(GC10_PINYIN)}, **{n.replace("_", ""): i for i, n in enumerate(GC10_NAMES)},
           "yaozhed": 9}


def gc10_class(name: str):
    """GC10-DET class index for an XML class name ("1_chongkong", "chongkong", "punching hole" -> 0), else None."""
    match = re.fullmatch(r"\s*(?:(\d+)_)?(.+?)\s*", name.lower())
    if not match:
        return None
    cls = _LOOKUP.get(re.sub(r"[\s_\-]+", "", match.group(2)))
    if cls is not None and match.group(1) is not None and int(match.group(1)) != cls + 1:
        return None  # a number prefix that contradicts the name
    return cls


def convert_gc10_det(src, root, val_fraction: float = 0.2, seed: int = 0, overwrite: bool = False) -> Path:
    """Convert a GC10-DET folder (lable/*.xml + numbered image folders) to YOLO under root; return data.yaml."""
    return convert_voc_dataset(src, root, GC10_NAMES, gc10_class, what="GC10-DET converter",
                               fix="<the GC10-DET folder holding lable/ and the image folders 1..10>",
                               val_fraction=val_fraction, seed=seed, overwrite=overwrite, unknown="skip")
