"""Doppelganger mining (Smirnov et al., ../shared/papers/doppelganger_mining.md §3).

* ``DoppelgangerList``: one class index per training class (-1 = none yet). After every step, for each class in
  the batch, the highest-scoring *other* class in the prototype head's already-computed scores becomes its
  doppelganger (§3.2): no extra forward pass, one integer per class.
* ``DoppelgangerSampler``: a batch of M images is filled with classes whose image counts are drawn from a range
  until M is reached (N_c classes, §3.1); N_r of them are random and each further class is
  ``Doppelganger(class N_r positions earlier)`` - chains of doppelgangers of doppelgangers - falling back to a random
  class when there is none yet or it is already in the batch. N_r = N_c is random sampling.

**How recent is the list a batch sees?** Batches are built lazily in the main process from the live list. With
``num_workers=0`` Lightning prefetches one batch, so batch t is built from the list as updated by steps up to t-2;
with ``num_workers=w`` the DataLoader requests ``prefetch_factor x w`` batches of indices ahead, so the lag is that
many steps more. Keep ``num_workers=0`` (images are already decoded in memory) for the freshest list.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from facelearn.data.samplers import indices_by_class, ResumableBatchSampler


class DoppelgangerList(nn.Module):
    """``doppelganger[c]`` = the class most confused with class c at its last appearance in a batch (-1: none)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"doppelganger mining needs >= 2 classes, got {num_classes}")
        self.register_buffer("doppelganger", torch.full((num_classes,), -1, dtype=torch.long))
        self.last_changes = 0

    @staticmethod
    def batch_candidates(scores: torch.Tensor, labels: torch.Tensor, column_labels: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample: the best-scoring class other than its own, and that score (ties: the lowest column).

        ``scores`` (N, C): column c is class c (a classifier's prototypes), or, with ``column_labels`` (C,), a
        prototype of class ``column_labels[c]`` (SST: gallery features + queue; a class may own several columns)."""
        scores = scores.detach().float()
        if column_labels is None:
            masked = scores.scatter(1, labels.view(-1, 1), float("-inf"))
            value, index = masked.max(dim=1)
            return index, value
        own = labels.view(-1, 1) == column_labels.view(1, -1).to(labels.device)
        value, index = scores.masked_fill(own, float("-inf")).max(dim=1)
        return column_labels.to(labels.device)[index], value

    @torch.no_grad()
    def update(self, labels: torch.Tensor, candidates: torch.Tensor, values: torch.Tensor) -> int:
        """Apply per-sample candidates (possibly gathered from all ranks): for each class present, the candidate
        with the highest score over its samples wins. Classes absent from the batch are untouched. Returns how many
        entries changed."""
        labels, candidates, values = labels.view(-1).long(), candidates.view(-1).long(), values.view(-1).float()
        best = torch.full_like(self.doppelganger, -1)
        best_val = torch.full(self.doppelganger.shape, float("-inf"), device=values.device)
        best_val.scatter_reduce_(0, labels, values, reduce="amax")
        # the sample whose value equals its class maximum (first such sample on ties)
        winner = values >= best_val[labels]
        order = torch.arange(len(labels), device=labels.device)
        first = torch.full(self.doppelganger.shape, len(labels), dtype=torch.long, device=labels.device)
        first.scatter_reduce_(0, labels[winner], order[winner], reduce="amin")
        present = first < len(labels)
        best[present] = candidates[first[present]]
        changed = present & (best != self.doppelganger)
        self.doppelganger[present] = best[present]
        self.last_changes = int(changed.sum())
        return self.last_changes

    @property
    def num_assigned(self) -> int:
        return int((self.doppelganger >= 0).sum())


class DoppelgangerSampler(ResumableBatchSampler):
    """Batches of ``batch_size`` images from N_c classes: N_r random classes, then doppelganger chains.

    Args:
        labels: class of every training image.
        batch_size: M, images per batch (per rank); under DDP a step's global batch is ranks x M images of distinct
            classes, and each rank's M images are one doppelganger batch (``build_batch``).
        images_per_class: an int (fixed, e.g. 3 as in §4.2.5) or ``[low, high]`` (e.g. [2, 8]).
        num_random: N_r; or ``random_ratio`` = N_r / N_c (rounded, at least 1). N_r = N_c is random sampling.
        doppelgangers: the live ``DoppelgangerList`` (attached by ``DoppelgangerMining`` at train start).
        batches_per_epoch: default = training images / (M x ranks).
    """

    def __init__(self, labels: np.ndarray, batch_size: int, images_per_class: int | list[int] = 3,
                 num_random: int | None = None, random_ratio: float | None = None, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, batches_per_epoch: int | None = None,
                 doppelgangers: DoppelgangerList | None = None) -> None:
        super().__init__(batch_size, seed, num_replicas, rank)
        if (num_random is None) == (random_ratio is None):
            raise ValueError("doppelganger sampler: set exactly one of num_random (N_r) or random_ratio (N_r/N_c)")
        if random_ratio is not None and not 0 < random_ratio <= 1:
            raise ValueError(f"sampler.random_ratio must be in (0, 1], got {random_ratio}")
        if isinstance(images_per_class, int):
            self.count_range = (images_per_class, images_per_class)
        else:
            self.count_range = tuple(int(v) for v in images_per_class)
        if not 1 <= self.count_range[0] <= self.count_range[1] <= batch_size:
            raise ValueError(f"sampler.images_per_class must be within [1, batch_size], got {images_per_class}")
        self.num_random, self.random_ratio = num_random, random_ratio
        self.groups = indices_by_class(labels)
        self.num_classes = len(self.groups)
        self.batches_per_epoch = batches_per_epoch or max(1, len(labels) // (batch_size * num_replicas))
        self.doppelgangers = doppelgangers
        self.unit = batch_size  # images per doppelganger batch: the per-rank batch the run started with
        self.short_classes = 0  # classes that had fewer images than their count (logged as dm/short_classes)

    def _counts(self, rng: np.random.Generator, size: int) -> list[int]:
        """Per-class image counts, each within ``images_per_class``, summing to ``size``."""
        lo, hi = self.count_range
        counts, total = [], 0
        while total < size:
            c = int(rng.integers(lo, hi + 1))
            c = min(c, size - total)
            counts.append(c)
            total += c
        if len(counts) > 1 and counts[-1] < lo:
            # Too small a remainder: take single images from classes above the minimum (keeps every count in
            # range); only when none can give one is the remainder folded into a neighbour (possible only if
            # batch_size is not a sum of in-range counts, e.g. 7 with a fixed count of 3).
            for i in range(len(counts) - 1):
                while counts[-1] < lo and counts[i] > lo:
                    counts[i] -= 1
                    counts[-1] += 1
            if counts[-1] < lo:
                rest = counts.pop()
                counts[-1] += rest
        return counts

    def n_random(self, n_classes: int) -> int:
        if self.num_random is not None:
            return max(1, min(self.num_random, n_classes))
        return max(1, min(n_classes, int(round(self.random_ratio * n_classes))))

    def _classes(self, n_classes: int, rng: np.random.Generator, taken: set[int]) -> list[int]:
        dop = None if self.doppelgangers is None else self.doppelgangers.doppelganger.cpu().numpy()
        n_r = self.n_random(n_classes)
        chosen: list[int] = []

        def random_class() -> int:
            if len(taken) >= self.num_classes:
                raise ValueError("doppelganger sampler: more classes per global batch than training classes")
            while True:
                c = int(rng.integers(self.num_classes))
                if c not in taken:
                    return c

        for i in range(n_classes):
            c = -1
            if i >= n_r and dop is not None:
                c = int(dop[chosen[i - n_r]])
                if c in taken:
                    c = -1  # already in the batch: no cycles
            if c < 0:
                c = random_class()
            chosen.append(c)
            taken.add(c)
        return chosen

    def build_batch(self, epoch: int, index: int) -> list[int]:
        """This rank's slice of global batch ``index`` of ``epoch``, built from the list as it is now (deterministic
        given the list).

        The global batch is ``global_batch_size / unit`` doppelganger batches of ``unit`` images each (§3.1's
        batch of M: its own counts, N_r random classes and chains), with no class in two of them; every rank builds
        all of them and takes its contiguous slice. ``unit`` is the per-rank batch size the run started with, kept
        through resumes (``state_dict``), so a run resumed on another number of ranks with the same global batch
        trains on the same batches; while it equals ``batch_size`` each rank's slice is exactly one of them."""
        if self.global_batch_size % self.unit:
            raise ValueError(f"doppelganger sampler: the global batch of {self.global_batch_size} images is not a "
                             f"whole number of the run's {self.unit}-image doppelganger batches")
        rng = np.random.default_rng([self.seed, epoch, index])
        taken: set[int] = set()
        images: list[int] = []
        first, last = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        classes_here: list[int] = []
        for _ in range(self.global_batch_size // self.unit):
            classes, ks, short = self._unit_classes(rng, taken)
            for c, k in zip(classes, ks):
                start = len(images)
                images += rng.choice(self.groups[c], k, replace=False).tolist()
                if start < last and len(images) > first:  # the class has images in this rank's slice
                    classes_here.append(c)
                    self.short_classes += int(c in short)
        self.last_classes = classes_here
        return images[first:last]

    def _unit_classes(self, rng: np.random.Generator, taken: set[int]) -> tuple[list[int], list[int], set[int]]:
        """Classes, their image counts and the short ones (fewer images than drawn) of one ``unit``-image batch."""
        counts = self._counts(rng, self.unit)
        classes = self._classes(len(counts), rng, taken)
        # A class never contributes the same image twice (it would be its own "positive pair" for the exemplar
        # losses). A class with fewer images than its count gives all it has; the missing slots go first to
        # classes of the batch with images to spare (up to the maximum count), then to further random classes,
        # so the batch keeps its size and, where possible, every count its range.
        lo, hi = self.count_range
        ks = [min(k, len(self.groups[c])) for c, k in zip(classes, counts)]
        short = {c for c, k in zip(classes, counts) if len(self.groups[c]) < k}
        missing = sum(counts) - sum(ks)
        for i, c in enumerate(classes):
            add = min(missing, min(hi, len(self.groups[c])) - ks[i])
            if add > 0:
                ks[i] += add
                missing -= add
        while missing:
            (c,) = self._classes(1, rng, taken)  # a random class not yet in the global batch
            k = min(missing, len(self.groups[c]), hi)
            missing -= k
            for j in range(len(ks)):  # lift a too-small last class to the minimum with spare images
                while k < min(lo, len(self.groups[c])) and ks[j] > lo:
                    ks[j] -= 1
                    k += 1
            classes, ks = [*classes, c], [*ks, k]
        return classes, ks, short

    def __iter__(self):
        start, self.start = self.start, 0
        for i in range(start, self.batches_per_epoch):
            yield self.build_batch(self.epoch, i)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start

    def state_dict(self) -> dict[str, int]:
        return {**super().state_dict(), "unit": self.unit}

    def load_state_dict(self, state: dict[str, int]) -> None:
        super().load_state_dict(state)
        self.unit = int(state.get("unit", self.unit))
