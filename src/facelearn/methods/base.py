"""Shared LightningModule base: the embedding contract, optimiser/schedule wiring and throughput logging."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, TypedDict

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from facelearn.data.transforms import normalize
from facelearn.nn.freeze import keep_frozen_in_eval
from facelearn.nn.objective import JointObjective
from facelearn.nn.partial_fc import PartialFC

log = logging.getLogger(__name__)


class StepOutput(TypedDict, total=False):
    """What every training step returns to callbacks (Lightning requires a dict with ``loss``).

    ``scores``: the head's logits (N, R) of the batch's features against what they were scored against, and
    ``score_labels`` the identity of each of the R columns (None: column = class index, the head's own prototypes)
    and ``score_rows`` of each of the N rows (None: the rows are ``labels``; Partial FC scores the batch gathered
    from all ranks) — doppelganger mining reads these, for any method with a head. ``embeddings``: L2-normalised
    features of the batch (detached) and ``labels`` their identities (diagnostics; also the rows of ``scores``); SST
    adds ``gallery_embeddings`` (the gallery net's features of the same images as ``embeddings``) and ``queue_age``
    (steps since the oldest queue entry was written)."""

    loss: torch.Tensor
    scores: torch.Tensor | None
    score_labels: torch.Tensor | None
    score_rows: torch.Tensor | None
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
        self.objective: JointObjective | None = None  # set by the method
        self._epoch_start = 0.0
        self._epoch_images = 0
        self._register_load_state_dict_pre_hook(_legacy_objective_keys)

    @property
    def head(self) -> nn.Module | None:
        """The margin head of the objective (None for pair losses only)."""
        return None if self.objective is None else self.objective.head

    def log_objective(self, parts: dict[str, torch.Tensor]) -> None:
        """``train/acc`` (head top-1), ``train/loss_head`` and ``train/loss_<pair loss>`` of one step."""
        for key, value in parts.items():
            name = "train/acc" if key == "acc" else f"train/loss_{key}"
            self.log(name, value, on_step=True, on_epoch=True, prog_bar=key == "acc", sync_dist=True)

    def embedding_network(self) -> nn.Module:
        """The network whose features are the model's embedding (SST overrides: its probe net)."""
        return self.backbone

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return embed_batch(self.embedding_network(), images, self.flip_tta, self.device)

    def train(self, mode: bool = True) -> FaceModule:
        super().train(mode)
        if mode:  # freeze=<module>: the frozen bottom of the backbone keeps its BatchNorm statistics
            keep_frozen_in_eval(self)
        return self

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
        self.log("train/images_per_sec", rate, rank_zero_only=True)  # the epoch line: callbacks.progress

    def log_lr(self) -> None:
        opt = self.optimizers()
        opt = opt[0] if isinstance(opt, list) else opt
        self.log("train/lr", opt.param_groups[0]["lr"], on_step=True, on_epoch=False, rank_zero_only=True)

    # -- sharded classifiers (Partial FC) ---------------------------------------------------------------------
    def sharded_classifiers(self) -> list[tuple[str, PartialFC]]:
        return [(name, m) for name, m in self.named_modules() if isinstance(m, PartialFC)]

    def configure_model(self) -> None:
        """Allocate Partial FC shards once the process group exists (before the optimiser is built) and keep them
        out of DDP's gradient averaging: each rank holds different classes."""
        sharded = self.sharded_classifiers()
        for _, classifier in sharded:
            classifier.shard()
        if sharded:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                self, [f"{name}.weight" for name, _ in sharded])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["facelearn_config"] = self.config
        checkpoint["facelearn_num_classes"] = getattr(self.head, "num_classes", 0)
        self._save_full_shards(checkpoint)

    def _save_full_shards(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints hold every prototype and its optimiser state for all C classes (gathered from the ranks: a
        collective, Lightning calls this hook on every rank), so they resume and evaluate on any number of ranks.
        ``facelearn_sharded`` records each shard's index in the optimiser state, for ``on_load_checkpoint``."""
        sharded = self.sharded_classifiers()
        if not sharded:
            return
        positions = {}
        optimizers = self.trainer.optimizers if self._trainer is not None else []
        for name, classifier in sharded:
            weight = classifier.weight
            checkpoint["state_dict"][f"{name}.weight"] = classifier.full_weight()
            for opt, opt_state in zip(optimizers, checkpoint.get("optimizer_states", [])):
                params = [p for group in opt.param_groups for p in group["params"]]
                index = next((i for i, p in enumerate(params) if p is weight), None)
                if index is None or index not in opt_state["state"]:
                    continue
                # a new dict: optimizer.state_dict() shares the per-parameter dicts with the live optimiser
                opt_state["state"][index] = {
                    k: classifier.gather_rows_of(v) if torch.is_tensor(v) and v.shape == weight.shape else v
                    for k, v in opt_state["state"][index].items()}
                positions[name] = index
        checkpoint["facelearn_sharded"] = positions

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """This rank's rows of the full Partial FC optimiser state (the weights are sliced by ``PartialFC``)."""
        positions = checkpoint.get("facelearn_sharded") or {}
        modules = dict(self.sharded_classifiers())
        for name, index in positions.items():
            classifier = modules.get(name)
            if classifier is None:
                continue
            for opt_state in checkpoint.get("optimizer_states", []):
                state = opt_state["state"].get(index)
                if state is None:
                    continue
                opt_state["state"][index] = {
                    k: classifier.local_rows(v) if torch.is_tensor(v) and v.dim() and
                    v.shape[0] == classifier.num_classes else v for k, v in state.items()}


def _legacy_objective_keys(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Checkpoints written before the joint objective held ``head.*`` / ``pair_losses.*`` at the top level."""
    for key in [k for k in state_dict if k.startswith((prefix + "head.", prefix + "pair_losses."))]:
        state_dict[prefix + "objective." + key[len(prefix):]] = state_dict.pop(key)


@torch.no_grad()
def embed_batch(net: nn.Module, images: torch.Tensor, flip_tta: bool, device: torch.device) -> torch.Tensor:
    """uint8 (or [-1, 1]) images -> L2-normalised embeddings of ``net``: normalise(f(x) [+ f(flip(x))])."""
    x = normalize(images.to(device))
    feats = net(x).float()
    if flip_tta:
        feats = feats + net(x.flip(3)).float()
    return F.normalize(feats, dim=1)
