"""Semi-Siamese Training (SST) for shallow face learning (Du et al., ECCV 2020; ../shared/papers/sst_*.md).

A batch is identity pairs ``(x1, x2, id)``. A *probe* net (trained) and a *gallery* net (similar but not
identical) embed both images; each probe feature is scored against the gallery features of the batch (its own
identity's gallery feature is its positive) plus a FIFO *gallery queue* of earlier gallery features as negatives,
through the same margin head as conventional training (the queue replaces the FC prototypes) or through pair losses
with the gallery features + queue as references. Both directions are used, ``probe(x1) vs gallery(x2)`` and
``probe(x2) vs gallery(x1)``, and the loss is their mean; afterwards one direction's gallery features are enqueued.

Semi-siamese variants (``variant``):

* ``momentum``   gallery ← m · gallery + (1 − m) · probe after every optimiser step (parameters and BN buffers);
                 m is constant, or, with ``momentum_end``, follows a cosine ramp from ``momentum`` at step 0 to
                 ``momentum_end`` at the last step (as momentum encoders do: BYOL, Grill et al. 2020, eq. in §3.2);
* ``constraint`` two nets of the same architecture, both trained, with ``λ ‖θ_p − θ_g‖²`` added to the loss;
* ``none``       one shared net for both roles (the siamese ablation).

Gallery lag and queue staleness. The gallery moves towards the probe by a fraction (1 − m) per step, so it trails
the probe by about 1 / (1 − m) steps, and the queue's oldest entry was written ``queue_size / global identities per
batch`` steps ago. ``age x (1 − m)`` says how far, in units of the gallery's own time constant, the oldest
prototypes lag; the authors' setting (m = 0.999, ~30 steps of queue) gives ~0.03. The module warns, with the
numbers, when it exceeds ``stale_warning`` (0.1 by default).

Under DDP the gallery features and identities are all-gathered before scoring and enqueueing, each probe's
positive column is offset by its rank's position, and every rank enqueues the same gathered batch, so all ranks
hold identical queues.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facelearn.methods.base import FaceModule, StepOutput
from facelearn.nn.heads import MarginHead
from facelearn.nn.objective import JointObjective, ObjectiveOutput, check_finite
from facelearn.nn.queue import GalleryQueue

log = logging.getLogger(__name__)

VARIANTS = ("momentum", "constraint", "none")


def sst_targets(probe_ids: torch.Tensor, proto_ids: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Target column of each probe (its own gallery feature at ``offset + i``) and the mask of columns to drop:
    every other prototype of the probe's identity (an identity re-appearing in the queue must not be pushed away
    from itself)."""
    n = len(probe_ids)
    targets = offset + torch.arange(n, device=probe_ids.device)
    mask = probe_ids.view(-1, 1) == proto_ids.view(1, -1)
    mask[torch.arange(n, device=probe_ids.device), targets] = False
    return targets, mask


class SSTModule(FaceModule):
    """Semi-Siamese Training with a gallery queue; any margin head and/or pair losses.

    Args:
        backbone: the probe net (its embedding is the model's embedding).
        head: margin head with ``num_classes=0`` (its prototypes are the gallery features + queue), or None.
        losses: name -> (weight, pair loss) scored with the gallery features + queue as references.
        variant: ``momentum`` | ``constraint`` | ``none``.
        momentum: m of the momentum update.
        constraint_weight: λ of the network constraint.
        queue_size: gallery queue length (a multiple of the global identities per batch, and smaller than the
            number of training identities, or the queue would hold the probe's own identity as a negative).
        use_queue: False scores against the current batch's gallery features only (ablation); ``queue_size=0``
            means the same.
        num_classes: number of training identities (filled in by the trainer; used to validate ``queue_size``).
    """

    owns_prototypes = False

    def __init__(self, backbone: nn.Module, optimizer: Any, scheduler: Any = None, head: MarginHead | None = None,
                 losses: dict[str, tuple[float, nn.Module]] | None = None, variant: str = "momentum",
                 momentum: float = 0.999, constraint_weight: float = 1.0, queue_size: int = 16384,
                 use_queue: bool = True, embedding_size: int = 512, num_classes: int = 0, head_weight: float = 1.0,
                 flip_tta: bool = True, momentum_end: float | None = None, stale_warning: float = 0.1) -> None:
        super().__init__(backbone, optimizer, scheduler, flip_tta)
        if variant not in VARIANTS:
            raise ValueError(f"method.variant must be one of {VARIANTS}, got {variant!r}")
        for key, m in (("momentum", momentum), ("momentum_end", momentum_end)):
            if m is not None and not 0.0 <= m < 1.0:
                raise ValueError(f"method.{key} must be in [0, 1), got {m}")
        if head is not None and head.weight is not None:
            raise ValueError("SST scores against the gallery queue: the head must have num_classes=0")
        if queue_size < 0:
            raise ValueError(f"method.queue_size must be >= 0 (0: no queue), got {queue_size}")
        use_queue = use_queue and queue_size > 0
        if use_queue and num_classes and queue_size >= num_classes:
            raise ValueError(f"method.queue_size={queue_size} must be smaller than the {num_classes} training "
                             "identities (otherwise the queue always holds the probe's own identity)")
        self.variant, self.momentum, self.constraint_weight = variant, momentum, constraint_weight
        self.momentum_end = momentum_end
        self._ramp_steps = 0  # the run's total steps, set at train start when m follows a ramp
        self.stale_warning = stale_warning
        self.use_queue = use_queue
        self.objective = JointObjective(head, losses, head_weight)
        self.gallery = None
        if variant != "none":
            self.gallery = copy.deepcopy(backbone)
            if variant == "momentum":
                self.gallery.requires_grad_(False)
        # Kept (size >= 1) even without a queue so checkpoints of every setting have the same keys.
        self.queue = GalleryQueue(max(queue_size, 1), embedding_size)

    # -- nets --------------------------------------------------------------------------------------------------
    def gallery_net(self) -> nn.Module:
        return self.backbone if self.gallery is None else self.gallery

    def momentum_at(self, step: int, total_steps: int) -> float:
        """m at a step: constant, or the cosine ramp m_end − (m_end − m_start)(cos(π t / T) + 1) / 2."""
        if self.momentum_end is None or total_steps <= 0:
            return self.momentum
        t = min(max(step, 0), total_steps) / total_steps
        return self.momentum_end - (self.momentum_end - self.momentum) * (math.cos(math.pi * t) + 1) / 2

    def queue_staleness(self, identities_per_step: int) -> dict[str, float]:
        """Age of the oldest queue entry (steps) and age x (1 − m) at the lowest and highest momentum."""
        age = self.queue.size / max(1, identities_per_step) if self.use_queue else 0.0
        ms = [self.momentum] + ([self.momentum_end] if self.momentum_end is not None else [])
        return {"queue_age_steps": age, "staleness_max": age * (1 - min(ms)), "staleness_min": age * (1 - max(ms))}

    def on_train_start(self) -> None:
        if self.momentum_end is not None:  # once, not on every step's update
            self._ramp_steps = int(self.trainer.estimated_stepping_batches)
        if self.variant != "momentum" or not self.use_queue:
            return
        per_step = self.trainer.world_size * (self.trainer.train_dataloader.batch_sampler.batch_size // 2
                                              if getattr(self.trainer.train_dataloader, "batch_sampler", None)
                                              is not None else 1)
        s = self.queue_staleness(per_step)
        msg = (f"SST gallery queue: {self.queue.size} entries = {s['queue_age_steps']:.0f} steps of "
               f"{per_step} identities; age x (1 - m) = {s['staleness_max']:.3f}"
               + (f" .. {s['staleness_min']:.3f}" if self.momentum_end is not None else ""))
        if s["staleness_max"] > self.stale_warning:
            log.warning("%s exceeds %.2f: the oldest queue prototypes come from a gallery net that has moved "
                        "far since (the authors' setting gives ~0.03). Use a smaller method.queue_size or a "
                        "larger method.momentum (or method.momentum_end).", msg, self.stale_warning)
        elif self.trainer.is_global_zero:
            log.info(msg)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """θ_g ← m θ_g + (1 − m) θ_p for parameters and floating-point buffers (BN running statistics)."""
        m = self.momentum_at(self.global_step, self._ramp_steps)
        for g, p in zip(self.gallery.parameters(), self.backbone.parameters()):
            g.mul_(m).add_(p.detach(), alpha=1 - m)
        for g, p in zip(self.gallery.buffers(), self.backbone.buffers()):
            if g.dtype.is_floating_point:
                g.mul_(m).add_(p, alpha=1 - m)
            else:
                g.copy_(p)

    def constraint_penalty(self) -> torch.Tensor:
        """λ ‖θ_p − θ_g‖² over all parameters (network-constraint variant)."""
        return self.constraint_weight * sum(((p - g) ** 2).sum() for p, g in
                                            zip(self.backbone.parameters(), self.gallery.parameters()))

    # -- one direction -----------------------------------------------------------------------------------------
    def _gather(self, x: torch.Tensor, grads: bool) -> torch.Tensor:
        if self._trainer is None or self.trainer.world_size == 1:
            return x
        out = self.all_gather(x, sync_grads=grads)
        return out.reshape(-1, *x.shape[1:])

    def direction_loss(self, probe: torch.Tensor, ids: torch.Tensor, gallery_all: torch.Tensor,
                       ids_all: torch.Tensor, offset: int) -> tuple[ObjectiveOutput, torch.Tensor]:
        """The joint objective of probe features against all ranks' gallery features (+ the queue): each probe's
        target is its own gallery feature; the other entries of its identity are left out of its softmax."""
        protos, proto_ids = gallery_all, ids_all
        if self.use_queue and self.queue.filled:
            q_feats, q_ids = self.queue.valid()
            protos = torch.cat([gallery_all, q_feats.to(gallery_all.dtype)])
            proto_ids = torch.cat([ids_all, q_ids])
        targets, exclude = sst_targets(ids, proto_ids, offset)
        out = self.objective(probe, ids, targets=targets, references=protos, reference_labels=proto_ids,
                             exclude=exclude)
        return out, proto_ids

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> StepOutput:
        images, labels = batch
        if len(images) % 2 or not torch.equal(labels[0::2], labels[1::2]):
            raise ValueError("SST needs identity-pair batches [x1_0, x2_0, x1_1, x2_1, ...]: "
                             "set data/sampler=identity_pairs")
        x1, x2, ids = images[0::2], images[1::2], labels[0::2]
        n = len(ids)
        probe1, probe2 = self.backbone(x1), self.backbone(x2)
        trained_gallery = self.variant != "momentum"
        with torch.set_grad_enabled(trained_gallery and torch.is_grad_enabled()):
            gnet = self.gallery_net()
            gal1, gal2 = F.normalize(gnet(x1).float(), dim=1), F.normalize(gnet(x2).float(), dim=1)
        rank = 0 if self._trainer is None else self.trainer.global_rank
        g1_all, g2_all = self._gather(gal1, trained_gallery), self._gather(gal2, trained_gallery)
        ids_all = self._gather(ids, False)
        offset = rank * n
        out_a, score_labels = self.direction_loss(probe1, ids, g2_all, ids_all, offset)
        out_b, _ = self.direction_loss(probe2, ids, g1_all, ids_all, offset)
        parts_a, parts_b = out_a.parts, out_b.parts
        loss = 0.5 * (out_a.total + out_b.total)
        if self.variant == "constraint":
            penalty = self.constraint_penalty()
            loss = loss + penalty
            self.log("train/constraint", penalty, on_step=True, on_epoch=True, sync_dist=True)
        check_finite(loss, self.global_step)
        self.log_objective({key: 0.5 * (parts_a[key] + parts_b[key]) for key in parts_a})
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/queue_filled", float(self.queue.filled), on_step=True, on_epoch=False, rank_zero_only=True)
        if self.variant == "momentum":
            self.log("train/momentum", self.momentum_at(self.global_step, self._ramp_steps), on_step=True,
                     on_epoch=False, rank_zero_only=True)
        self.log_lr()
        self.count_images(len(images))
        # Diagnostics (callbacks.diagnostics) read these before the queue receives this step's features.
        out = StepOutput(loss=loss, scores=out_a.scores, score_labels=score_labels,
                         embeddings=F.normalize(probe1.detach().float(), dim=1), labels=ids,
                         gallery_embeddings=gal1.detach(),
                         queue_age=self.queue.oldest_age(self.global_step) if self.use_queue else None)
        # Enqueue one direction (every rank the same gathered batch -> identical queues).
        if self.use_queue:
            self.queue.enqueue(g2_all.detach(), ids_all, self.global_step)
        return out

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # Right after the probe's update, before any callback (e.g. a step checkpoint) sees the weights.
        super().optimizer_step(*args, **kwargs)
        if self.variant == "momentum":
            self.momentum_update()
