"""Conventional training: backbone + a margin head (its own prototypes = FC weights) and/or pair losses.

Joint supervision is configuration: ``head=l2softmax loss=[lifted,margin]`` trains
``head_weight * CE(head logits) + Σ weight_k * pair_loss_k(embeddings, labels)`` (``facelearn.nn.objective``);
``head=none loss=contrastive`` trains a pure exemplar loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facelearn.methods.base import FaceModule, StepOutput
from facelearn.nn.heads import MarginHead
from facelearn.nn.objective import JointObjective, check_finite


class ConventionalModule(FaceModule):
    """Classification (margin head) and/or pair-loss training of one backbone: features are scored against the
    head's own prototypes and, by the pair losses, against the rest of the batch.

    Args:
        head: margin head scoring features against its own prototypes; None for pair losses only.
        losses: name -> ``(weight, pair loss)``; every pair loss sees the batch's features and labels.
        head_weight: weight of the head's cross-entropy.
    """

    def __init__(self, backbone: nn.Module, head: MarginHead | None, optimizer: Any, scheduler: Any = None,
                 flip_tta: bool = True, losses: dict[str, tuple[float, nn.Module]] | None = None,
                 head_weight: float = 1.0) -> None:
        super().__init__(backbone, optimizer, scheduler, flip_tta)
        self.objective = JointObjective(head, losses, head_weight)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> StepOutput:
        images, labels = batch
        features = self.backbone(images)
        out = self.objective(features, labels)
        check_finite(out.total, self.global_step)
        self.count_images(len(labels))
        self.log_objective(out.parts)
        self.log("train/loss", out.total, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_lr()
        return StepOutput(loss=out.total, scores=out.scores, score_labels=out.score_labels,
                          score_rows=out.score_rows, embeddings=F.normalize(features.detach().float(), dim=1),
                          labels=labels)
