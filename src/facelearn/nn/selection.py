"""Prototype selection: which prototypes take part in a sample's softmax, independent of the margin.

A head turns cosines into margin logits (``facelearn.nn.heads``); a selection, when given, then removes columns
(logit -inf: no loss, no gradient). Any margin can be combined with any selection: ``head=arcface
+head/selection=dominant`` is DP-softmax with an additive angular margin.
"""

from __future__ import annotations

import torch
from torch import nn


class DominantPrototypes(nn.Module):
    """Dominant-prototype selection of DP-softmax (Zhu et al., "Large-scale bisample learning on ID versus spot
    face recognition", IJCV 2019 — the classification loss of the SST supplementary, Table 1).

    With very many classes, a sample's softmax denominator is dominated by the few prototypes closest to it; the
    others contribute ~0 to the loss and only add (useless) gradient to their weights. The batch's softmax runs over
    its *dominant* prototypes only: the target prototypes of the batch plus the ``num_dominant`` non-target
    prototypes with the highest cosine to any feature of the batch. For sample i with target y_i, dominant set D
    (shared by the batch), T the batch's target columns and ψ the head's margin function::

        L_i = -log( e^{s ψ(cos θ_{y_i})} / (e^{s ψ(cos θ_{y_i})} + Σ_{j ∈ D ∪ T, j ≠ y_i} e^{s cos θ_j}) )

    ``num_dominant >= C - |T|`` keeps every prototype (the plain head).

    Scope: the dominant set is chosen exactly, from the cosines to *all* prototypes (one N x C matmul, as in every
    head here); the bisample paper additionally avoids scoring all classes for millions of identities (candidate
    queues of neighbouring prototypes, prototypes kept off the GPU), which this does not do — the loss is
    reproduced, the memory saving is not. With SST the prototypes are the gallery queue and the dominant set is
    chosen among its columns the same way.
    """

    def __init__(self, num_dominant: int = 256) -> None:
        super().__init__()
        if int(num_dominant) != num_dominant or num_dominant < 1:
            raise ValueError(f"head.selection.num_dominant must be a positive integer, got {num_dominant}")
        self.num_dominant = int(num_dominant)

    def forward(self, cos: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(C,) bool: the batch's target columns and its ``num_dominant`` hardest other prototypes."""
        keep = torch.zeros(cos.shape[1], dtype=torch.bool, device=cos.device)
        keep[targets] = True
        others = int((~keep).sum())
        if self.num_dominant >= others:
            return torch.ones_like(keep)
        hardness = cos.detach().max(dim=0).values.masked_fill(keep, float("-inf"))
        keep[hardness.topk(self.num_dominant).indices] = True
        return keep

    def extra_repr(self) -> str:
        return f"num_dominant={self.num_dominant}"
