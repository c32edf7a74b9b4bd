"""The benchmark callback: the datamodule's benchmarks during training (logged) and after fit (table + JSON)."""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only

from facelearn.eval.embedding import default_batch_size, evaluate_sets, sync_buffers
from facelearn.eval.scorers import CosineScorer
from facelearn.eval.verification import DEFAULT_FARS
from facelearn.loggers import log_benchmark_results
from facelearn.tables import ROC_FILE, format_identification_table, format_table, json_safe, write_json

log = logging.getLogger(__name__)


class BenchmarkCallback(pl.Callback):
    """Runs the datamodule's benchmark pair sets every ``every_n_epochs`` epochs and after fit.

    Logs ``bench/<set>/<metric>`` (the checkpoint callback can monitor them), writes all final metrics to
    ``<output_dir>/<output_file>`` (JSON) and prints one table at the end of fit.
    """

    def __init__(self, every_n_epochs: int = 1, batch_size: int | None = None, fars: list[float] | tuple = DEFAULT_FARS,
                 scorers: dict[str, Any] | None = None, output_dir: str | None = None,
                 output_file: str = "benchmark_metrics.json", run_after_fit: bool = True) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"callbacks.benchmark.every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs, self.batch_size, self.fars = every_n_epochs, batch_size, tuple(fars)
        # cosine always; IDA-R / IDA-L etc. when configured (``ida=...``)
        self.scorers = {"cosine": CosineScorer(), **{k: v for k, v in dict(scorers or {}).items() if v is not None}}
        self.output_dir, self.output_file, self.run_after_fit = output_dir, output_file, run_after_fit
        self.last_results: dict[str, dict[str, float]] = {}
        self.last_curves: dict[str, dict[str, Any]] = {}  # benchmark -> scorer -> ROC points
        self._last_step = -1
        self._printed_step = -1

    def run(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, dict[str, float]]:
        datamodule = trainer.datamodule
        results, curves = {}, {}
        sync_buffers(pl_module, trainer.world_size)
        context = datamodule.scorer_context()
        for scorer in self.scorers.values():
            scorer.fit(pl_module, context)
        batch_size = self.batch_size or default_batch_size(pl_module.device)
        results = evaluate_sets(pl_module, datamodule.benchmark_sets, self.scorers, self.fars, batch_size,
                                trainer.global_rank, trainer.world_size, curves)
        self.last_results, self.last_curves, self._last_step = results, curves, trainer.global_step
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
        self._print_table(trainer, f"Benchmarks after epoch {trainer.current_epoch + 1}")

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
    def _print_table(self, trainer: pl.Trainer, title: str) -> None:
        if self._printed_step == trainer.global_step:  # fit end right after a benchmark epoch: printed already
            return
        self._printed_step = trainer.global_step
        table = format_table(self.last_results, self.fars)
        ident = format_identification_table(self.last_results)
        print(f"\n{title} (step {trainer.global_step}):\n{table}\n" + (f"{ident}\n" if ident else ""), flush=True)

    @rank_zero_only
    def _report(self, trainer: pl.Trainer) -> None:
        if not self.last_results:
            return
        self._print_table(trainer, f"Benchmarks after {trainer.current_epoch} epochs")
        out_dir = self.output_dir or trainer.default_root_dir
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, self.output_file)
        write_json(path, {"epoch": trainer.current_epoch, "global_step": trainer.global_step,
                          "metrics": json_safe(self.last_results)})
        if self.last_curves:  # ROC points for facelearn.report's plots
            write_json(os.path.join(out_dir, ROC_FILE), {"global_step": trainer.global_step,
                                                         "roc": self.last_curves})
        log_benchmark_results(trainer.loggers, self.last_results, self.last_curves, trainer.global_step)
        log.info("benchmark metrics written to %s", path)

    def state_dict(self) -> dict[str, Any]:
        return {"last_results": self.last_results, "last_curves": self.last_curves, "last_step": self._last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_results, self._last_step = state.get("last_results", {}), state.get("last_step", -1)
        self.last_curves = state.get("last_curves", {})
