"""The unlabeled pool's loader, owned by the engine (`hooks`): built beside the train loader, drawn in
`preprocess_batch`, restarted each epoch, closed with the run. The distiller only reads the tensors it puts in the
batch (`unlabeled_img`, and `unlabeled_teacher_img` for a teacher at its own size).

Contract:
- every draw is exactly `n` images (`n <= batch`): the sampler cycles through one random permutation of the pool
  after another, so a pool smaller than, equal to or larger than the batch never gives a short batch;
- its own random stream: the sampler has its own generator and the augmentation runs with Python, NumPy and torch
  random states of its own (`RandomStreams`), so drawing from the pool never consumes the labeled loader's random
  state (with `workers=0`; with workers, the workers' seeds come from the pool's generator);
- `restart(seed)` puts the whole stream (order, augmentation, an empty mosaic buffer) in a state that depends on
  `seed` alone: the engine restarts it from (seed, epoch) at every epoch, so a resumed run draws what the
  uninterrupted one drew, with nothing to save in last.pt; `start(seed)` is that restart unless the stream already
  stands at the start of `seed` (the engine restarts it for the next epoch at the end of each one, so its workers
  start and prefetch while the trainer validates and saves).
"""

from __future__ import annotations

import random
from copy import copy

import numpy as np
import torch
from torch.utils.data import Sampler

from .ultra import empty_mosaic_buffer, pool_dataloader, unlabeled_dataset


class RandomStreams:
    """Python, NumPy and torch (CPU) random states of their own: `with streams:` swaps them in for the block and the
    caller's back after it, so nothing inside consumes or changes the caller's random state."""

    def __init__(self, seed: int = 0):
        self.seed(seed)

    def seed(self, seed: int) -> None:
        self.states = (random.Random(seed).getstate(), np.random.RandomState(seed % 2**32).get_state(),
                       torch.Generator().manual_seed(seed).get_state())

    @staticmethod
    def _capture():
        return random.getstate(), np.random.get_state(), torch.get_rng_state()

    @staticmethod
    def _restore(states) -> None:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])

    def __enter__(self):
        self._outer = self._capture()
        self._restore(self.states)
        return self

    def __exit__(self, *exc):
        self.states = self._capture()
        self._restore(self._outer)


class EndlessShuffle(Sampler):
    """Indices of `n` items without end: one random permutation of range(n) after another, drawn from `generator`."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __iter__(self):
        while True:
            yield from torch.randperm(self.n, generator=self.generator).tolist()


class UnlabeledLoader:
    """Batches of `batch` augmented pool images (uint8, at the loader's size), `n <= batch` of them per draw."""

    def __init__(self, files: list[str], hyp, data: dict, imgsz: int, batch: int, stride: int, workers: int,
                 two_views: bool = False, boxes: dict | None = None):
        """`hyp`: the run's train arguments, as the labeled loader reads them (mosaic, HSV, flips...); `two_views`:
        each draw also holds `img_strong`, the photometric view of the same images (`img` is then the weak one);
        `boxes`: the teacher's boxes per file (`pool_labels`), carried through the augmentation as labels."""
        self.files, self.batch, self.hyp = list(files), int(batch), hyp
        self.dataset = unlabeled_dataset(self.files, hyp, data, imgsz, self.batch, stride, two_views, boxes)
        self.generator = torch.Generator()
        self.random = RandomStreams()
        self.loader = pool_dataloader(self.dataset, self.batch, workers, EndlessShuffle(len(self.files), self.generator),
                                      self.generator)
        self.seed = 0
        self.mosaic_closed = False
        self._iter = None
        self._at_start = False  # nothing drawn since the last restart

    @property
    def has_boxes(self) -> bool:
        """Whether the pool's images carry the teacher's boxes (`boxes` given)."""
        return self.dataset.pool_boxes is not None

    def set_boxes(self, boxes: dict) -> None:
        """Carry `boxes` ({path: (n, 5) rows}) as the pool's labels from the next restart on; the stream in flight
        is closed (its workers hold the old ones), so the next `start` restarts it."""
        self.dataset.pool_boxes = self.dataset.labels.boxes = boxes
        self.close()

    def restart(self, seed: int) -> None:
        """Start the stream afresh from `seed`: the sampler's order, the augmentation's random state and an empty
        mosaic buffer all follow from `seed` alone."""
        self.seed = seed
        self._iter = None  # a worker iterator shuts its workers down when dropped
        self.generator.manual_seed(seed)
        self.random.seed(seed)
        empty_mosaic_buffer(self.dataset)
        with self.random:
            self._iter = iter(self.loader)
        self._at_start = True

    def start(self, seed: int) -> None:
        """`restart(seed)`, unless the stream already stands at the start of `seed` (restarted from it, nothing drawn
        since): what is drawn next is the same either way."""
        if not (self._at_start and self.seed == seed):
            self.restart(seed)

    def close_mosaic(self) -> None:
        """The labeled loader's final no-mosaic epochs apply here too (the run's arguments are not changed); the
        epoch's stream restarts from its seed, as a resumed run's would."""
        if not self.mosaic_closed:
            self.mosaic_closed = True
            self.dataset.close_mosaic(hyp=copy(self.hyp))
            self.restart(self.seed)

    def next(self, n: int | None = None) -> dict:
        """The next collated batch (uint8 `img`, and `img_strong` with two views; with `boxes`, the augmented boxes as
        Ultralytics collates labels: `batch_idx`, `cls`, normalised xywh `bboxes`), cut to its first `n` images when
        given."""
        if self._iter is None:
            self.restart(self.seed)
        with self.random:
            batch = next(self._iter)
        self._at_start = False
        if "img_strong" in batch:
            batch["img_strong"] = torch.stack(list(batch["img_strong"]))
        n = len(batch["img"]) if n is None else n
        kept = batch["batch_idx"] < n
        return {**batch, **{k: batch[k][:n] for k in ("img", "img_strong", "im_file") if k in batch},
                **{k: batch[k][kept] for k in ("batch_idx", "cls", "bboxes")}}

    def close(self) -> None:
        """Shut the workers down; `next` would restart the stream from the last seed."""
        self._iter, self._at_start = None, False
