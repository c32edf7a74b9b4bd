"""The joint objective every training regime optimises: a margin head and/or weighted pair losses.

    L = head_weight · CE(head(f, targets, references)) + Σ_k w_k · pair_loss_k(f, labels, references, ref_labels)

Methods differ only in what a feature is scored against (``references``): conventional training passes nothing
(the head scores against its own prototypes, the FC weights, with the class label as target; pair losses compare
the batch with itself); SST passes the gallery features + queue, the column of each probe's own gallery feature as
target and the columns to drop (other entries of the probe's identity). Joint supervision (doppelganger paper
§4.2.6: L2-softmax + margin loss) and exemplar-only training (``head=none``) are configurations of this one class.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from facelearn.nn.heads import MarginHead
from facelearn.nn.partial_fc import PartialFC


class ObjectiveOutput(NamedTuple):
    """``total``: the weighted loss; ``parts``: unweighted terms for logging (``head`` = the cross-entropy, ``acc``
    = top-1 of the head's scores, one entry per pair loss); ``scores``: the head's logits over the references
    (None without a head), detached, for callbacks such as doppelganger mining, with the class of each column
    (``score_labels``) and row (``score_rows``) where they are not the plain ones (``HeadLoss``)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]
    scores: torch.Tensor | None
    score_labels: torch.Tensor | None = None
    score_rows: torch.Tensor | None = None


class JointObjective(nn.Module):
    """Head cross-entropy + weighted pair losses.

    Args:
        head: margin head, or a classifier with the same ``cross_entropy`` contract (``HeadLoss``; Partial FC), or
            None for pair losses only.
        losses: name -> ``(weight, pair loss)``.
        head_weight: weight of the head's cross-entropy.
    """

    def __init__(self, head: MarginHead | PartialFC | None, losses: dict[str, tuple[float, nn.Module]] | None = None,
                 head_weight: float = 1.0) -> None:
        super().__init__()
        losses = dict(losses or {})
        if head is None and not losses:
            raise ValueError("the method needs a head (head=...) or at least one pair loss (loss=...)")
        self.head = head
        self.head_weight = float(head_weight)
        self.pair_losses = nn.ModuleDict({k: fn for k, (_, fn) in losses.items()})
        self.loss_weights = {k: float(w) for k, (w, _) in losses.items()}

    def forward(self, features: torch.Tensor, labels: torch.Tensor, *, targets: torch.Tensor | None = None,
                references: torch.Tensor | None = None, reference_labels: torch.Tensor | None = None,
                exclude: torch.Tensor | None = None) -> ObjectiveOutput:
        """Score ``features`` (N, D) of identities ``labels`` against the head's own prototypes (``references``
        None) or against ``references`` (R, D) of identities ``reference_labels``; ``targets``: each feature's
        column (default: its label); ``exclude``: (N, R) bool, columns left out of a feature's softmax."""
        parts: dict[str, torch.Tensor] = {}
        total = features.new_zeros((), dtype=torch.float32)
        head = None
        if self.head is not None:
            targets = labels if targets is None else targets
            head = self.head.cross_entropy(features, targets, references, exclude)
            parts["head"], parts["acc"] = head.loss, head.acc
            total = total + self.head_weight * head.loss
        for name, fn in self.pair_losses.items():
            parts[name] = fn(features, labels) if references is None else \
                fn(features, labels, references, reference_labels)
            total = total + self.loss_weights[name] * parts[name]
        if head is None:
            return ObjectiveOutput(total, parts, None)
        return ObjectiveOutput(total, parts, head.scores, head.score_labels, head.score_rows)


def check_finite(loss: torch.Tensor, step: int) -> None:
    """Stop at the first non-finite loss with what to change (a NaN would otherwise train on silently)."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}: lower optimizer.lr or use "
                                 "precision=32")
