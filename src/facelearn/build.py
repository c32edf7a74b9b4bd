"""Building a run's objects from a composed config (shared by train and evaluate)."""

from __future__ import annotations

import logging
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from facelearn.methods.base import FaceModule
from facelearn.nn.freeze import freeze_through
from facelearn.cli.validate import check_checkpoint_file

log = logging.getLogger(__name__)


def head_config(cfg: DictConfig) -> DictConfig | None:
    """The margin head's config; None for ``head=none``. A recipe's head options merged onto ``head=none`` (the CPU
    recipes pin ``head.scale: 30`` for whichever head is chosen; their pair-loss children choose none) leave a node
    without ``_target_``: no head either."""
    head = cfg.get("head")
    return head if head is not None and head.get("_target_") else None


def build_module(cfg: DictConfig, num_classes: int) -> FaceModule:
    """Instantiate the method's LightningModule with its backbone, head, optimiser and schedule."""
    kwargs: dict[str, Any] = {
        "backbone": freeze_backbone(init_backbone(instantiate(cfg.backbone), cfg.get("init_from")),
                                    cfg.get("freeze")),
        "optimizer": instantiate(cfg.optimizer),
        "scheduler": instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    }
    method_cls = get_class(cfg.method._target_)
    # Conventional training owns its prototypes (FC weights); SST passes the gallery queue instead.
    head_classes = num_classes if getattr(method_cls, "owns_prototypes", True) else 0
    if cfg.get("classifier"):  # Partial FC holds the prototypes itself; the head only gives the margin
        kwargs["head"] = instantiate(cfg.classifier, margin=instantiate(head_config(cfg), num_classes=0),
                                     num_classes=num_classes)
    elif "head" in cfg:
        head = head_config(cfg)
        kwargs["head"] = None if head is None else instantiate(head, num_classes=head_classes)
    if "num_classes" in cfg.method:
        kwargs["num_classes"] = num_classes
    if cfg.get("loss"):
        kwargs["losses"] = {name: (float(term.weight), instantiate(term.fn)) for name, term in cfg.loss.items()
                            if term is not None}
    module = instantiate(cfg.method, **kwargs)
    module.config = OmegaConf.to_container(cfg, resolve=True)
    return module


def init_backbone(backbone: nn.Module, path: str | None) -> nn.Module:
    """``init_from``: the backbone weights of a facelearn checkpoint (pretrain, then fine-tune: the head, optimiser
    and schedule start afresh). Loaded before the method is built, so SST's gallery net starts as the same copy."""
    if not path:
        return backbone
    state = check_checkpoint_file(str(path), "init_from")["state_dict"]
    weights = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    backbone.load_state_dict(weights)  # strict: check_init_backbone has compared the configs
    return backbone


def freeze_backbone(backbone: nn.Module, through: str | None) -> nn.Module:
    """``freeze``: keep the backbone's weights and BatchNorm statistics fixed up to and including that module."""
    frozen, total = freeze_through(backbone, through)
    if through:
        log.info("freeze=%s: %.2fM of the backbone's %.2fM parameters and their BatchNorm statistics kept fixed",
                 through, frozen / 1e6, total / 1e6)
    return backbone


def build_list(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every non-null entry of a name -> config mapping (callbacks, loggers)."""
    return [instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]
