"""Running benchmarks: embed every image of a pair set once (sharded across ranks), score pairs, compute metrics.

Embeddings are collected in a torchmetrics ``Metric`` whose states are concatenated across processes, so under DDP
each rank embeds a disjoint shard and every rank ends with all embeddings in the original order: the metrics are the
same as a single-process evaluation of the same weights.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from facelearn.data.oneshot import IdentificationSet
from facelearn.data.pairs import PairSet
from facelearn.eval.identification import classifier_identification_metrics, identification_metrics
from facelearn.eval.scorers import CosineScorer
from facelearn.eval.verification import DEFAULT_FARS, verification_metrics

log = logging.getLogger(__name__)


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


def evaluate_pair_set(module: Any, pair_set: PairSet, scorers: dict[str, Any] | None = None,
                      fars: tuple[float, ...] = DEFAULT_FARS, batch_size: int = 256, rank: int = 0,
                      world_size: int = 1) -> dict[str, float]:
    """Metrics of one pair set: ``<metric>`` for cosine, ``<scorer>/<metric>`` for every other scorer."""
    emb = embed_images(module, pair_set.images, batch_size, rank, world_size)
    pairs = torch.from_numpy(pair_set.pairs)
    out: dict[str, float] = {}
    for name, scorer in (scorers or {"cosine": CosineScorer()}).items():
        scores = scorer(emb, pairs).double().numpy()
        metrics = verification_metrics(scores, pair_set.issame, pair_set.folds, tuple(fars))
        prefix = "" if name == "cosine" else f"{name}/"
        out.update({prefix + k: v for k, v in metrics.items()})
    return out


def evaluate_identification_set(module: Any, id_set: IdentificationSet, batch_size: int = 256, rank: int = 0,
                                world_size: int = 1) -> dict[str, float]:
    """One-shot identification: ``novel/...`` and ``base/...`` top-1 and coverage@precision metrics."""
    emb = embed_images(module, id_set.images, batch_size, rank, world_size)
    labels = torch.from_numpy(id_set.labels)
    if id_set.novel.any():  # one-shot protocol: novel and base classes reported apart
        groups = {"novel": torch.from_numpy(id_set.novel), "base": torch.from_numpy(~id_set.novel)}
    else:  # plain identification (with distractors in the gallery)
        groups = {"probe": torch.ones(len(id_set.labels), dtype=torch.bool)}
    enrol = torch.from_numpy(id_set.enrol)
    out = identification_metrics(emb, labels, enrol, groups, id_set.precisions)
    if getattr(id_set, "finetune_iterations", 0):
        out.update(classifier_identification_metrics(emb, labels, enrol, groups, id_set.precisions,
                                                     id_set.finetune_iterations))
    return out


def evaluate_set(module: Any, bench_set: Any, scorers: dict[str, Any] | None = None,
                 fars: tuple[float, ...] = DEFAULT_FARS, batch_size: int = 256, rank: int = 0,
                 world_size: int = 1) -> dict[str, float]:
    if isinstance(bench_set, IdentificationSet):
        return evaluate_identification_set(module, bench_set, batch_size, rank, world_size)
    return evaluate_pair_set(module, bench_set, scorers, fars, batch_size, rank, world_size)


def format_identification_table(results: dict[str, dict[str, float]]) -> str:
    rows = [[b] + [f"{k}={100 * v:.2f}" for k, v in sorted(m.items())] for b, m in results.items()
            if any("coverage" in k for k in m)]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def format_table(results: dict[str, dict[str, float]], fars: tuple[float, ...] = DEFAULT_FARS) -> str:
    """Plain-text table of the verification results. One scorer (cosine): one row per benchmark with accuracy ±
    std, AUC and TAR@FAR columns. Several scorers: per benchmark, one row per metric and the scorers as columns."""
    verif = {b: m for b, m in results.items() if "accuracy" in m}
    scorers = ["cosine"] + sorted({k.split("/")[0] for m in verif.values() for k in m
                                   if k.endswith("/accuracy")})
    if len(scorers) == 1:
        header = ["benchmark", "accuracy (%)", "AUC (%)"] + [f"TAR@FAR={f:g} (%)" for f in fars]
        rows = [[b, f"{_fmt(m['accuracy'])} ± {_fmt(m['accuracy_std'])}", _fmt(m["auc"])]
                + [_fmt(m.get(f"tar@far={f:g}")) for f in fars] for b, m in verif.items()]
    else:
        header = ["benchmark", "metric (%)"] + scorers
        rows = []
        for b, m in verif.items():
            def get(scorer: str, key: str) -> float | None:
                return m.get(key if scorer == "cosine" else f"{scorer}/{key}")
            rows.append([b, "accuracy"] + [f"{_fmt(get(s, 'accuracy'))} ± {_fmt(get(s, 'accuracy_std'))}"
                                           for s in scorers])
            rows.append([b, "AUC"] + [_fmt(get(s, "auc")) for s in scorers])
            rows += [[b, f"TAR@FAR={f:g}"] + [_fmt(get(s, f"tar@far={f:g}")) for s in scorers] for f in fars]
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


class BenchmarkCallback(pl.Callback):
    """Runs the datamodule's benchmark pair sets every ``every_n_epochs`` epochs and after fit.

    Logs ``bench/<set>/<metric>`` (the checkpoint callback can monitor them), writes all final metrics to
    ``<output_dir>/<output_file>`` (JSON) and prints one table at the end of fit.
    """

    def __init__(self, every_n_epochs: int = 1, batch_size: int = 256, fars: list[float] | tuple = DEFAULT_FARS,
                 scorers: dict[str, Any] | None = None, output_dir: str | None = None,
                 output_file: str = "benchmark_metrics.json", run_after_fit: bool = True) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"callbacks.benchmark.every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs, self.batch_size, self.fars = every_n_epochs, batch_size, tuple(fars)
        # cosine always; IDA-R / IDA-L etc. when configured (``ida=...``)
        self.scorers = {"cosine": CosineScorer(), **{k: v for k, v in dict(scorers or {}).items() if v is not None}}
        self.output_dir, self.output_file, self.run_after_fit = output_dir, output_file, run_after_fit
        self.last_results: dict[str, dict[str, float]] = {}
        self._last_step = -1

    def run(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, dict[str, float]]:
        sets: dict[str, PairSet] = getattr(trainer.datamodule, "benchmark_sets", {})
        results = {}
        sync_buffers(pl_module, trainer.world_size)
        for scorer in self.scorers.values():
            scorer.fit(pl_module, trainer.datamodule)
        for name, pair_set in sets.items():
            results[name] = evaluate_set(pl_module, pair_set, self.scorers, self.fars, self.batch_size,
                                         trainer.global_rank, trainer.world_size)
        self.last_results, self._last_step = results, trainer.global_step
        return results

    @staticmethod
    def flatten(results: dict[str, dict[str, float]]) -> dict[str, float]:
        return {f"bench/{b}/{k}": v for b, m in results.items() for k, v in m.items() if not math.isnan(v)}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        results = self.run(trainer, pl_module)
        # Identical on every rank (embeddings were gathered), so no further reduction is needed.
        pl_module.log_dict(self.flatten(results), rank_zero_only=False, sync_dist=False)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not self.run_after_fit:
            return
        if self._last_step != trainer.global_step or not self.last_results:
            self.run(trainer, pl_module)
            if trainer.logger is not None:
                for lg in trainer.loggers:
                    lg.log_metrics(self.flatten(self.last_results), step=trainer.global_step)
        self._report(trainer)

    @rank_zero_only
    def _report(self, trainer: pl.Trainer) -> None:
        if not self.last_results:
            return
        table = format_table(self.last_results, self.fars)
        ident = format_identification_table(self.last_results)
        print(f"\nBenchmarks after {trainer.current_epoch} epochs, step {trainer.global_step}:\n{table}\n"
              + (f"{ident}\n" if ident else ""), flush=True)
        out_dir = self.output_dir or trainer.default_root_dir
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, self.output_file)
        payload = {"epoch": trainer.current_epoch, "global_step": trainer.global_step,
                   "metrics": {b: {k: (None if math.isnan(v) else v) for k, v in m.items()}
                               for b, m in self.last_results.items()}}
        with open(path, "w") as fh:
            json.dump(payload, fh, indent=2)
        log.info("benchmark metrics written to %s", path)

    def state_dict(self) -> dict[str, Any]:
        return {"last_results": self.last_results, "last_step": self._last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_results, self._last_step = state.get("last_results", {}), state.get("last_step", -1)
