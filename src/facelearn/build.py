"""Building a run's objects from a composed config (shared by train and evaluate)."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from facelearn.methods.base import FaceModule


def build_module(cfg: DictConfig, num_classes: int) -> FaceModule:
    """Instantiate the method's LightningModule with its backbone, head, optimiser and schedule."""
    kwargs: dict[str, Any] = {
        "backbone": instantiate(cfg.backbone),
        "optimizer": instantiate(cfg.optimizer),
        "scheduler": instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    }
    if "head" in cfg:
        kwargs["head"] = None if cfg.head is None else instantiate(cfg.head, num_classes=num_classes)
    if cfg.get("loss"):
        kwargs["losses"] = {name: (float(term.weight), instantiate(term.fn)) for name, term in cfg.loss.items()
                            if term is not None}
    module = instantiate(cfg.method, **kwargs)
    module.config = OmegaConf.to_container(cfg, resolve=True)
    return module


def build_list(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every non-null entry of a name -> config mapping (callbacks, loggers)."""
    return [instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]
