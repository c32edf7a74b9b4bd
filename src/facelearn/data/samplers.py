"""Identity-aware batch samplers: M-per-class (P identities x K images) and identity pairs (the unit of SST).

Both are DDP-aware and resumable:

* the unit of data order is the *global* batch (``batch_size x num_replicas`` images): every rank builds the same
  list of global batches from ``seed`` and the epoch alone, and takes its contiguous slice
  ``[rank x batch_size, (rank + 1) x batch_size)`` of each, so ranks get disjoint images (and, for the identity
  samplers, disjoint identities) within a step. The list depends on the global batch size, not on how it is split:
  2 ranks x 64 and 1 rank x 128 train on the same images in the same steps, which is what lets a run resume on
  another number of processes (``facelearn.callbacks.ResumeStateCallback``);
* the sampler's position (epoch, batches already consumed) is state: ``state_dict()`` / ``load_state_dict()``;
  ``facelearn.callbacks.ResumeStateCallback`` stores it in Lightning checkpoints (counting *consumed* batches, which is exact even
  when DataLoader workers prefetch ahead), so a resumed run continues with exactly the remaining batches.

``batch_size`` is per rank (like a DataLoader's), so the global batch is ``batch_size x num_replicas``.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler


def indices_by_class(labels: np.ndarray) -> list[np.ndarray]:
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    bounds = np.cumsum(np.bincount(labels, minlength=int(labels.max()) + 1))[:-1]
    return np.split(order, bounds)


class _EpochRelay:
    """Lightning calls ``set_epoch`` on ``dataloader.sampler`` and ``dataloader.batch_sampler.sampler`` only; this
    relay, exposed as ``batch_sampler.sampler``, forwards it to the batch sampler itself."""

    def __init__(self, owner: "ResumableBatchSampler") -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class ResumableBatchSampler(Sampler[list[int]]):
    def __init__(self, batch_size: int, seed: int, num_replicas: int, rank: int) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"sampler: rank {rank} is not in [0, {num_replicas})")
        self.batch_size, self.seed, self.num_replicas, self.rank = batch_size, seed, num_replicas, rank
        self.epoch = 0
        self.start = 0  # batches of the current epoch already consumed (set when resuming)
        self.sampler = _EpochRelay(self)
        # trainer.overfit_batches (+debug=overfit): every epoch repeats epoch 0's batches, so Lightning's first-K
        # limit sees the same images each epoch (Lightning swaps only a RandomSampler for a sequential one)
        self.same_every_epoch = False

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_replicas

    def rank_slice(self, batch: list[int]) -> list[int]:
        """This rank's part of a global batch."""
        return batch[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]

    def global_batches(self, epoch: int) -> list[list[int]]:
        """The epoch's global batches (``global_batch_size`` indices each): a function of the seed, the epoch and the
        global batch size only."""
        raise NotImplementedError

    def rank_batches(self, epoch: int) -> list[list[int]]:
        return [self.rank_slice(b) for b in self.global_batches(0 if self.same_every_epoch else epoch)]

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.start = epoch, 0

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.rank_batches(self.epoch)
        start, self.start = self.start, 0
        yield from batches[start:]

    def __len__(self) -> int:
        return len(self.rank_batches(self.epoch)) - self.start

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"sampler state was saved with seed {state['seed']}, this run uses {self.seed}")
        self.epoch, self.start = int(state["epoch"]), int(state["start"])


class MPerClassBatchSampler(ResumableBatchSampler):
    """Batches of ``batch_size / images_per_class`` identities with ``images_per_class`` images each.

    Each epoch visits every identity with at least ``images_per_class`` images once (identities with fewer images
    sample with replacement when ``allow_repeats``, otherwise they are excluded; the count is in ``skipped``).
    """

    def __init__(self, labels: np.ndarray, batch_size: int, images_per_class: int = 4, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, allow_repeats: bool = True) -> None:
        super().__init__(batch_size, seed, num_replicas, rank)
        if images_per_class < 2:
            raise ValueError(f"sampler.images_per_class must be >= 2 for pair losses, got {images_per_class}")
        if batch_size % images_per_class:
            raise ValueError(f"data.batch_size={batch_size} must be a multiple of "
                             f"sampler.images_per_class={images_per_class}")
        self.k, self.p = images_per_class, batch_size // images_per_class
        groups = indices_by_class(labels)
        min_images = 2 if allow_repeats else images_per_class
        self.classes = [i for i, g in enumerate(groups) if len(g) >= min_images]
        self.skipped = len(groups) - len(self.classes)
        self.groups = groups
        if len(self.classes) < self.p * num_replicas:
            raise ValueError(f"M-per-class sampler: {len(self.classes)} usable identities cannot fill one global "
                             f"batch of {self.p} identities x {num_replicas} ranks")

    def global_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        classes = rng.permutation(self.classes)
        batches, p = [], self.p * self.num_replicas  # identities per global batch; a rank's slice holds whole ones
        for start in range(0, len(classes) - p + 1, p):
            batch = []
            for c in classes[start:start + p]:
                g = self.groups[c]
                batch += rng.choice(g, self.k, replace=len(g) < self.k).tolist()
            batches.append(batch)
        return batches


class IdentityPairSampler(MPerClassBatchSampler):
    """Each identity once per epoch with two distinct images: batches are ``[x1_0, x2_0, x1_1, x2_1, ...]``
    (``batch_size / 2`` identities). On deep data the two images are drawn at random every epoch (SST
    supplementary §1.1); identities with a single image are skipped (counted in ``skipped``). It is the
    M-per-class sampler with two images per class, which never repeats an image when a class has two or more."""

    def __init__(self, labels: np.ndarray, batch_size: int, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0) -> None:
        if batch_size % 2:
            raise ValueError(f"data.batch_size={batch_size} must be even for identity pairs")
        super().__init__(labels, batch_size, images_per_class=2, seed=seed, num_replicas=num_replicas, rank=rank)


class ShuffleBatchSampler(ResumableBatchSampler):
    """Plain shuffling, resumable: every epoch one seeded permutation of all images cut into global batches
    (incomplete last batch dropped), each rank taking its slice of each. The default sampler
    (``data/sampler=random``), so an interrupted conventional run resumes mid-epoch with exactly the remaining
    batches, like the identity samplers."""

    def __init__(self, labels: np.ndarray, batch_size: int, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0) -> None:
        super().__init__(batch_size, seed, num_replicas, rank)
        self.num_samples = len(labels)
        if self.num_samples < batch_size * num_replicas:
            raise ValueError(f"data.batch_size={batch_size} x {num_replicas} rank(s) exceeds the "
                             f"{self.num_samples} training images")

    def global_batches(self, epoch: int) -> list[list[int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
        n = self.global_batch_size
        return [order[i:i + n].tolist() for i in range(0, len(order) - n + 1, n)]
