"""Shared LightningModule base: the embedding contract, optimiser/schedule wiring and throughput logging."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, TypedDict

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from facelearn.data.transforms import normalize

log = logging.getLogger(__name__)


class StepOutput(TypedDict, total=False):
    """What every training step returns to callbacks (Lightning requires a dict with ``loss``).

    ``logits``: the margin head's scores (doppelganger mining); ``embeddings``: L2-normalised features of the
    batch (detached) and ``labels`` their identities (diagnostics); SST adds ``gallery_embeddings`` (the gallery
    net's features of the same images as ``embeddings``) and ``queue_age`` (steps since the oldest queue entry
    was written)."""

    loss: torch.Tensor
    logits: torch.Tensor | None
    embeddings: torch.Tensor
    labels: torch.Tensor
    gallery_embeddings: torch.Tensor
    queue_age: int | None


class FaceModule(pl.LightningModule):
    """Base for every training regime.

    Contract (DESIGN.md): ``embed(images) -> L2-normalised (N, D)``; evaluation never needs to know the regime.

    Args:
        backbone: image -> feature network.
        optimizer: partial ``params -> Optimizer`` (Hydra ``_partial_: true``).
        scheduler: partial ``(optimizer, total_steps, steps_per_epoch) -> LR scheduler`` or None.
        flip_tta: embed = normalise(f(x) + f(flip(x))) (on by default, as insightface evaluates).
    """

    def __init__(self, backbone: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, flip_tta: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.flip_tta = flip_tta
        self.config: dict | None = None  # the run's resolved config, stored in checkpoints for evaluation
        self._epoch_start = 0.0
        self._epoch_images = 0

    def embedding_network(self) -> nn.Module:
        """The network whose features are the model's embedding (SST overrides: its probe net)."""
        return self.backbone

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        net = self.embedding_network()
        x = normalize(images.to(self.device))
        feats = net(x).float()
        if self.flip_tta:
            feats = feats + net(x.flip(3)).float()
        return F.normalize(feats, dim=1)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.trainable_parameters())
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        scheduler = self.scheduler_factory(optimizer, total_steps=total, steps_per_epoch=per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- throughput --------------------------------------------------------------------------------------------
    # Measured from the epoch's first batch to its last batch end, so benchmark callbacks are not counted.
    def on_train_epoch_start(self) -> None:
        self._epoch_start, self._epoch_images = time.perf_counter(), 0
        self._last_batch_end = self._epoch_start

    def count_images(self, n: int) -> None:
        self._epoch_images += n

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._last_batch_end = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        elapsed = self._last_batch_end - self._epoch_start
        rate = self._epoch_images * self.trainer.world_size / max(elapsed, 1e-9)
        self.log("train/images_per_sec", rate, rank_zero_only=True)
        if self.trainer.is_global_zero:
            log.info("epoch %d: %.1f images/s (%d images in %.1f s, %d process(es))", self.current_epoch, rate,
                     self._epoch_images * self.trainer.world_size, elapsed, self.trainer.world_size)

    def log_lr(self) -> None:
        opt = self.optimizers()
        opt = opt[0] if isinstance(opt, list) else opt
        self.log("train/lr", opt.param_groups[0]["lr"], on_step=True, on_epoch=False, rank_zero_only=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["facelearn_config"] = self.config
        head = getattr(self, "head", None)
        checkpoint["facelearn_num_classes"] = getattr(head, "num_classes", 0)
