"""Conventional training: backbone + margin head (its own prototypes = FC weights), cross-entropy on the logits."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facelearn.methods.base import FaceModule
from facelearn.nn.heads import MarginHead


class ConventionalModule(FaceModule):
    """Classification training with a margin-softmax head (softmax, NormFace, CosFace, ArcFace, SphereFace, ...)."""

    def __init__(self, backbone: nn.Module, head: MarginHead, optimizer: Any, scheduler: Any = None,
                 flip_tta: bool = True) -> None:
        super().__init__(backbone, optimizer, scheduler, flip_tta)
        self.head = head

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        features = self.backbone(images)
        logits = self.head(features, labels)
        loss = F.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.global_step}: lower "
                                     "optimizer.lr or use precision=32")
        acc = (logits.argmax(1) == labels).float().mean()
        self.count_images(len(labels))
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/acc", acc, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_lr()
        return loss
