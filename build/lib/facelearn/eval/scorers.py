"""Pair scorers: map embeddings and index pairs to similarity scores (higher = same person)."""

from __future__ import annotations

import torch


class CosineScorer:
    """Cosine similarity of L2-normalised embeddings (the default)."""

    name = "cosine"

    def fit(self, module, datamodule=None) -> None:  # noqa: D401 - nothing to prepare
        return None

    def __call__(self, embeddings: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        return (embeddings[pairs[:, 0]] * embeddings[pairs[:, 1]]).sum(1)
