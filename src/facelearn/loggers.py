"""Loggers. A resumed run continues its CSV file and its W&B run. Logger factories: W&B is offline unless the user explicitly asks for online mode, so a run never blocks on the
network: ``mode`` argument > ``WANDB_MODE`` environment variable > ``offline``."""

from __future__ import annotations

import csv
import os
import secrets

from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.loggers import CSVLogger, WandbLogger

_MODES = ("online", "offline", "disabled")


def wandb_logger(project: str = "facelearn", save_dir: str = ".", name: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, mode: str | None = None) -> WandbLogger:
    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    if mode not in _MODES:
        raise ValueError(f"logger.wandb.mode must be one of {_MODES}, got {mode!r}")
    os.makedirs(save_dir, exist_ok=True)
    # Debug logs go beside the run instead of ~/.cache/wandb unless the user chose a cache dir.
    os.environ.setdefault("WANDB_CACHE_DIR", os.path.join(save_dir, "wandb-cache"))
    # One W&B run per run directory: a resumed run (same directory, see paths.resume_run_dir) continues it.
    id_file = os.path.join(save_dir, "wandb_run_id")
    if os.path.isfile(id_file):
        with open(id_file, encoding="utf-8") as fh:
            run_id = fh.read().strip()
    else:
        run_id = secrets.token_hex(4)  # W&B ids: short lowercase alphanumerics
        with open(id_file, "w", encoding="utf-8") as fh:
            fh.write(run_id + "\n")
    return WandbLogger(project=project, save_dir=save_dir, name=name, group=group, tags=list(tags or []),
                       offline=mode == "offline", mode=mode, id=run_id, resume="allow",
                       settings={"init_timeout": 60, "silent": True})


def _row_before(row: dict, step: int) -> bool:
    """A well-formed row (a kill mid-write can leave a truncated or run-on last line) logged before ``step``."""
    if None in row or None in row.values():
        return False
    try:
        return int(float(row.get("step", ""))) < step
    except ValueError:
        return False


class _ContinuingWriter(_ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; this one keeps the rows of the steps before
    ``resume_step`` (a resumed run redoes the later ones) and appends after them."""

    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if self.resume_step is None or not self._fs.isfile(self.metrics_file_path):
            return super()._check_log_dir_exists()
        with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
            reader = csv.DictReader(fh)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if _row_before(r, self.resume_step)]
        with self._fs.open(self.metrics_file_path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(keys)


class ContinuingCSVLogger(CSVLogger):
    """CSVLogger that continues a resumed run's ``metrics.csv`` (see ``resume_from``) instead of deleting it."""

    resume_step: int | None = None

    def resume_from(self, step: int) -> None:
        """Called before training starts when resuming from a checkpoint taken at global step ``step``."""
        self.resume_step = int(step)

    @property
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir, resume_step=self.resume_step)
        return self._experiment
