"""The callback that makes a resumed run continue exactly where the checkpoint left it, on the same or on another
number of processes (``facelearn.runtime.layout``: the global batch must be kept)."""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from facelearn.data.samplers import ResumableBatchSampler
from facelearn.runtime.layout import Layout, describe_change, resume_error

log = logging.getLogger(__name__)


class ResumeStateCallback(pl.Callback):
    """Saves, in every checkpoint, what Lightning does not: the batch sampler's position (batches *consumed* this
    epoch, exact even when DataLoader workers prefetch) and layout (the doppelganger sampler's batch unit), the
    torch / numpy / python RNG states, the epoch's metric sums and the run's process layout. Restores them when
    training resumes from the checkpoint, and refuses a resume that would change the global batch."""

    def __init__(self) -> None:
        self._pending_sampler: dict[str, Any] | None = None
        self._epoch = 0
        self._consumed = 0
        self._layout: Layout | None = None      # this run's processes, batch size and accumulation
        self._restored_layout: Layout | None = None
        self._trainer: pl.Trainer | None = None
        self._pending_sums: dict[str, dict[str, Any]] = {}  # epoch accumulators to merge after a resume
        self._saved_ranks = 1  # processes of the run whose epoch sums are pending
        self._restored_bn: int | None = None  # images of the checkpoint's BatchNorm statistics

    @staticmethod
    def _run_layout(trainer: pl.Trainer) -> Layout:
        batch = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
        return Layout(int(trainer.world_size), int(batch) if batch is not None else -1,
                      int(getattr(trainer, "accumulate_grad_batches", 1) or 1))

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
        # Rank r takes the sums of the saved ranks r, r + W, r + 2W, ... (W: this run's processes): on the same
        # number of processes its own; on fewer, several; on more, some none. The totals over the ranks, and so the
        # synced epoch averages, are those of the interrupted run.
        results = trainer.fit_loop.epoch_loop._results
        mine = list(range(trainer.global_rank, self._saved_ranks, trainer.world_size))
        for key in [k for k in self._pending_sums if k in results]:
            saved, metric = self._pending_sums.pop(key), results[key]
            if not mine:
                continue
            values = saved["value"].reshape(-1)[mine]
            value = (values.amax() if metric.meta.is_max_reduction else values.amin() if metric.meta.is_min_reduction
                     else values.sum()).to(metric.value.device, metric.value.dtype)
            if metric.meta.is_mean_reduction:
                metric.value = metric.value + value
                count = saved["count"].reshape(-1)[mine].sum().to(metric.cumulated_batch_size.device)
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
        sampler = self._sampler(self._trainer) if self._trainer is not None else None
        # the sampler's own layout keys (e.g. the doppelganger batch unit); its position is the consumed count
        extra = {k: v for k, v in sampler.state_dict().items() if k not in ("epoch", "start", "seed")} \
            if sampler is not None else {}
        bn = batchnorm_images(self._trainer, self._trainer.lightning_module) if self._trainer is not None else None
        return {"epoch": self._epoch, "start": self._consumed, "sampler": extra,
                "layout": self._layout.state() if self._layout else None, "batchnorm_images": bn,
                "epoch_sums": self._epoch_sums(), "rng": {
            "torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": version, "internal": list(internal), "gauss": gauss},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored_layout = Layout.from_state(state.get("layout"))
        self._pending_sums = dict(state.get("epoch_sums") or {})
        self._saved_ranks = self._restored_layout.world_size if self._restored_layout else 1
        self._restored_bn = state.get("batchnorm_images")
        self._epoch, self._consumed = int(state["epoch"]), int(state["start"])
        self._pending_sampler = {**(state.get("sampler") or {}), "epoch": self._epoch, "start": self._consumed}
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
        # The LR schedule, the steps per epoch and the data order are functions of the global batch: another split
        # of it over processes continues the run (logged, with what differs), another global batch is refused
        # (the CLI refuses it before any data where it can tell the world size; this is the check of last resort).
        old, new = self._restored_layout, self._run_layout(trainer)
        if old is not None:
            error = resume_error(old, new)
            if error:
                raise ValueError(error)
            if old.world_size != new.world_size and self._sampler(trainer) is None:
                raise ValueError(f"ckpt_path: the checkpoint was trained with {old}; without a facelearn batch sampler "
                                 "(data.sampler=null) the data are sharded by Lightning's DistributedSampler, whose "
                                 f"order depends on the number of processes: resume with {old.world_size} "
                                 "process(es), or train with a data/sampler (random is the default)")
            if old != new and trainer.is_global_zero:
                log.warning(describe_change(old, new, batchnorm_images=(self._restored_bn, batchnorm_images(
                    trainer, pl_module)), **split_dependence(pl_module)))
        sampler = self._sampler(trainer)
        if sampler is not None and self._pending_sampler is not None:
            sampler.load_state_dict({**self._pending_sampler, "seed": sampler.seed})
        self._pending_sampler = None


def batchnorm_images(trainer: pl.Trainer, module: torch.nn.Module) -> int | None:
    """Images each training BatchNorm layer takes its statistics over: the process's batch, or the global batch
    when it is synced (``trainer.sync_batchnorm``) or there is one process. None: no BatchNorm trains."""
    mods = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
    if not mods:
        return None
    batch = int(getattr(trainer.datamodule, "batch_size", 0) or 0)
    synced = trainer.world_size == 1 or any(isinstance(m, torch.nn.SyncBatchNorm) for m in mods)
    return batch * trainer.world_size if synced else batch


def split_dependence(module: torch.nn.Module) -> dict[str, bool]:
    """Which parts of ``module``'s training step, besides BatchNorm, depend on how the global batch is split."""
    from facelearn.nn.partial_fc import PartialFC

    mods = list(module.modules())
    objective = getattr(module, "objective", None)
    return {"pair_losses": bool(getattr(objective, "pair_losses", None)),
            "dropout": any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in mods),
            "sampled_partial_fc": any(isinstance(m, PartialFC) and m.sample_rate < 1 for m in mods)}
