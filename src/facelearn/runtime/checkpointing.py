"""Checkpoints that survive interruptions: atomic writes on the target filesystem, and a resumable checkpoint when
the scheduler sends SIGTERM (SLURM and most schedulers do before killing a job).

Lightning's own save goes through an fsspec transaction that writes the temporary file under TMPDIR; when TMPDIR is
on another filesystem the final move is a copy, and a kill during it destroyed the previous ``last.ckpt``. Here the
temporary file is written next to the target and renamed over it (``os.replace`` is atomic within a filesystem).

On SIGTERM, Lightning stops after the running step and raises ``SIGTERMException`` (a ``SystemExit`` with code 0,
so the job looked successful). ``SigtermCheckpoint`` then writes ``last.ckpt`` (a mid-epoch checkpoint: the
sampler position and RNG states are in it, so ``ckpt_path=.../last.ckpt`` continues exactly), and the training
entry point exits with code 143 (128 + SIGTERM), so schedulers and shells see the interruption.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

SIGTERM_EXIT_CODE = 143


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to ``<path>.tmp-<pid>`` in the target directory, fsync, then rename over ``path``: a save that fails
    (a full disk, a read-only directory) leaves the previous checkpoint as it was and stops the run saying so."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = str(path)
        if "://" in path:  # remote storage: keep Lightning's transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError("storage_options are not supported for local checkpoints")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as e:
            kept = f"the previous {os.path.basename(path)} is unchanged" if os.path.exists(path) else "nothing saved"
            raise OSError(e.errno, f"cannot write checkpoint {path}: {e.strerror or e} ({kept}; free space or make "
                                   f"{os.path.dirname(path) or '.'} writable, then resume with ckpt_path=)") from e
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


class SigtermCheckpoint(pl.Callback):
    """On SIGTERM, save a resumable ``dirpath/filename`` (default ``last.ckpt``) before the process exits.

    The save happens at the end of the step during which the signal arrived, the point where Lightning's own
    mid-epoch checkpoints are taken (before the LR scheduler steps), so the resumed run continues exactly. Keep
    this callback after ``ResumeStateCallback`` (it counts the step first). A signal that arrives between the last
    step of an epoch and its end is covered by the epoch-end ``last.ckpt``."""

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = os.path.join(dirpath, filename)
        self._saved_at: int | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.received_sigterm and self._saved_at is None:
            # weights_only=False: the whole resumable state (optimiser, loops, sampler), said explicitly; Lightning
            # otherwise logs "`weights_only` was not set" (its save option, not torch.load's unpickler)
            trainer.save_checkpoint(self.path, weights_only=False)
            self._saved_at = trainer.global_step

    def on_exception(self, trainer: pl.Trainer, pl_module: Any, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        if self._saved_at is None and not os.path.isfile(self.path):
            trainer.save_checkpoint(self.path, weights_only=False)
        if trainer.is_global_zero:
            step = self._saved_at if self._saved_at is not None else "the end of the last epoch"
            log.error("SIGTERM received: saved a resumable checkpoint (step %s) at %s; resume with ckpt_path=%s. "
                      "Exiting with code %d", step, self.path, self.path, SIGTERM_EXIT_CODE)
