"""The callback that makes a resumed run continue exactly where the checkpoint left it."""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from facelearn.data.samplers import ResumableBatchSampler


class ResumeStateCallback(pl.Callback):
    """Saves, in every checkpoint, what Lightning does not: the batch sampler's position (batches *consumed* this
    epoch, exact even when DataLoader workers prefetch) and the torch / numpy / python RNG states (augmentation,
    pair selection). Restores both when training resumes from the checkpoint."""

    def __init__(self) -> None:
        self._pending_sampler: dict[str, Any] | None = None
        self._epoch = 0
        self._consumed = 0
        self._layout: dict[str, int] | None = None      # this run's processes and batch size
        self._restored_layout: dict[str, int] | None = None
        self._trainer: pl.Trainer | None = None
        self._pending_sums: dict[str, dict[str, Any]] = {}  # epoch accumulators to merge after a resume

    @staticmethod
    def _run_layout(trainer: pl.Trainer) -> dict[str, int]:
        batch = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
        return {"world_size": int(trainer.world_size), "batch_size": int(batch) if batch is not None else -1}

    def setup(self, trainer: pl.Trainer, pl_module: Any, stage: str) -> None:
        self._layout = self._run_layout(trainer)
        self._trainer = trainer

    # -- epoch averages across a mid-epoch resume -----------------------------------------------------------------
    # Lightning accumulates ``self.log(..., on_epoch=True)`` values per epoch but does not checkpoint the sums, so
    # the epoch a run resumes in would average only the steps after the resume. Every rank's sums go into the
    # checkpoint (gathered: the checkpoint is written by rank 0 only) and each rank merges its own into the new
    # accumulators as the metrics reappear.
    def _epoch_sums(self) -> dict[str, dict[str, Any]]:
        trainer = self._trainer
        if trainer is None or self._consumed == 0:
            return {}
        out = {}
        for key, metric in sorted(trainer.fit_loop.epoch_loop._results.items()):
            meta = getattr(metric, "meta", None)
            if meta is None or not meta.on_epoch or not getattr(metric, "is_tensor", False):
                continue
            entry = {"value": metric.value.detach().float().reshape(1)}
            if meta.is_mean_reduction:
                entry["count"] = metric.cumulated_batch_size.detach().float().reshape(1)
            out[key] = entry
        if trainer.world_size > 1:  # every rank holds the same keys (they log the same metrics)
            out = {k: {n: trainer.strategy.all_gather(t).reshape(-1) for n, t in e.items()} for k, e in out.items()}
        return {k: {n: t.cpu() for n, t in e.items()} for k, e in out.items()}

    def _merge_pending_sums(self, trainer: pl.Trainer) -> None:
        results = trainer.fit_loop.epoch_loop._results
        r = trainer.global_rank
        for key in [k for k in self._pending_sums if k in results]:
            saved, metric = self._pending_sums.pop(key), results[key]
            value = saved["value"].reshape(-1)[r].to(metric.value.device, metric.value.dtype)
            if metric.meta.is_mean_reduction:
                metric.value = metric.value + value
                count = saved["count"].reshape(-1)[r].to(metric.cumulated_batch_size.device)
                metric.cumulated_batch_size = metric.cumulated_batch_size + count.to(metric.cumulated_batch_size.dtype)
            elif metric.meta.is_sum_reduction:
                metric.value = metric.value + value
            elif metric.meta.is_max_reduction or metric.meta.is_min_reduction:
                metric.value = metric.meta.reduce_fx(metric.value, value)

    @staticmethod
    def _sampler(trainer: pl.Trainer) -> ResumableBatchSampler | None:
        dl = trainer.train_dataloader
        bs = getattr(dl, "batch_sampler", None) if dl is not None else None
        return bs if isinstance(bs, ResumableBatchSampler) else None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        # A resumed epoch keeps the restored count; a new epoch starts from zero.
        if trainer.current_epoch != self._epoch:
            self._epoch, self._consumed = trainer.current_epoch, 0
            self._pending_sums = {}  # the checkpoint ended its epoch: nothing of it belongs to this one

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._consumed += 1
        if self._pending_sums:
            self._merge_pending_sums(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._pending_sums = {}  # a metric that never reappeared in the resumed epoch keeps no stale sums

    def state_dict(self) -> dict[str, Any]:
        # Only tensors and plain Python values, so checkpoints stay loadable with torch.load(weights_only=True).
        _, keys, pos, has_gauss, cached = np.random.get_state()
        version, internal, gauss = random.getstate()
        return {"epoch": self._epoch, "start": self._consumed, "layout": self._layout,
                "epoch_sums": self._epoch_sums(), "rng": {
            "torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": version, "internal": list(internal), "gauss": gauss},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored_layout = state.get("layout")
        self._pending_sums = dict(state.get("epoch_sums") or {})
        self._epoch, self._consumed = int(state["epoch"]), int(state["start"])
        self._pending_sampler = {"epoch": self._epoch, "start": self._consumed}
        rng = state.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            n = rng["numpy"]
            np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                                 n["cached"]))
            p = rng["python"]
            random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
            if rng.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        # The LR schedule, the steps per epoch and each rank's slice of the batch list are functions of the number
        # of processes and the batch size: resuming with other values would silently change the run (the schedule
        # rebuilt for a new length while the step count continues, data skipped). Refuse instead.
        old, new = self._restored_layout, self._run_layout(trainer)
        if old and (old["world_size"], old["batch_size"]) != (new["world_size"], new["batch_size"]):
            raise ValueError(
                f"ckpt_path: the checkpoint was trained with {old['world_size']} process(es) x data.batch_size="
                f"{old['batch_size']}, this run has {new['world_size']} x {new['batch_size']}. Resuming would "
                "change the learning-rate schedule and skip or repeat data; resume with the same "
                "trainer.devices x trainer.num_nodes and data.batch_size (or start a new run from its weights).")
        sampler = self._sampler(trainer)
        if sampler is not None and self._pending_sampler is not None:
            sampler.load_state_dict({**self._pending_sampler, "seed": sampler.seed})
        self._pending_sampler = None
