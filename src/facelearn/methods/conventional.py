"""Conventional training: backbone + a margin head (its own prototypes = FC weights) and/or pair losses.

Joint supervision is configuration: ``head=l2softmax loss=[lifted,margin]`` trains
``head_weight * CE(head logits) + Σ weight_k * pair_loss_k(embeddings, labels)``; ``head=none loss=contrastive``
trains a pure exemplar loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facelearn.methods.base import FaceModule, StepOutput
from facelearn.nn.heads import MarginHead


class ConventionalModule(FaceModule):
    """Classification (margin head) and/or pair-loss training of one backbone.

    Args:
        head: margin head scoring features against its own prototypes; None for pair losses only.
        losses: name -> ``(weight, pair loss)``; every pair loss sees the batch's features and labels.
        head_weight: weight of the head's cross-entropy.
    """

    def __init__(self, backbone: nn.Module, head: MarginHead | None, optimizer: Any, scheduler: Any = None,
                 flip_tta: bool = True, losses: dict[str, tuple[float, nn.Module]] | None = None,
                 head_weight: float = 1.0) -> None:
        super().__init__(backbone, optimizer, scheduler, flip_tta)
        losses = dict(losses or {})
        if head is None and not losses:
            raise ValueError("method needs a head (head=...) or at least one pair loss (loss=...)")
        self.head = head
        self.head_weight = head_weight
        self.pair_losses = nn.ModuleDict({k: fn for k, (_, fn) in losses.items()})
        self.loss_weights = {k: float(w) for k, (w, _) in losses.items()}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> StepOutput:
        images, labels = batch
        features = self.backbone(images)
        total = features.new_zeros(())
        logits = None
        if self.head is not None:
            logits = self.head(features, labels)
            ce = F.cross_entropy(logits, labels)
            total = total + self.head_weight * ce
            self.log("train/acc", (logits.argmax(1) == labels).float().mean(), on_step=True, on_epoch=True,
                     prog_bar=True, sync_dist=True)
            if self.pair_losses:
                self.log("train/loss_head", ce, on_step=True, on_epoch=True, sync_dist=True)
        for name, fn in self.pair_losses.items():
            value = fn(features, labels)
            total = total + self.loss_weights[name] * value
            self.log(f"train/loss_{name}", value, on_step=True, on_epoch=True, sync_dist=True)
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite loss {total.item()} at step {self.global_step}: lower "
                                     "optimizer.lr or use precision=32")
        self.count_images(len(labels))
        self.log("train/loss", total, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_lr()
        # The head's scores go to callbacks (doppelganger mining reads them: no extra forward pass).
        return StepOutput(loss=total, logits=None if logits is None else logits.detach(),
                          embeddings=F.normalize(features.detach().float(), dim=1), labels=labels)
