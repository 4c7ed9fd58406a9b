"""Unlabeled images: a pool of images without label files that the student sees beside every labeled batch.

The teacher gives a dense target on every image, labeled or not, so each training step draws
`round(unlabeled_ratio * batch)` images from the pool, augments them with the run's own pipeline (mosaic among
unlabeled images only, so no unlabeled tile is ever trained as background; `close_mosaic` as the labeled loader)
and runs the student on them in a second forward (so the labeled images' outputs, detection loss and BatchNorm batch
statistics are exactly those of a run without the pool; BN's running statistics are updated by both forwards). The
detection loss reads the labeled images only; every KD term reads all of them, the teacher seeing labeled and
unlabeled images in one batch (terms that need ground truth read the labeled rows: `Method.reads_gt`). An epoch is still one pass over the labeled
set, so `epochs=` means what it means in Ultralytics.

Scale: the pool is a list of paths; labels are made on the fly (no scan, no .cache file, no image cache), so a
500k-image .txt list costs its paths in memory. Under DDP each rank reads its own shard (`files[rank::world]`).
The loader is held outside the module tree (like the teachers): EMA copies share it, pickles drop it.
"""

from __future__ import annotations

import glob
from pathlib import Path

import torch

from .errors import KDConfigError
from .files import list_image_files
from .ultra import build_loader, image_formats, unlabeled_dataset


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


def shard(files: list[str], rank: int, world: int) -> list[str]:
    """This rank's share of the pool under DDP: every world-th file from `rank` (disjoint, together the whole pool);
    a pool smaller than the world gives each rank one file, shared."""
    return files[rank::world] or [files[rank % len(files)]]


class UnlabeledStream:
    """Batches of augmented unlabeled images, built on first use from the run's own arguments.

    `next(device)` returns (N_u, C, H, W) float images in [0, 1] at the loader's size (the teacher's own size when it
    is larger than the student's, `imgsz` otherwise)."""

    def __init__(self, files: list[str], ratio: float):
        self.files, self.ratio = list(files), float(ratio)
        self.mosaic_closed = False
        self.seed = None  # the epoch's seed (`reseed`), so a resumed run draws what the uninterrupted one drew
        self._loader = self._iter = self._dataset = None
        self._hyp = None

    def batch_size(self, labeled: int) -> int:
        """Unlabeled images per step for a labeled batch of `labeled` images (at least 1)."""
        return max(1, round(self.ratio * labeled))

    def build(self, hyp, data: dict, imgsz: int, batch: int, stride: int) -> None:
        """Make this rank's dataset and loader (`hyp`: the run's train arguments, as the labeled loader reads them)."""
        files = self.files
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            files = shard(files, torch.distributed.get_rank(), torch.distributed.get_world_size())
        self._hyp = hyp
        self._dataset = unlabeled_dataset(files, hyp, data, imgsz, batch, stride)
        if self.mosaic_closed:
            self._dataset.close_mosaic(hyp=self._closed_hyp())
        self._loader = build_loader(self._dataset, batch, getattr(hyp, "workers", 0))
        if self.seed is not None:
            self._loader.generator.manual_seed(self.seed)
        self._iter = iter(self._loader)

    def reseed(self, seed: int) -> None:
        """Start the epoch's pass over the pool from `seed` (the trainer re-derives one per epoch)."""
        self.seed = seed
        if self._loader is not None:
            self._loader.generator.manual_seed(seed)
            self._loader.reset()
            self._iter = iter(self._loader)

    @property
    def built(self) -> bool:
        return self._loader is not None

    def close_mosaic(self) -> None:
        """The labeled loader's final no-mosaic epochs apply here too."""
        if self.mosaic_closed:
            return
        self.mosaic_closed = True
        if self._dataset is not None:
            self._dataset.close_mosaic(hyp=self._closed_hyp())
            self._loader.reset()
            self._iter = iter(self._loader)

    def _closed_hyp(self):
        from copy import copy

        return copy(self._hyp)

    def next_batch(self) -> dict:
        """The loader's next collated batch (uint8 `img`, empty boxes), starting a new pass over the pool when one
        ends."""
        try:
            return next(self._iter)
        except StopIteration:
            self._iter = iter(self._loader)
            return next(self._iter)

    def next(self, device, n: int | None = None) -> torch.Tensor:
        """The next unlabeled batch on `device`, float in [0, 1]: its first `n` images when given (a labeled batch
        smaller than the one the loader was built for: the epoch's last, or after Ultralytics halved the batch)."""
        img = self.next_batch()["img"][:n]
        return img.to(device, non_blocking=True).float() / 255

    def close(self) -> None:
        """Shut the loader's workers down; the next `build` starts afresh."""
        if self._loader is not None:
            self._loader.close()
        self._loader = self._iter = self._dataset = None

    def __deepcopy__(self, memo):
        return self  # shared by EMA copies, as the teacher pool

    def __getstate__(self):
        return {"files": self.files, "ratio": self.ratio, "mosaic_closed": self.mosaic_closed}

    def __setstate__(self, state):
        self.__init__(state["files"], state["ratio"])
        self.mosaic_closed = state["mosaic_closed"]
