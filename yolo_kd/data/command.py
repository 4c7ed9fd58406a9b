"""`yolo-kd data <dataset> key=value ...`: make or convert a demo dataset and print the path of its data.yaml.

    yolo-kd data steel      root=datasets/steel n_train=200 n_val=50 imgsz=200 seed=0 [overwrite=True]
    yolo-kd data neon-trees root=datasets/neon_trees [tile=400 overlap=0 min_visible=0.5 edge=pad val_images=a,b]
    yolo-kd data neu-det    src=NEU-DET  root=datasets/neu_det   [val_fraction=0.2 seed=0]
    yolo-kd data gc10-det   src=GC10-DET root=datasets/gc10_det  [val_fraction=0.2 seed=0]
    yolo-kd data plantdoc   src=PlantDoc root=datasets/plantdoc  [names=a,b,c val_fraction=0.2 seed=0]

The CLI passes the word after `data` as overrides["dataset"] and the key=value pairs as the other keys (strings
or already-parsed values are both accepted).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import KDConfigError
from ..options import as_bool, as_str
from .gc10 import convert_gc10_det
from .neon import prepare_neon_trees
from .neu import convert_neu_det
from .plantdoc import convert_plantdoc
from .steel import make_steel_dataset

#: dataset -> (function, default root, accepted keys besides root)
DATASETS = {
    "steel": (make_steel_dataset, "datasets/steel", ("n_train", "n_val", "imgsz", "seed", "overwrite")),
    "neon-trees": (prepare_neon_trees, "datasets/neon_trees",
                   ("tile", "overlap", "val_images", "min_visible", "edge", "overwrite", "wheel")),
    "neu-det": (convert_neu_det, "datasets/neu_det", ("src", "val_fraction", "seed", "overwrite")),
    "gc10-det": (convert_gc10_det, "datasets/gc10_det", ("src", "val_fraction", "seed", "overwrite")),
    "plantdoc": (convert_plantdoc, "datasets/plantdoc", ("src", "names", "val_fraction", "seed", "overwrite")),
}
_ALIASES = {"neon": "neon-trees", "trees": "neon-trees", "neu": "neu-det", "gc10": "gc10-det"}
_NEEDS_SRC = ("neu-det", "gc10-det", "plantdoc")


def keep(key, value):
    """Passed to the data set's function as given; it checks its own arguments and names the fix."""
    return value


#: every key of every data set (each data set accepts those listed for it in DATASETS)
DATA_SPEC = {
    "root": (as_str, None, "output folder (default: datasets/<name>)"),
    "src": (as_str, None, "the downloaded data set (neu-det, gc10-det, plantdoc)"),
    "overwrite": (as_bool, None, "rewrite an existing output"),
    **{k: (keep, None, "") for k in ("n_train", "n_val", "imgsz", "seed", "tile", "overlap", "val_images",
                                      "min_visible", "edge", "wheel", "val_fraction", "names")},
}


def data_command(overrides: dict) -> Path:
    """Run one dataset generator/converter from CLI overrides; print and return the data.yaml path."""
    args = dict(overrides or {})
    dataset = str(args.pop("dataset", "") or "").strip().lower().replace("_", "-")
    dataset = _ALIASES.get(dataset, dataset)
    choices = ", ".join(DATASETS)
    if dataset not in DATASETS:
        problem = f"unknown dataset {dataset!r}" if dataset else "no dataset named"
        raise KDConfigError(f"{problem}; use one of: {choices} (e.g. yolo-kd data steel)")
    target, default_root, keys = DATASETS[dataset]
    unknown = sorted(set(args) - set(keys) - {"root"})
    if unknown:
        raise KDConfigError(f"{dataset}: unknown argument(s) {', '.join(unknown)}; accepted: "
                            f"root, {', '.join(keys)}")
    if dataset in _NEEDS_SRC and not args.get("src"):
        raise KDConfigError(f"{dataset}: src= is missing; pass src=<folder of the downloaded dataset>")
    args["root"] = args.get("root") or default_root
    if "overwrite" in args:
        args["overwrite"] = as_bool("overwrite", args["overwrite"])
    data = target(**args)
    print(f"yolo-kd data {dataset}: {data}")
    return data
