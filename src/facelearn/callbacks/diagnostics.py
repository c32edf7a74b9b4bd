"""Representation diagnostics logged during training (definitions in ``facelearn.eval.representation``)."""

from __future__ import annotations

import lightning.pytorch as pl

from facelearn.eval import representation as d


class RepresentationDiagnostics(pl.Callback):
    """Logs representation health every ``every_n_steps`` training steps, from the batch the step embedded (no
    extra forward pass): ``diag/effective_rank``, ``diag/negative_cosine`` for every method, and for SST
    ``diag/probe_gallery_cosine`` (same images through the probe and the gallery net) and ``diag/queue_age`` (steps
    since the oldest queue entry was written). Goes to every configured logger (rank zero's batch under DDP).
    See ``facelearn.eval.representation`` for the definitions."""

    def __init__(self, every_n_steps: int = 10) -> None:
        if every_n_steps < 1:
            raise ValueError(f"callbacks.diagnostics.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.is_global_zero or not isinstance(outputs, dict) or "embeddings" not in outputs:
            return
        if (trainer.global_step - 1) % self.every_n_steps:
            return
        emb, labels = outputs["embeddings"], outputs["labels"]
        values = {"diag/effective_rank": d.effective_rank(emb),
                  "diag/negative_cosine": d.mean_negative_cosine(emb, labels)}
        if outputs.get("gallery_embeddings") is not None:
            values["diag/probe_gallery_cosine"] = d.mean_pair_cosine(emb, outputs["gallery_embeddings"])
        if outputs.get("queue_age") is not None:
            values["diag/queue_age"] = float(outputs["queue_age"])
        # Straight to the loggers (not self.log), so the interval is ours, not trainer.log_every_n_steps.
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)
