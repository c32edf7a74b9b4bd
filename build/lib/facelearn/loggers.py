"""Logger factories. W&B is offline unless the user explicitly asks for online mode, so a run never blocks on the
network: ``mode`` argument > ``WANDB_MODE`` environment variable > ``offline``."""

from __future__ import annotations

import os

from lightning.pytorch.loggers import WandbLogger

_MODES = ("online", "offline", "disabled")


def wandb_logger(project: str = "facelearn", save_dir: str = ".", name: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, mode: str | None = None) -> WandbLogger:
    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    if mode not in _MODES:
        raise ValueError(f"logger.wandb.mode must be one of {_MODES}, got {mode!r}")
    os.makedirs(save_dir, exist_ok=True)
    # Debug logs go beside the run instead of ~/.cache/wandb unless the user chose a cache dir.
    os.environ.setdefault("WANDB_CACHE_DIR", os.path.join(save_dir, "wandb-cache"))
    return WandbLogger(project=project, save_dir=save_dir, name=name, group=group, tags=list(tags or []),
                       offline=mode == "offline", mode=mode, settings={"init_timeout": 60, "silent": True})
