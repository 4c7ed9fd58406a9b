"""NEU-DET (Northeastern University steel surface defects, Pascal VOC XML) -> Ultralytics YOLO.

Layouts found by scanning src for *.xml and matching images by file stem:

* original: ``NEU-DET/ANNOTATIONS/*.xml`` + ``NEU-DET/IMAGES/*.jpg`` (no split: a deterministic, class-stratified
  split with val_fraction and seed is made);
* Kaggle: ``NEU-DET/{train,validation}/annotations/*.xml`` + ``NEU-DET/{train,validation}/images/<class>/*.jpg``
  (that split is kept).

Class names in the XML are normalised (case, spaces, hyphens and underscores ignored; NEU's two-letter codes
Cr/In/Pa/PS/RS/Sc accepted) to the six names of :data:`yolo_kd.data.steel.STEEL_NAMES`, in that order, so a model
trained on the procedural steel set and one trained on NEU-DET share class ids.
"""

from __future__ import annotations

import re
from pathlib import Path

from .steel import STEEL_NAMES
from .voc import convert_voc_dataset

NEU_NAMES = STEEL_NAMES
_ABBREVIATIONS = {"cr": 0, "in": 1, "pa": 2, "ps": 3, "rs": 4, "sc": 5}


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


_LOOKUP = {**{_key(n): i for i, n in enumerate(NEU_NAMES)}, **_ABBREVIATIONS,
           "pitted": 3, "rolledin": 4, "scale": 4, "scratch": 5, "patch": 2}


def neu_class(name: str):
    """NEU-DET class index for an XML class name ("Rolled-in scale", "rolled_in_scale", "RS" -> 4), else None."""
    return _LOOKUP.get(_key(name))


def convert_neu_det(src, root, val_fraction: float = 0.2, seed: int = 0, overwrite: bool = False) -> Path:
    """Convert a NEU-DET folder (either layout above) to a YOLO dataset under root; return root/data.yaml."""
    return convert_voc_dataset(src, root, NEU_NAMES, neu_class, what="NEU-DET converter",
                               fix="<the NEU-DET folder holding ANNOTATIONS/ and IMAGES/ or train/ and validation/>",
                               val_fraction=val_fraction, seed=seed, overwrite=overwrite, unknown="error")
