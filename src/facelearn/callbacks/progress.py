"""Training progress: a tqdm bar in a terminal, periodic plain lines elsewhere (CI, nohup, SLURM logs).

Both show the step's loss and head accuracy and the images/s of all processes, and print a one-line summary per
epoch (mean loss and accuracy of the epoch's steps on rank zero, throughput, time). Lightning prints progress on rank
zero only; the bar is chosen when the stream it writes to (stderr) is a terminal, or by ``mode``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

log = logging.getLogger(__name__)

# What the bar and the lines show, from the metrics logged with prog_bar=True (step values).
_SHORT = {"train/loss_step": "loss", "train/acc_step": "acc"}


class _Meter:
    """Throughput over the last ``window`` steps and the epoch's running means (loss, accuracy)."""

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self.reset_epoch()

    def reset_epoch(self) -> None:
        self.start = time.perf_counter()
        self.marks: list[tuple[float, int]] = [(self.start, 0)]
        self.images = 0
        self.sums: dict[str, float] = {}
        self.steps = 0

    def update(self, images: int, metrics: dict[str, Any]) -> None:
        self.images += images
        self.steps += 1
        self.marks = (self.marks + [(time.perf_counter(), self.images)])[-(self.window + 1):]
        for k, v in metrics.items():  # summed where they live (a GPU tensor stays there: no sync per step)
            self.sums[k] = self.sums.get(k, 0.0) + v

    @property
    def rate(self) -> float:
        (t0, n0), (t1, n1) = self.marks[0], self.marks[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def means(self) -> dict[str, float]:
        return {k: float(v) / max(1, self.steps) for k, v in self.sums.items()}


def _step_metrics(trainer: pl.Trainer, outputs: Any) -> dict[str, Any]:
    """The step's loss and head accuracy, left as (detached) tensors: read only when a line is printed."""
    out = {}
    if isinstance(outputs, dict) and outputs.get("loss") is not None:
        out["loss"] = outputs["loss"].detach()
    acc = trainer.callback_metrics.get("train/acc_step")
    if acc is not None:
        out["acc"] = acc.detach()
    return out


def _value(key: str, value: Any) -> str:
    """``1.511`` for the loss, ``71.88%`` for the accuracy (in percent, as the benchmark tables print it)."""
    v = float(value)
    return f"{100 * v:.2f}%" if key == "acc" else f"{v:.4g}"


def _shown(key: str, value: Any) -> str:
    """``loss 1.511``, ``acc 71.88%``."""
    return f"{key} {_value(key, value)}"


def _images(batch: Any, world_size: int) -> int:
    images = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(len(images)) * world_size


def _summary(trainer: pl.Trainer, meter: _Meter) -> str:
    elapsed = time.perf_counter() - meter.start
    means = " ".join(_shown(k, v) for k, v in meter.means().items())
    return (f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {means}, "
            f"{meter.images / max(elapsed, 1e-9):.0f} images/s, {elapsed:.1f} s")


class TrainingProgressBar(TQDMProgressBar):
    """tqdm bar per epoch with loss, accuracy and images/s; an epoch summary line below it."""

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=False)
        self.meter = _Meter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self.train_progress_bar.set_description(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")
        self.meter.reset_epoch()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.meter.update(_images(batch, trainer.world_size), _step_metrics(trainer, outputs))
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if trainer.is_global_zero and self.meter.steps:
            self.print(_summary(trainer, self.meter))

    def get_metrics(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        shown = {_SHORT.get(k, k): v for k, v in items.items() if not k.endswith("_epoch")}
        if "acc" in shown:
            shown["acc"] = _value("acc", shown["acc"])
        shown["img/s"] = f"{self.meter.rate:.0f}"
        return shown


class PlainProgress(ProgressBar):
    """One log line every ``every_n_steps`` steps (step, loss, accuracy, images/s, ETA) and one per epoch."""

    def __init__(self, every_n_steps: int = 50) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"callbacks.progress.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._enabled = True
        self.meter = _Meter()
        self._fit_start = time.perf_counter()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.meter.reset_epoch()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        metrics = _step_metrics(trainer, outputs)
        self.meter.update(_images(batch, trainer.world_size), metrics)
        step = trainer.global_step
        if not (self._enabled and trainer.is_global_zero) or step % self.every_n_steps:
            return
        total = trainer.estimated_stepping_batches
        done = time.perf_counter() - self._fit_start
        eta = done / max(step, 1) * (total - step) if total and total != float("inf") else float("nan")
        shown = " ".join(_shown(k, v) for k, v in metrics.items())
        log.info("step %d/%s epoch %d: %s, %.0f images/s, ETA %s", step, total, trainer.current_epoch + 1, shown,
                 self.meter.rate, _duration(eta))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self._enabled and trainer.is_global_zero and self.meter.steps:
            log.info(_summary(trainer, self.meter))


def _duration(seconds: float) -> str:
    if seconds != seconds:  # NaN: unknown length
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def progress_bar(mode: str = "auto", refresh_rate: int = 1, every_n_steps: int = 50) -> ProgressBar:
    """``auto``: the bar when stderr is a terminal, plain lines otherwise; ``bar`` / ``plain`` force one."""
    if mode not in ("auto", "bar", "plain"):
        raise ValueError(f"callbacks.progress.mode must be auto, bar or plain, got {mode!r}")
    if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
        return TrainingProgressBar(refresh_rate)
    return PlainProgress(every_n_steps)
