"""The demo and bench data sets by domain name, made or converted offline: `defect` (procedural steel defects) and
`agriculture` (real NEON tree crowns tiled from the deepforest wheel)."""

from __future__ import annotations

from pathlib import Path

DOMAIN_NAMES = ("defect", "agriculture")


def make_domain_data(domain: str, root: Path, n_train: int = 160, n_val: int = 40, imgsz: int = 128,
                     seed: int = 0, overwrite: bool = False) -> Path:
    """data.yaml of the domain's data set under `root` (made once, reused after unless `overwrite`); sizes apply to
    `defect` only."""
    if domain == "defect":
        from .steel import make_steel_dataset

        return make_steel_dataset(root, n_train=n_train, n_val=n_val, imgsz=max(imgsz, 128), seed=seed,
                                  overwrite=overwrite)
    from .neon import prepare_neon_trees

    return prepare_neon_trees(root, overwrite=overwrite)
