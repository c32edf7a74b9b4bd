"""A run's process layout (processes x per-process batch x gradient accumulation) and when a checkpoint of one
layout may continue on another.

The data order (``facelearn.data.samplers``: global batches, each rank its contiguous slice), the augmentation
(drawn for the global batch), the steps per epoch and so the learning-rate schedule are functions of the *global*
batch only. A run may therefore resume on another number of processes when the global batch is kept
(2 ranks x 64 -> 1 rank x 128 -> 4 ranks x 32); a change of the global batch would rebuild the schedule for a new
epoch length and skip or repeat data, and is refused, saying which ``data.batch_size`` keeps it.

What stays different on another split, by nature of data parallelism: BatchNorm statistics are per process unless
``trainer.sync_batchnorm=true``; pair losses (``loss=``) compare the samples of one process's batch; dropout masks
and Partial FC's sampled negatives (``classifier.sample_rate`` < 1) are drawn per process. ``describe_change``
names those that apply; with none of them the continuation is exact up to floating-point summation order.

Torch-free: the training CLI checks the layout before any data are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any, Mapping


@dataclass(frozen=True)
class Layout:
    world_size: int
    batch_size: int  # per process
    accumulate: int = 1

    @property
    def global_batch(self) -> int:
        return self.world_size * self.batch_size * self.accumulate

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> "Layout | None":
        if not state or int(state.get("batch_size", -1)) < 1:
            return None
        return cls(int(state["world_size"]), int(state["batch_size"]), int(state.get("accumulate", 1)))

    def state(self) -> dict[str, int]:
        return {"world_size": self.world_size, "batch_size": self.batch_size, "accumulate": self.accumulate}

    def __str__(self) -> str:
        acc = f" x trainer.accumulate_grad_batches={self.accumulate}" if self.accumulate != 1 else ""
        return f"{self.world_size} process(es) x data.batch_size={self.batch_size}{acc}"


def resume_error(old: Layout, new: Layout) -> str | None:
    """Why a checkpoint of layout ``old`` cannot continue as ``new`` (None: it can)."""
    if old == new:
        return None
    if old.accumulate != new.accumulate:
        return (f"ckpt_path: the checkpoint was trained with {old}, this run has {new}. Resuming would change the "
                "learning-rate schedule and skip or repeat data; keep trainer.accumulate_grad_batches="
                f"{old.accumulate} (the number of processes and data.batch_size may change when their product "
                f"stays {old.world_size * old.batch_size}).")
    if old.global_batch == new.global_batch:
        return None
    per_process, rest = divmod(old.world_size * old.batch_size, new.world_size)
    keep = (f"with {new.world_size} process(es), data.batch_size={per_process} keeps the global batch of "
            f"{old.global_batch}" if not rest and per_process >= 1 else
            f"no data.batch_size gives the global batch of {old.global_batch} on {new.world_size} process(es)")
    return (f"ckpt_path: the checkpoint was trained with {old} (global batch {old.global_batch}), this run has "
            f"{new} (global batch {new.global_batch}). Resuming would change the learning-rate schedule and skip "
            f"or repeat data; {keep} (or start a new run from its weights: init_from=).")


def describe_change(old: Layout, new: Layout, *, batchnorm_images: tuple[int | None, int | None], pair_losses: bool,
                    dropout: bool, sampled_partial_fc: bool) -> str:
    """The log line of a resume on another split of the same global batch: what continues exactly, what not.
    ``batchnorm_images``: (before, after) images of the BatchNorm statistics (None: no BatchNorm trains)."""
    differs = []
    if None not in batchnorm_images and batchnorm_images[0] != batchnorm_images[1]:
        differs.append(f"BatchNorm statistics over {batchnorm_images[1]} instead of {batchnorm_images[0]} images "
                       "(trainer.sync_batchnorm=true takes them over the global batch on any split)")
    if pair_losses:
        differs.append(f"pair losses over {new.batch_size}-image instead of {old.batch_size}-image batches")
    if dropout:
        differs.append("dropout masks")
    if sampled_partial_fc:
        differs.append("Partial FC's sampled negatives (drawn per shard)")
    head = (f"resuming a run of {old} on {new}: the global batch of {new.global_batch} is kept, so the batches, "
            "augmentation, schedule and state (sampler position, SST queue, doppelganger list, Partial FC shards "
            "re-sliced) continue as in the original run")
    return head + (f"; differs with the split: {'; '.join(differs)}" if differs else
                   "; nothing else depends on the split (exact up to floating-point summation order)")


def planned_world_size(trainer_cfg: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> int | None:
    """The number of processes a training config will run as, where the config and a launcher's environment say
    it without starting anything (None: e.g. ``devices=auto``; the check then happens at train start)."""
    if environ.get("TORCHELASTIC_RUN_ID") and environ.get("WORLD_SIZE", "").isdigit():  # torchrun: the whole job
        return int(environ["WORLD_SIZE"])
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1)
    if isinstance(devices, Sequence) and not isinstance(devices, str):  # a list of device indices
        devices = len(devices)
    if not isinstance(devices, int) or devices < 1 or not isinstance(nodes, int):
        return None
    strategy = str(trainer_cfg.get("strategy", "auto"))
    if devices * nodes > 1 and not strategy.startswith("ddp"):
        return None  # Lightning's choice (auto picks DDP for several devices)
    return devices * nodes


def checkpoint_layout(ckpt: Mapping[str, Any]) -> Layout | None:
    """The layout a facelearn checkpoint was trained with (its ``ResumeStateCallback`` state), if it says."""
    for key, state in (ckpt.get("callbacks") or {}).items():
        if str(key).startswith("ResumeStateCallback") and isinstance(state, Mapping):
            return Layout.from_state(state.get("layout"))
    return None


def check_resume_layout(ckpt: Mapping[str, Any], trainer_cfg: Mapping[str, Any], batch_size: Any) -> None:
    """Refuse, before any data are read, a resume that changes the global batch (where the config says the
    number of processes)."""
    old, world = checkpoint_layout(ckpt), planned_world_size(trainer_cfg)
    if old is None or world is None or not isinstance(batch_size, int):
        return
    error = resume_error(old, Layout(world, batch_size, int(trainer_cfg.get("accumulate_grad_batches") or 1)))
    if error:
        raise ValueError(error)
