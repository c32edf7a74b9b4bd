"""The one-shot protocol (doppelganger paper §4.1) on any identity dataset: a base/novel split.

Novel classes (``num_novel`` identities with >= 2 images) keep one enrolment image; their other images are test
images and the identities are excluded from training. Base classes (every other identity) train on their images
except ``base_test_per_class`` held-out test images per identity with >= ``base_test_min_images`` images; all
their training images enrol (form the prototype). The split is a function of the records and ``seed``, so the
DataModule (training filter) and the benchmark compute the same partition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from facelearn.data.records import FaceRecords, image_files
from facelearn.data.splits import exclude_identities
from facelearn.eval.identification import classifier_identification_metrics, identification_metrics
from facelearn.protocols.base import BenchmarkSet, Protocol
from facelearn.protocols.pairs import parse_pairs_file

log = logging.getLogger(__name__)


@dataclass
class IdentificationSet(BenchmarkSet):
    """A loaded identification benchmark: prototypes from the ``enrol`` images, the rest are probes. Metrics: top-1
    and coverage@precision per group (``novel/``, ``base/`` for the one-shot protocol, else ``probe/``), and the
    Table 6 classifier fine-tuning (``finetuned_*``) when ``finetune_iterations`` > 0."""

    name: str
    images: np.ndarray        # uint8 (N, 3, S, S)
    labels: np.ndarray        # int64 class per image
    enrol: np.ndarray         # bool: image forms its class prototype
    novel: np.ndarray         # bool per image: its class is novel
    identities: set[str] | None = None
    precisions: tuple[float, ...] = (0.99, 0.999)   # coverage@precision levels to report
    finetune_iterations: int = 0   # > 0: also the Table 6 classifier fine-tuning (eval.identification)

    def describe(self) -> str:
        return f"{len(set(self.labels.tolist()))} classes over {len(self.images)} images"

    def metrics(self, embeddings, scorers=None, fars=(), curves=None) -> dict[str, float]:
        labels = torch.from_numpy(self.labels)
        if self.novel.any():  # one-shot protocol: novel and base classes reported apart
            groups = {"novel": torch.from_numpy(self.novel), "base": torch.from_numpy(~self.novel)}
        else:  # plain identification (with distractors in the gallery)
            groups = {"probe": torch.ones(len(self.labels), dtype=torch.bool)}
        enrol = torch.from_numpy(self.enrol)
        out = identification_metrics(embeddings, labels, enrol, groups, self.precisions)
        if self.finetune_iterations:
            out.update(classifier_identification_metrics(embeddings, labels, enrol, groups, self.precisions,
                                                         self.finetune_iterations))
        return out


def check_precisions(precisions, owner: str) -> tuple[float, ...]:
    """Validate the configured coverage precision levels (fractions in (0, 1])."""
    levels = tuple(float(p) for p in precisions)
    bad = [p for p in levels if not 0.0 < p <= 1.0]
    if not levels or bad:
        raise ValueError(f"{owner}.precisions must be fractions in (0, 1] (e.g. [0.99, 0.999]), got "
                         f"{list(precisions)}")
    return levels


class OneShotSplit(Protocol):
    """Base/novel split of ``source`` (after removing the people of ``exclude_pairs_files``)."""

    splits_training_data = True

    def __init__(self, source, num_novel: int = 200, base_test_per_class: int = 1, base_test_min_images: int = 3,
                 exclude_pairs_files: list[str] | None = None, seed: int = 0, name: str | None = None,
                 precisions: tuple[float, ...] | list[float] = (0.99, 0.999), finetune_iterations: int = 0) -> None:
        self.name, self.given_name = name or "oneshot", name
        if finetune_iterations < 0:
            raise ValueError(f"benchmark.{self.name}.finetune_iterations must be >= 0, got {finetune_iterations}")
        self.finetune_iterations = int(finetune_iterations)
        self.source, self.num_novel, self.seed = source, num_novel, seed
        self.precisions = check_precisions(precisions, f"benchmark.{self.name}")
        self.base_test_per_class, self.base_test_min_images = base_test_per_class, base_test_min_images
        self.exclude_pairs_files = list(exclude_pairs_files or [])
        self._cache: dict[int, tuple] = {}

    def _excluded_people(self) -> set[str]:
        people: set[str] = set()
        for f in self.exclude_pairs_files:
            pairs, _, _ = parse_pairs_file(f)
            people |= {p[0] for p in pairs} | {p[2] for p in pairs}
        return people

    def partition(self, image_size: int) -> tuple[FaceRecords, np.ndarray, np.ndarray, set[str]]:
        """(records, role per record: 0 base-train, 1 base-test, 2 novel-enrol, 3 novel-test, -1 unused, novel ids)"""
        if image_size in self._cache:
            return self._cache[image_size]
        records = self.source.load(image_size)
        excluded = self._excluded_people()
        if excluded:
            records = exclude_identities(records, excluded, what="excluded pairs-file")
        rng = np.random.default_rng(self.seed)
        names, inverse, counts = np.unique(records.identities.astype(str), return_inverse=True, return_counts=True)
        candidates = np.flatnonzero(counts >= 2)
        if len(candidates) < self.num_novel:
            raise ValueError(f"one-shot split: only {len(candidates)} identities have >= 2 images, "
                             f"num_novel={self.num_novel}")
        novel = set(rng.choice(candidates, self.num_novel, replace=False).tolist())
        role = np.zeros(len(records), dtype=np.int64)
        for c in range(len(names)):
            idx = np.flatnonzero(inverse == c)
            idx = idx[rng.permutation(len(idx))]
            if c in novel:
                role[idx[0]], role[idx[1:]] = 2, 3
            elif counts[c] >= self.base_test_min_images:
                role[idx[:self.base_test_per_class]] = 1
        novel_names = {names[c] for c in novel}
        self._cache[image_size] = (records, role, inverse, novel_names)
        return self._cache[image_size]

    # -- training side: what the training data must not contain ---------------------------------------------
    def identities(self) -> set[str]:
        """Novel identities: never in training (the DataModule checks it). The partition is a function of the
        identity names and the seed, not of the image size, so any size gives the same names."""
        return self.partition(getattr(self, "_size", None) or next(iter(self._cache), 32))[3]

    def filter_training(self, records: FaceRecords, image_size: int) -> FaceRecords:
        """Drop novel identities and base test images from the training records (matched by path or by the
        identity's k-th image for rendered sources)."""
        self._size = image_size
        part, role, _, novel = self.partition(image_size)
        held_out = {k for k, r in zip(_keys(part), role) if r in (1, 2, 3)}
        keep = np.array([k not in held_out for k in _keys(records)], dtype=bool)
        log.info("one-shot split %s: %d novel identities, %d training images held out", self.name, len(novel),
                 int((~keep).sum()))
        return records.subset(np.flatnonzero(keep))

    # -- benchmark side ----------------------------------------------------------------------------------------
    def load(self, image_size: int, cache_dir: str | None = None) -> IdentificationSet:
        from facelearn.data.images import FaceCrop
        part, role, inverse, novel = self.partition(image_size)
        used = np.flatnonzero(role >= 0)
        sub = part.subset(used)
        images = sub.decode(FaceCrop(image_size, sub.meta.get("center_crop")), cache_dir)
        r = role[used]
        _, labels = np.unique(inverse[used], return_inverse=True)
        return IdentificationSet(self.name, images, labels.astype(np.int64), enrol=np.isin(r, (0, 2)),
                                 novel=np.isin(r, (2, 3)), identities=novel, precisions=self.precisions,
                                 finetune_iterations=self.finetune_iterations)


def _keys(records: FaceRecords) -> list[str]:
    if records.paths is not None:
        return list(records.paths)
    seen: dict[str, int] = {}
    keys = []
    for ident in records.identities.tolist():
        k = seen.get(ident, 0)
        seen[ident] = k + 1
        keys.append(f"{ident}#{k}")
    return keys


class IdentificationFolder(Protocol):
    """Closed-set identification from an identity folder (MegaFace-style at small scale): per identity
    ``enrol_per_class`` gallery image(s), the rest are probes; every image of ``distractors`` (a folder of other
    people) joins the gallery as its own class. Reports ``probe/top1`` (rank-1) and coverage@precision."""

    def __init__(self, root: str, distractors: str | None = None, enrol_per_class: int = 1,
                 center_crop: int | None = None, seed: int = 0, name: str | None = None,
                 precisions: tuple[float, ...] | list[float] = (0.99, 0.999)) -> None:
        self.root, self.distractors, self.enrol_per_class = root, distractors, enrol_per_class
        self.center_crop, self.seed = center_crop, seed
        self.name, self.given_name = name or "identification", name
        self.precisions = check_precisions(precisions, f"benchmark.{self.name}")

    def identities(self) -> set[str]:
        from facelearn.data.records import IdentityFolder
        return IdentityFolder(self.root).load(0).identity_set

    def load(self, image_size: int, cache_dir: str | None = None) -> IdentificationSet:
        from facelearn.data.images import FaceCrop, decode_images
        from facelearn.data.records import IdentityFolder
        rec = IdentityFolder(self.root).load(image_size)
        names, labels, counts = np.unique(rec.identities.astype(str), return_inverse=True, return_counts=True)
        if (counts <= self.enrol_per_class).any():
            bad = names[counts <= self.enrol_per_class][:5].tolist()
            raise ValueError(f"{self.root}: identities {bad} have no probe image beyond the "
                             f"{self.enrol_per_class} gallery image(s)")
        rng = np.random.default_rng(self.seed)
        enrol = np.zeros(len(rec), bool)
        for c in range(len(names)):
            idx = np.flatnonzero(labels == c)
            enrol[rng.choice(idx, self.enrol_per_class, replace=False)] = True
        paths, labels = list(rec.paths), labels.astype(np.int64)
        novel = np.zeros(len(rec), bool)
        if self.distractors:
            extra = image_files(self.distractors, f"benchmark.{self.name}.distractors")
            paths += extra
            labels = np.r_[labels, len(names) + np.arange(len(extra))]
            enrol = np.r_[enrol, np.ones(len(extra), bool)]
            novel = np.r_[novel, np.zeros(len(extra), bool)]
        images = decode_images(paths, FaceCrop(image_size, self.center_crop), cache_dir)
        return IdentificationSet(self.name, images, labels, enrol, novel, set(names.tolist()), self.precisions)
