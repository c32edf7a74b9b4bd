"""The gallery queue of Semi-Siamese Training: the last ``size`` gallery features and their identities.

A FIFO ring buffer kept in module buffers (features, labels, pointer), so it is part of the LightningModule's
``state_dict`` and a checkpoint resumes it exactly. Empty slots have label -1 and are never used.
"""

from __future__ import annotations

import torch
from torch import nn


class GalleryQueue(nn.Module):
    """FIFO of ``size`` L2-normalised features (``dim``) with identity labels.

    ``enqueue`` writes a whole (globally gathered) batch at the pointer; ``size`` must be a multiple of that batch
    size so a batch never straddles the end, and the oldest entries are the ones overwritten.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        self.size, self.dim = size, dim
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        # Training step at which each entry was written (-1: empty), for the queue-age diagnostic.
        self.register_buffer("written_at", torch.full((size,), -1, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before ``written_at`` existed: treat every filled entry as written at step 0.
        key = prefix + "written_at"
        if key not in state_dict and prefix + "labels" in state_dict:
            state_dict[key] = torch.where(state_dict[prefix + "labels"] >= 0, 0, -1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def enqueue(self, features: torch.Tensor, labels: torch.Tensor, step: int = 0) -> None:
        n = features.shape[0]
        if self.size % n:
            raise ValueError(f"method.queue_size={self.size} must be a multiple of the global batch of {n} "
                             "gallery features (identities per batch x ranks)")
        p = int(self.pointer)
        self.features[p:p + n] = features.detach().to(self.features.dtype)
        self.labels[p:p + n] = labels.detach().long()
        self.written_at[p:p + n] = int(step)
        self.pointer.fill_((p + n) % self.size)

    def oldest_age(self, step: int) -> int:
        """Steps since the oldest filled entry was written (0 when empty)."""
        filled = self.written_at[self.labels >= 0]
        return 0 if filled.numel() == 0 else int(step) - int(filled.min())

    def valid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and labels of the filled slots (all of them once the queue has wrapped around)."""
        mask = self.labels >= 0
        if bool(mask.all()):
            return self.features, self.labels
        return self.features[mask], self.labels[mask]

    @property
    def filled(self) -> int:
        return int((self.labels >= 0).sum())

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"
