"""Unlabeled images: which files make the pool (`unlabeled=`, or `unlabeled:` in data.yaml) and each rank's share.

The teacher gives a dense target on every image, labeled or not, so each training step draws
`round(unlabeled_ratio * batch)` images from the pool (`unlabeled_loader`), augments them with the run's own pipeline
(mosaic among unlabeled images only, so no unlabeled tile is ever trained as background; `close_mosaic` as the
labeled loader) and runs the student on them in a second forward (so the labeled images' outputs, detection loss and
BatchNorm batch statistics are exactly those of a run without the pool; BN's running statistics are updated by both
forwards, `unlabeled_bn: all`, the default chosen by the label-scarce bench; `labeled` keeps them to the labeled
forward). The detection loss reads the labeled images only;
every KD term reads all of them, the teacher seeing labeled and unlabeled images in one batch (terms that need ground
truth read the labeled rows: `Method.reads_gt`). An epoch is still one pass over the labeled set, so `epochs=` means
what it means in Ultralytics.

Scale: the pool is a list of paths; labels are made on the fly (no scan, no .cache file, no image cache), so a
500k-image .txt list costs its paths in memory. Under DDP each rank reads its own shard (`files[rank::world]`).
"""

from __future__ import annotations

import glob
from pathlib import Path

from .errors import KDConfigError
from .files import list_image_files
from .ultra import image_formats


def resolve_images(source, where: str = "unlabeled") -> list[str]:
    """Image files of `source`: a folder (recursive), a .txt list, a glob pattern, or a list of those; sorted.
    One-line KDConfigError when nothing is found."""
    entries = source if isinstance(source, (list, tuple)) else [source]
    if not entries or any(e in (None, "") for e in entries):
        raise KDConfigError(f"{where}= is empty: give a folder, a .txt list or a glob of images without labels")
    files: list[str] = []
    for entry in entries:
        entry = str(entry)
        if any(c in entry for c in "*?["):
            formats = image_formats()
            found = sorted(f for f in glob.glob(entry, recursive=True) if f.rpartition(".")[-1].lower() in formats)
            if not found:
                raise KDConfigError(f"{where}={entry} matches no images: check the pattern (e.g. 'pool/**/*.jpg')")
            files += found
            continue
        if not Path(entry).exists():
            raise KDConfigError(f"{where}={entry} does not exist: give a folder, a .txt list or a glob of images")
        if Path(entry).is_file() and entry.rpartition(".")[-1].lower() in image_formats():
            files.append(entry)  # one image
            continue
        try:
            files += list_image_files(entry)
        except KDConfigError:
            raise KDConfigError(f"{where}={entry} holds no images: give a folder, a .txt list or a glob of images "
                                f"(formats: {', '.join(sorted(image_formats()))})") from None
    return files


def data_unlabeled(data: dict):
    """The `unlabeled:` entry of a resolved data.yaml (relative paths from its `path`, as its train/val), or None."""
    entry = data.get("unlabeled")
    if not entry:
        return None
    root = Path(data.get("path") or ".")
    entries = entry if isinstance(entry, (list, tuple)) else [entry]
    return [str(e) if Path(str(e)).is_absolute() else str(root / str(e)) for e in entries]


def unlabeled_files(recipe, data: dict) -> list[str] | None:
    """The run's unlabeled images: the recipe's `unlabeled` (the option wins), else data.yaml's, else None."""
    if recipe.unlabeled:
        return resolve_images(recipe.unlabeled)
    source = data_unlabeled(data)
    return resolve_images(source, "data.yaml unlabeled") if source else None


def absolute_pool(entries: list) -> list[str]:
    """Pool entries with paths made absolute (globs kept as given), so last.pt's recipe finds the pool from any
    folder."""
    return [str(p) if any(c in str(p) for c in "*?[") else str(Path(p).absolute()) for p in entries]


def images_per_step(ratio: float, labeled: int) -> int:
    """Pool images beside a labeled batch of `labeled` images: round(ratio x labeled), at least 1."""
    return max(1, round(ratio * labeled))


def shard(files: list[str], rank: int, world: int) -> list[str]:
    """This rank's share of the pool under DDP: every world-th file from `rank` (disjoint, together the whole pool);
    a pool smaller than the world gives each rank one file, shared."""
    return files[rank::world] or [files[rank % len(files)]]


def rank_share(files: list[str]) -> list[str]:
    """This process's share of the pool: `shard` by the DDP rank and world size; the whole pool outside DDP."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return shard(files, dist.get_rank(), dist.get_world_size())
    return list(files)
