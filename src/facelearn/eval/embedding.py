"""Embedding a benchmark's images once, sharded across ranks, and scoring them (``evaluate_set``; several
benchmarks with the images they share embedded once: ``evaluate_sets``).

Embeddings are collected in a torchmetrics ``Metric`` whose states are concatenated across processes, so under DDP
each rank embeds a disjoint shard and every rank ends with all embeddings in the original order: the metrics are the
same as a single-process evaluation of the same weights.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from facelearn.eval.verification import DEFAULT_FARS
from facelearn.protocols.base import BenchmarkSet


class EmbeddingCollector(Metric):
    """Gathers ``(index, embedding)`` rows from all ranks; ``compute`` returns them ordered by index."""

    full_state_update = False

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")

    def update(self, indices: torch.Tensor, embeddings: torch.Tensor) -> None:
        self.indices.append(indices.long())
        self.embeddings.append(embeddings.float())

    def compute(self) -> torch.Tensor:
        idx, emb = dim_zero_cat(self.indices), dim_zero_cat(self.embeddings)
        n = int(idx.max()) + 1 if idx.numel() else 0
        out = emb.new_full((n, emb.shape[1]), float("nan"))
        out[idx] = emb
        if torch.isnan(out).any():
            raise RuntimeError("some benchmark images were embedded by no rank")
        return out


def sync_buffers(module: torch.nn.Module, world_size: int) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each *training* forward, so after the last step every rank still holds
    the statistics of its own last batch. Evaluating with those would make each rank's shard use different
    weights; rank 0's are the ones the checkpoint stores.
    """
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        for buf in module.buffers():
            torch.distributed.broadcast(buf.data, src=0)


def default_batch_size(device: Any) -> int:
    """Images per evaluation forward: 256 on a GPU, 16 on CPU (measured, SFace at 112 px on 2 cores: 69 images/s
    at 16, 27 at 256: large CPU batches fall out of cache)."""
    return 256 if str(device).startswith("cuda") else 16


def embed_images(module: Any, images: np.ndarray, batch_size: int = 256, rank: int = 0,
                 world_size: int = 1) -> torch.Tensor:
    """All-rank embeddings of ``images`` (uint8 N,3,S,S) in order; each rank embeds ``rank::world_size``."""
    collector = EmbeddingCollector().to(module.device)
    mine = np.arange(rank, len(images), world_size)
    if len(mine) == 0:  # fewer images than ranks: re-embed image 0 so every rank joins the gather
        mine = np.zeros(1, dtype=np.int64)
    was_training = module.training
    module.eval()
    try:
        for start in range(0, len(mine), batch_size):
            idx = mine[start:start + batch_size]
            batch = torch.from_numpy(images[idx]).to(module.device)
            collector.update(torch.from_numpy(idx).to(module.device), module.embed(batch))
        return collector.compute().cpu()
    finally:
        module.train(was_training)


def evaluate_set(module: Any, bench_set: BenchmarkSet, scorers: dict[str, Any] | None = None,
                 fars: tuple[float, ...] = DEFAULT_FARS, batch_size: int = 256, rank: int = 0,
                 world_size: int = 1, curves: dict[str, Any] | None = None) -> dict[str, float]:
    """The benchmark's metrics for ``module``: every image embedded once, then ``bench_set.metrics`` (which
    fills ``curves`` with its ROC curves when given)."""
    emb = embed_images(module, bench_set.images, batch_size, rank, world_size)
    return bench_set.metrics(emb, scorers or {}, tuple(fars), curves)


def distinct_images(image_sets: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct images of several uint8 arrays (N_i, 3, S, S) of one size, in first-seen order, and for each
    array the row of each of its images there (equal bytes = the same image: e.g. CFP-FP and CFP-FF share the
    frontal faces, LFW's pair files share most people)."""
    rows: dict[bytes, int] = {}
    first: list[tuple[int, int]] = []
    maps = []
    for k, images in enumerate(image_sets):
        where = np.empty(len(images), dtype=np.int64)
        for i, image in enumerate(images):
            key = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest()
            row = rows.setdefault(key, len(rows))
            if row == len(first):
                first.append((k, i))
            where[i] = row
        maps.append(where)
    if not first:  # only empty arrays
        return image_sets[0][:0], maps
    return np.stack([image_sets[k][i] for k, i in first]), maps


def evaluate_sets(module: Any, bench_sets: dict[str, BenchmarkSet], scorers: dict[str, Any] | None = None,
                  fars: tuple[float, ...] = DEFAULT_FARS, batch_size: int = 256, rank: int = 0, world_size: int = 1,
                  curves: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, float]]:
    """``evaluate_set`` of each benchmark, every distinct image of benchmarks of one image size embedded once."""
    results: dict[str, dict[str, float]] = {}
    by_size: dict[tuple[int, ...], list[str]] = {}
    for name, bench_set in bench_sets.items():
        by_size.setdefault(tuple(bench_set.images.shape[1:]), []).append(name)
    embeddings: dict[str, torch.Tensor] = {}
    for names in by_size.values():
        unique, maps = distinct_images([bench_sets[n].images for n in names])
        emb = embed_images(module, unique, batch_size, rank, world_size)
        embeddings.update({n: emb[torch.from_numpy(m)] for n, m in zip(names, maps)})
    for name, bench_set in bench_sets.items():  # in the configured order
        if curves is not None:
            curves[name] = {}
        results[name] = bench_set.metrics(embeddings[name], scorers or {}, tuple(fars),
                                          None if curves is None else curves[name])
    return results


class BackboneEmbedder(torch.nn.Module):
    """A backbone alone (pretrained weights, no training run) behind the ``FaceModule.embed`` contract."""

    def __init__(self, backbone: torch.nn.Module, flip_tta: bool = True) -> None:
        super().__init__()
        self.backbone, self.flip_tta = backbone, flip_tta

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def embedding_network(self) -> torch.nn.Module:
        return self.backbone

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        from facelearn.methods.base import embed_batch
        return embed_batch(self.backbone, images, self.flip_tta, self.device)
