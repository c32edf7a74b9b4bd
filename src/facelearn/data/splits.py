"""Training splits: shallow (exactly k images per identity), deep (all), and benchmark-identity exclusion."""

from __future__ import annotations

import logging

import numpy as np

from facelearn.data.records import FaceRecords

log = logging.getLogger(__name__)


def _groups(identities: np.ndarray) -> dict[str, np.ndarray]:
    names, inverse = np.unique(identities.astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(names)))[:-1]
    return {n: idx for n, idx in zip(names.tolist(), np.split(order, bounds))}


class Shallow:
    """Exactly ``images_per_identity`` images of every identity that has at least that many (shallow face data).

    Identities with fewer are dropped and counted; the images kept are chosen with ``seed``, so runs agree.
    ``max_images_per_identity``: identities with more images are dropped too (e.g. keep them for a deep
    pretraining set, ``data/split=deep data.split.min_images_per_identity=<max + 1>``, disjoint from this one).
    """

    def __init__(self, images_per_identity: int = 2, seed: int = 0, max_images_per_identity: int | None = None,
                 ) -> None:
        if images_per_identity < 1:
            raise ValueError(f"split.images_per_identity must be >= 1, got {images_per_identity}")
        if max_images_per_identity is not None and max_images_per_identity < images_per_identity:
            raise ValueError(f"split.max_images_per_identity={max_images_per_identity} must be >= "
                             f"split.images_per_identity={images_per_identity}")
        self.k = images_per_identity
        self.max_images = max_images_per_identity
        self.seed = seed

    def __call__(self, records: FaceRecords) -> FaceRecords:
        rng = np.random.default_rng(self.seed)
        keep, dropped = [], 0
        for _, idx in sorted(_groups(records.identities).items()):
            if len(idx) < self.k or (self.max_images is not None and len(idx) > self.max_images):
                dropped += 1
                continue
            keep.append(np.sort(rng.choice(idx, self.k, replace=False)))
        if not keep:
            raise ValueError(f"{records.source}: no identity has {self.k} images (shallow split)")
        out = records.subset(np.concatenate(keep))
        self.stats = {"identities": len(keep), "images": len(out), "dropped_identities": dropped}
        log.info("shallow split (k=%d) of %s: kept %d identities / %d images, dropped %d identities with < %d images%s",
                 self.k, records.source, len(keep), len(out), dropped, self.k,
                 "" if self.max_images is None else f" or > {self.max_images}")
        return out


class Deep:
    """All images of every identity with at least ``min_images_per_identity`` images."""

    def __init__(self, min_images_per_identity: int = 1) -> None:
        self.min_images = min_images_per_identity

    def __call__(self, records: FaceRecords) -> FaceRecords:
        keep, dropped = [], 0
        for _, idx in sorted(_groups(records.identities).items()):
            if len(idx) < self.min_images:
                dropped += 1
            else:
                keep.append(idx)
        if not keep:
            raise ValueError(f"{records.source}: no identity has >= {self.min_images} images (deep split)")
        out = records.subset(np.concatenate(keep))
        self.stats = {"identities": len(keep), "images": len(out), "dropped_identities": dropped}
        log.info("deep split of %s: %d identities / %d images (dropped %d with < %d images)",
                 records.source, len(keep), len(out), dropped, self.min_images)
        return out


def identity_key(name: str) -> str:
    """How identity names are compared across datasets: case, spaces, underscores, hyphens and the order of the
    name's parts do not matter (CFP writes "Aaron Rodgers" where LFW writes "Aaron_Rodgers", and "Ziyi Zhang" where
    LFW writes "Zhang_Ziyi"; LFW itself holds Wang_Nan and Nan_Wang). Erring towards "the same person" only ever
    excludes more from training or anchors."""
    return "_".join(sorted(str(name).replace("_", " ").replace("-", " ").lower().split()))


def same_identities(names: set[str], others: set[str]) -> set[str]:
    """The ``names`` that are also in ``others``, compared as ``identity_key``."""
    keys = {identity_key(o) for o in others}
    return {n for n in names if identity_key(n) in keys}


def exclude_identities(records: FaceRecords, excluded: set[str], what: str = "benchmark") -> FaceRecords:
    """Drop every sample whose identity is in ``excluded`` (e.g. everyone named in a pairs file); names are
    compared with ``identity_key``."""
    removed = same_identities(records.identity_set, excluded)
    mask = np.array([i not in removed for i in records.identities.tolist()], dtype=bool)
    log.info("excluded %d %s identities (%d images) from training data %s",
             len(removed), what, int((~mask).sum()), records.source)
    if mask.sum() == 0:
        raise ValueError(f"excluding {what} identities leaves no training data in {records.source}")
    return records.subset(np.flatnonzero(mask))


def check_disjoint(train: set[str], test: set[str], test_name: str) -> None:
    """Hard check: a training identity that also appears in a benchmark invalidates the result."""
    overlap = same_identities(train, test)
    if overlap:
        raise ValueError(f"{len(overlap)} identities are in both the training data and benchmark {test_name!r}, "
                         f"e.g. {sorted(overlap)[:5]}: set data.exclude_benchmark_identities=true or fix the split")
