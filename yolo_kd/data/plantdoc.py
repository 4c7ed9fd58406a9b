"""PlantDoc-style Pascal VOC (one XML per image, free class names) -> Ultralytics YOLO.

Layout as distributed (PlantDoc-Object-Detection-Dataset): ``TRAIN/*.jpg`` + ``TRAIN/*.xml`` and ``TEST/...``;
the TRAIN/TEST folders become train/val. Without such folders a deterministic, class-stratified split with
val_fraction and seed is made. Any folder of VOC XML + images with arbitrary class names works the same way.

Classes: by default every class name found in the XML files (whitespace trimmed), sorted; or pass names= (a list
or a comma-separated string) to fix their order, and objects of other classes are then refused.
"""

from __future__ import annotations

from pathlib import Path

from yolo_kd.errors import KDConfigError

from .voc import convert_voc_dataset, find_voc_samples

_FIX = "<a folder of Pascal VOC *.xml files and their images, e.g. PlantDoc's TRAIN/ and TEST/>"


def convert_plantdoc(src, root, names=None, val_fraction: float = 0.2, seed: int = 0, overwrite: bool = False) -> Path:
    """Convert VOC XML with free class names to YOLO under root (classes sorted, or as given); return data.yaml."""
    what = "PlantDoc converter"
    if isinstance(names, str):
        names = [n for n in (part.strip() for part in names.split(",")) if n]
    samples = None
    if names is None:
        if not overwrite and (Path(root).expanduser() / "data.yaml").exists():
            names_list = []  # reused below without scanning the source
        else:
            samples = find_voc_samples(src, what, _FIX)
            names_list = sorted({o.name.strip() for s in samples for o in s.ann.objects if o.name.strip()})
    else:
        names_list = [str(n).strip() for n in names]
        if not names_list or len(set(names_list)) != len(names_list):
            raise KDConfigError(f"{what}: names={names!r} must be a non-empty list of distinct class names; pass "
                                f"e.g. names='Apple Scab Leaf,Apple leaf'")
    if samples is not None and not names_list:
        raise KDConfigError(f"{what}: the XML files under {src} contain no named objects; pass src={_FIX}")
    index = {n: i for i, n in enumerate(names_list)}
    return convert_voc_dataset(src, root, names_list, lambda name: index.get(name.strip()), what=what, fix=_FIX,
                               val_fraction=val_fraction, seed=seed, overwrite=overwrite, unknown="error",
                               samples=samples, stamp_extra={"names": ",".join(names_list)} if names else None)
