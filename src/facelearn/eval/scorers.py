"""Pair scorers: map embeddings and index pairs to similarity scores (higher = same person).

A benchmark embeds its images once and asks every configured scorer for pair scores, so cosine, IDA-R and IDA-L
appear side by side (``bench/<set>/<scorer>/<metric>``). Every scorer here is a function of the pair's cosine and
of per-embedding quantities (``from_cosine``), so a benchmark with millions of pairs (IJB) computes the cosines
once, by blocks of the similarity matrix (``pair_cosines``), and hands them to each scorer. A scorer may need
preparation from the trained model (``fit(module, context)``, with a ``ScorerContext``: the training images and the
benchmarks' identities, not the DataModule): IDA builds its anchor embedding set there.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facelearn.data.images import FaceCrop, decode_images
from facelearn.data.records import image_files
from facelearn.data.splits import same_identities
from facelearn.eval.embedding import embed_images
from facelearn.eval.ida import AnchorIndex, SupportSetRegressor, fit_regressor, log_dao, log_density, \
    pick_one_per_class

log = logging.getLogger(__name__)

ANCHOR_SOURCES = ("real-db", "fc-weights", "folder")


@dataclass
class ScorerContext:
    """What a scorer may read besides the model: ``train_dataset`` (``images`` uint8 tensor, ``labels``,
    ``class_names``; None when not built), the identities of every evaluated benchmark (anchors must not contain
    them), the image size and decode cache for anchor folders, the batch size to embed anchors with, and the
    anchor embeddings already computed (IDA-R and IDA-L on one folder embed it once)."""

    image_size: int
    train_dataset: Any = None
    benchmark_identities: dict[str, set[str]] = field(default_factory=dict)
    cache_dir: str | None = None
    batch_size: int = 256
    embedded: dict[tuple, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def of(cls, image_size: int, benchmark_sets: dict[str, Any], train_dataset: Any = None,
           cache_dir: str | None = None, batch_size: int = 256) -> "ScorerContext":
        return cls(image_size, train_dataset, {n: set(s.identities or ()) for n, s in benchmark_sets.items()},
                   cache_dir, batch_size)

    def embed_once(self, key: tuple, module: Any, images: Any) -> torch.Tensor:
        """``embed_images`` of ``images``, remembered under ``key`` for the other scorers of this evaluation."""
        if key not in self.embedded:
            self.embedded[key] = embed_images(module, images, self.batch_size)
        return self.embedded[key]


def gathered_cosines(embeddings: torch.Tensor, pairs: torch.Tensor, chunk: int = 50_000) -> torch.Tensor:
    """Cosine of each pair from its two rows, ``chunk`` pairs at a time (memory: 2 x chunk x D floats)."""
    return torch.cat([(embeddings[p[:, 0]] * embeddings[p[:, 1]]).sum(1) for p in pairs.split(chunk)]) \
        if len(pairs) else torch.zeros(0)


def pair_cosines(embeddings: torch.Tensor, pairs: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """Cosines of many pairs over few embeddings (IJB-C: 15.7M pairs of 23k templates): by blocks of ``block``
    rows of the similarity matrix (one matmul each, memory block x N floats), reading each pair's entry. Gathering
    two rows per pair is memory-bound (~5 us per 512-d pair on 2 cores, vs ~0.04 ns per matmul entry x D), so the
    matrix is used when its needed rows cost under 100x the pairs; sparse pair lists are gathered."""
    n = len(embeddings)
    first = pairs[:, 0]
    rows_needed = torch.unique(first // block).numel() * block
    if rows_needed * n > 100 * len(pairs):
        return gathered_cosines(embeddings, pairs)
    order = torch.argsort(first, stable=True)
    a, b = first[order], pairs[order, 1]
    bounds = torch.searchsorted(a, torch.arange(0, n + block, block))
    out = torch.empty(len(pairs), dtype=embeddings.dtype)
    for k in range(len(bounds) - 1):
        s, e = int(bounds[k]), int(bounds[k + 1])
        if s < e:
            sim = embeddings[k * block:(k + 1) * block] @ embeddings.T
            out[order[s:e]] = sim[a[s:e] - k * block, b[s:e]]
    return out


class CosineScorer:
    """Cosine similarity of L2-normalised embeddings (the default)."""

    needs_training_data = False

    def fit(self, module: Any, context: ScorerContext | None = None) -> None:
        return None

    def from_cosine(self, cos: torch.Tensor, embeddings: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        return cos

    def __call__(self, embeddings: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        return self.from_cosine(gathered_cosines(embeddings, pairs), embeddings, pairs)


def _folder_images(root: str) -> tuple[list[str], list[str]]:
    """All image files below ``root`` (recursively) and their parent folder names (identity where it is one)."""
    paths = image_files(root, "ida anchors folder")
    return paths, [Path(p).parent.name for p in paths]


class AnchorSet:
    """Builds the anchor embedding set of IDA (§3.2) from the model being evaluated.

    ``real-db``: one random image per training identity, embedded by the model; ``fc-weights``: the classifier's
    prototypes; ``folder``: every image below ``folder`` (e.g. GAN-generated faces, the paper's fake-db). At most
    ``max_anchors`` (a seeded subset). Anchors never contain benchmark identities: real-db draws from the training
    identities (already checked disjoint from every benchmark), a folder whose sub-folder names match a benchmark
    identity is rejected.
    """

    def __init__(self, anchors: str = "real-db", max_anchors: int = 50000, seed: int = 0, folder: str | None = None,
                 center_crop: int | None = None) -> None:
        if anchors not in ANCHOR_SOURCES:
            raise ValueError(f"ida anchors must be one of {ANCHOR_SOURCES}, got {anchors!r}")
        if anchors == "folder" and not folder:
            raise ValueError("ida anchors=folder needs ida.<scorer>.folder=/path/to/images")
        self.source, self.max_anchors, self.seed = anchors, max_anchors, seed
        self.folder, self.center_crop = folder, center_crop
        self.dataset_index: np.ndarray | None = None  # training-image index of each real-db anchor
        self.labels: np.ndarray | None = None  # training class of each anchor (real-db, fc-weights), else None

    def build(self, module: Any, context: ScorerContext | None) -> torch.Tensor:
        if self.source == "fc-weights":
            head = getattr(module, "head", None)
            if head is None or getattr(head, "weight", None) is None:
                raise ValueError("ida anchors=fc-weights needs a model whose head owns prototypes (conventional)")
            if getattr(head, "sharded", False):
                raise ValueError("ida anchors=fc-weights: this rank holds only its Partial FC shard of the "
                                 "prototypes; evaluate the checkpoint (it holds all of them) with facelearn.evaluate")
            w = head.weight.detach().float().cpu()
            keep = np.sort(np.random.default_rng(self.seed).permutation(len(w))[:self.max_anchors])
            self.labels = keep  # prototype c is class c
            return torch.nn.functional.normalize(w[keep], dim=1)
        if self.source == "real-db":
            ds = None if context is None else context.train_dataset
            if ds is None:
                raise ValueError("ida anchors=real-db needs the run's training data (ScorerContext.train_dataset)")
            idx = pick_one_per_class(ds.labels.numpy(), self.max_anchors, self.seed)
            names = {ds.class_names[c] for c in ds.labels[idx].tolist()}
            for bname, ids in context.benchmark_identities.items():
                overlap = same_identities(names, ids)
                if overlap:
                    raise ValueError(f"ida real-db anchors include identities of benchmark {bname!r} "
                                     f"(e.g. {sorted(overlap)[:5]}): the model was trained on test people")
            self.dataset_index = idx
            self.labels = ds.labels[idx].numpy()
            return context.embed_once(("real-db", tuple(idx.tolist())), module, ds.images[idx].numpy())
        paths, names = _folder_images(self.folder)
        bench_ids = set().union(*context.benchmark_identities.values()) if context else set()
        overlap = same_identities(set(names), bench_ids)
        if overlap:
            raise ValueError(f"ida anchor folder {self.folder} contains benchmark identities {sorted(overlap)[:5]}: "
                             "anchors must never contain test identities")
        rng = np.random.default_rng(self.seed)
        keep = np.sort(rng.permutation(len(paths))[:self.max_anchors])
        if context is None:
            raise ValueError("ida anchors=folder needs the image size (ScorerContext)")
        images = decode_images([paths[i] for i in keep], FaceCrop(context.image_size, self.center_crop),
                               context.cache_dir)
        _, self.labels = np.unique(np.array([names[i] for i in keep]), return_inverse=True)  # identity = folder
        key = ("folder", tuple(paths[i] for i in keep), context.image_size, self.center_crop)
        return context.embed_once(key, module, images)


class IDARScorer:
    """IDA-R (Algorithm 1): support sets = the k most similar anchors; score = log DAO (eq. 4)."""

    def __init__(self, k: int = 10, tau: float = 1.0, anchors: str = "real-db", max_anchors: int = 50000,
                 seed: int = 0, folder: str | None = None, backend: str = "faiss", kind: str = "flat",
                 use_gpu: bool = False, center_crop: int | None = None) -> None:
        self.k, self.tau = k, tau
        self.anchor_set = AnchorSet(anchors, max_anchors, seed, folder, center_crop)
        self.index_kw = dict(backend=backend, kind=kind, use_gpu=use_gpu)
        self.index: AnchorIndex | None = None
        self._density_of: tuple[torch.Tensor, torch.Tensor] | None = None  # (embeddings, their log F)

    @property
    def needs_training_data(self) -> bool:
        """real-db anchors are training images; fc-weights and folder anchors need no training data."""
        return self.anchor_set.source == "real-db"

    def fit(self, module: Any, context: ScorerContext | None = None) -> None:
        self.index, self._density_of = AnchorIndex(self.anchor_set.build(module, context), **self.index_kw), None
        log.info("IDA-R: %d anchors (%s), k=%d, tau=%g", len(self.index), self.anchor_set.source, self.k, self.tau)

    def log_density(self, embeddings: torch.Tensor) -> torch.Tensor:
        if self.index is None:
            raise RuntimeError("IDA-R scorer used before fit()")
        sims, _ = self.index.search(embeddings, self.k)
        return log_density(sims, self.tau)

    def from_cosine(self, cos: torch.Tensor, embeddings: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        # Pairs scored in parts over one embedding tensor search the anchors once.
        if self._density_of is None or self._density_of[0] is not embeddings:
            self._density_of = (embeddings, self.log_density(embeddings))
        lf = self._density_of[1]
        return log_dao(cos, lf[pairs[:, 0]], lf[pairs[:, 1]], self.tau)

    def __call__(self, embeddings: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        return self.from_cosine(gathered_cosines(embeddings, pairs), embeddings, pairs)


class IDALScorer(IDARScorer):
    """IDA-L (§3.2, eq. 6): a regressor predicts log F from the embedding; no anchor search at evaluation.

    ``fit`` trains the regressor stage-wise on the frozen model: targets are log F of (up to ``max_train``)
    training-image embeddings over their support sets, which hold only *inter-class* neighbours (the paper's
    footnote 1): an anchor of the query's own identity (its real-db image, its own class prototype) is skipped.
    With ``anchors=folder`` (e.g. a pretrained model without training data) the regressor trains on the anchor
    images themselves, each one's support set without the anchors of its own folder. It is saved to ``save_path``
    and reloaded from ``regressor_path`` when given.
    """

    def __init__(self, k: int = 10, tau: float = 1.0, anchors: str = "real-db", max_anchors: int = 50000,
                 seed: int = 0, folder: str | None = None, hidden: int = 256, epochs: int = 30,
                 max_train: int = 50000, regressor_path: str | None = None, save_path: str | None = None,
                 backend: str = "faiss", center_crop: int | None = None) -> None:
        super().__init__(k, tau, anchors, max_anchors, seed, folder, backend, "flat", False, center_crop)
        self.hidden, self.epochs, self.max_train = hidden, epochs, max_train
        self.regressor_path, self.save_path = regressor_path, save_path
        self.regressor: SupportSetRegressor | None = None
        self.train_mse: float | None = None
        self.own_identity_dropped = 0

    @property
    def needs_training_data(self) -> bool:  # type: ignore[override]
        # its regressor trains on training-image embeddings (folder anchors: on the anchors)
        return self.regressor_path is None and self.anchor_set.source != "folder"

    def fit(self, module: Any, context: ScorerContext | None = None) -> None:
        self._density_of = None
        if self.regressor_path:
            state = torch.load(self.regressor_path, map_location="cpu", weights_only=True)
            self.regressor = SupportSetRegressor(int(state["embedding_size"]), int(state["hidden"]))
            self.regressor.load_state_dict(state["state_dict"])
            self.regressor.eval()
            return
        if self.needs_training_data and (context is None or context.train_dataset is None):
            raise ValueError("IDA-L needs the run's training data to fit its regressor (or ida.*.regressor_path, "
                             "or anchors=folder: then it trains on the anchors)")
        super().fit(module, context)
        self.train_regressor(module, context)

    def train_regressor(self, module: Any, context: ScorerContext | None) -> None:
        """Fit the regressor over the anchors already indexed (``self.index``, ``self.anchor_set.labels``)."""
        folder = self.anchor_set.source == "folder"
        rng = np.random.default_rng(self.anchor_set.seed + 1)
        anchor_labels = torch.from_numpy(np.asarray(self.anchor_set.labels))
        if folder:
            train_idx = np.sort(rng.permutation(len(self.index))[:self.max_train])
            emb, labels = self.index.anchors[train_idx], anchor_labels[train_idx]
        else:
            ds = context.train_dataset
            train_idx = np.sort(rng.permutation(len(ds))[:self.max_train])
            emb, labels = embed_images(module, ds.images[train_idx].numpy()), ds.labels[train_idx]
        # the most anchors one identity has: that many extra neighbours leave k of other identities
        extra = int(torch.bincount(anchor_labels.long()).max())
        sims, idx = self.index.search(emb, min(self.k + extra, len(self.index)))
        own = anchor_labels[idx] == labels[:, None]
        order = torch.argsort(own.int(), dim=1, stable=True)  # own-identity anchors last, then cut at k
        sims = sims.gather(1, order)
        self.own_identity_dropped = int(own[:, :self.k].sum())
        targets = log_density(sims[:, :self.k], self.tau).float()
        self.regressor, self.train_mse = fit_regressor(emb, targets, self.hidden, self.epochs,
                                                       seed=self.anchor_set.seed)
        log.info("IDA-L regressor: %d training embeddings, train MSE on log F %.4g; %d own-identity anchors kept "
                 "out of the support sets", len(emb), self.train_mse, getattr(self, "own_identity_dropped", 0))
        if self.save_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.save_path)), exist_ok=True)
            torch.save({"state_dict": self.regressor.state_dict(), "embedding_size": emb.shape[1],
                        "hidden": self.hidden, "k": self.k, "tau": self.tau}, self.save_path)

    def log_density(self, embeddings: torch.Tensor) -> torch.Tensor:
        if self.regressor is None:
            raise RuntimeError("IDA-L scorer used before fit()")
        with torch.no_grad():
            return self.regressor(embeddings.float()).double()
