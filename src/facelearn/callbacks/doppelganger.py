"""Doppelganger mining as a callback: the per-class list is updated from every training step's scores (§3.2)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from facelearn.data.doppelganger import DoppelgangerList, DoppelgangerSampler


class DoppelgangerCallback(pl.Callback):
    """Doppelganger mining from the head's scores of every training step (§3.2), shared with the sampler.

    Reads ``outputs["scores"]`` (the head's scores of the step, ``StepOutput``: no extra forward pass) and, where
    the columns are not the classes (SST scores against the gallery queue, Partial FC's sampled columns),
    ``outputs["score_labels"]``, and ``outputs["score_rows"]`` where the rows are not the rank's own samples (Partial
    FC: the gathered batch against the rank's shard); under DDP the per-sample candidates of all ranks are gathered
    so every rank applies the same update and holds the same list (with Partial FC a sample has one candidate per
    shard, and the best of them wins, as over one full classifier). The list is callback state, saved in
    checkpoints. Logs ``dm/assigned`` (classes with a doppelganger), ``dm/changes`` (entries changed by the step)
    and ``dm/short_classes`` (batch classes that had fewer images than their count and gave each image once, their
    slots going to other classes).
    """

    def __init__(self) -> None:
        self.list: DoppelgangerList | None = None
        self._restored: torch.Tensor | None = None

    def setup(self, trainer: pl.Trainer, pl_module: Any, stage: str) -> None:
        if self.list is None:
            self.list = DoppelgangerList(trainer.datamodule.num_classes)
        if self._restored is not None:
            self.list.doppelganger.copy_(self._restored)
            self._restored = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        sampler = getattr(trainer.train_dataloader, "batch_sampler", None)
        if isinstance(sampler, DoppelgangerSampler):
            sampler.doppelgangers = self.list

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        scores = outputs.get("scores") if isinstance(outputs, dict) else None
        if scores is None:
            raise ValueError("doppelganger mining needs the head's scores: use a method with a head (head=...)")
        labels = outputs["labels"] if outputs.get("score_rows") is None else outputs["score_rows"]
        cand, val = DoppelgangerList.batch_candidates(scores, labels, outputs.get("score_labels"))
        if trainer.world_size > 1:
            labels, cand, val = (trainer.strategy.all_gather(t).reshape(-1) for t in (labels, cand, val))
        changes = self.list.update(labels.cpu(), cand.cpu(), val.cpu())
        pl_module.log("dm/assigned", float(self.list.num_assigned), on_step=True, on_epoch=False)
        pl_module.log("dm/changes", float(changes), on_step=True, on_epoch=True, reduce_fx="sum")
        sampler = getattr(trainer.train_dataloader, "batch_sampler", None)
        if isinstance(sampler, DoppelgangerSampler):  # classes with fewer images than their count, so far
            pl_module.log("dm/short_classes", float(sampler.short_classes), on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.list is None else {"doppelganger": self.list.doppelganger.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "doppelganger" in state:
            if self.list is None:
                self._restored = state["doppelganger"]
            else:
                self.list.doppelganger.copy_(state["doppelganger"])
