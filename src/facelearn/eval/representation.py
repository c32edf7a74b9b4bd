"""Representation-health numbers computed from one batch of embeddings (cheap: one SVD of an N x D matrix).

* effective rank (Roy & Vetterli, 2007): exp of the entropy of the singular values normalised to sum 1. It is D
  for isotropic features and 1 when every embedding is the same direction: the "dimension collapse" that the SST
  paper (§3.2) attributes to a shared probe/gallery net on shallow data;
* mean cosine between embeddings of different identities: drifts towards 1 when features collapse;
* for SST, the mean cosine between the probe's and the gallery's embedding of the same image: low values mean the
  gallery lags the probe, so the positive prototype is not in the probe's feature space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def effective_rank(embeddings: torch.Tensor) -> float:
    """exp(H(p)), p = σ / Σσ over the singular values σ of the (N, D) matrix (uncentred)."""
    s = torch.linalg.svdvals(embeddings.detach().float())
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def mean_negative_cosine(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cosine over all pairs of embeddings with different labels (NaN when there are none)."""
    z = F.normalize(embeddings.detach().float(), dim=1)
    sim = z @ z.T
    diff = labels.view(-1, 1) != labels.view(1, -1)
    return float(sim[diff].mean()) if bool(diff.any()) else float("nan")


def mean_pair_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean row-wise cosine of two (N, D) matrices (the same images through two nets)."""
    return float(F.cosine_similarity(a.detach().float(), b.detach().float(), dim=1).mean())
