"""Pair (exemplar) losses with one signature: ``loss(embeddings, labels, ref_embeddings=None, ref_labels=None)``.

Every loss L2-normalises its inputs. Without references the batch is scored against itself and each sample's pair
with itself is excluded; with references (SST's gallery features + queue) every embedding is scored against every
reference, and a reference with the embedding's label is a positive. Losses that need positives raise a clear
error when the batch holds none (use the M-per-class or identity-pair sampler).

* ``ContrastiveLoss`` and ``TripletLoss`` delegate to pytorch-metric-learning (references too). By default they use
  the plain Euclidean distance d of the normalised embeddings, as pml does; Hadsell et al. (contrastive) and FaceNet
  (triplet) square it: ``squared=true`` gives those forms (d² in place of d, margins then in squared units).
* ``NPairsLoss`` (Sohn 2016) is ours: pml's version does not accept references, which SST needs (the queue adds
  negatives). Without references it equals pml's ``NPairsLoss`` on scaled embeddings (tested).
* ``LiftedStructureLoss`` (Oh Song et al. 2016) is ours for the same reason, with the trainable feature scale of the
  doppelganger paper (§4.2.5: "trainable scale α like in L2-softmax, initial value 12"). Without references and with
  a fixed scale it equals pml's ``LiftedStructureLoss`` (tested).
* ``MarginLoss`` is the doppelganger paper's cosine version of the margin-based loss (eq. 2) with a trainable
  boundary β and its distance-weighted pair selection (eq. 3-5); pml's ``MarginLoss`` uses Euclidean distance and
  other sampling, so it is ours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners, reducers
from torch import nn


def _prepare(embeddings: torch.Tensor, labels: torch.Tensor, ref_embeddings: torch.Tensor | None,
             ref_labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                       torch.Tensor]:
    """Normalised (emb, ref), labels, and boolean (N, M) masks of positive and negative pairs."""
    if (ref_embeddings is None) != (ref_labels is None):
        raise ValueError("pass both ref_embeddings and ref_labels, or neither")
    emb = F.normalize(embeddings.float(), dim=1)
    if ref_embeddings is None:
        ref, ref_labels = emb, labels
        not_self = ~torch.eye(len(emb), dtype=torch.bool, device=emb.device)
    else:
        ref = F.normalize(ref_embeddings.float(), dim=1)
        not_self = torch.ones(len(emb), len(ref), dtype=torch.bool, device=emb.device)
    same = labels.view(-1, 1) == ref_labels.view(1, -1)
    return emb, ref, ref_labels, same & not_self, ~same


def _require_positives(pos: torch.Tensor, name: str) -> None:
    if not pos.any():
        raise ValueError(f"{name} needs at least 2 samples of some class in the batch (or a reference set holding "
                         "the batch's classes); the batch has none: use an M-per-class or identity-pair sampler "
                         "(data.sampler=m_per_class)")


class PairLoss(nn.Module):
    """Base: ``forward(embeddings, labels, ref_embeddings=None, ref_labels=None) -> scalar loss``."""

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, ref_embeddings: torch.Tensor | None = None,
                ref_labels: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class ContrastiveLoss(PairLoss):
    """Contrastive loss (Hadsell et al. 2006; Sun et al. 2014 for faces) on Euclidean distances of L2-normalised
    embeddings: positives pulled in, ``relu(d - pos_margin)``, negatives pushed past ``relu(neg_margin - d)``;
    averaged over the pairs with non-zero loss (pml's ``ContrastiveLoss``). ``squared``: d² instead of d (the form
    of Hadsell et al., who also square the hinge; pml does not)."""

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0, squared: bool = False) -> None:
        super().__init__()
        self.loss = losses.ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin,
                                           distance=distances.LpDistance(normalize_embeddings=True,
                                                                         power=2 if squared else 1))

    def forward(self, embeddings, labels, ref_embeddings=None, ref_labels=None):
        _, _, _, pos, _ = _prepare(embeddings, labels, ref_embeddings, ref_labels)
        _require_positives(pos, "ContrastiveLoss")
        return self.loss(embeddings.float(), labels, ref_emb=None if ref_embeddings is None else
                         ref_embeddings.float(), ref_labels=ref_labels)


class TripletLoss(PairLoss):
    """Triplet loss ``relu(d(a,p) - d(a,n) + margin)`` on L2-normalised embeddings; ``squared``: d² as in FaceNet
    (Schroff et al. 2015, eq. 1).

    ``selection``: ``all`` (every valid triplet, averaged over the non-zero ones), ``hard`` (batch-hard: hardest
    positive and hardest negative per anchor, Hermans et al. 2017) or ``semihard`` (negatives farther than the
    positive but inside the margin, FaceNet).
    """

    def __init__(self, margin: float = 0.2, selection: str = "all", squared: bool = False) -> None:
        super().__init__()
        if selection not in ("all", "hard", "semihard"):
            raise ValueError(f"loss.triplet.selection must be all | hard | semihard, got {selection!r}")
        dist = distances.LpDistance(normalize_embeddings=True, power=2 if squared else 1)
        self.selection = selection
        self.loss = losses.TripletMarginLoss(margin=margin, distance=dist)
        self.miner = {"all": None, "hard": miners.BatchHardMiner(distance=dist),
                      "semihard": miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard",
                                                            distance=dist)}[selection]

    def forward(self, embeddings, labels, ref_embeddings=None, ref_labels=None):
        _, _, _, pos, _ = _prepare(embeddings, labels, ref_embeddings, ref_labels)
        _require_positives(pos, "TripletLoss")
        emb = embeddings.float()
        ref = None if ref_embeddings is None else ref_embeddings.float()
        triplets = None if self.miner is None else self.miner(emb, labels, ref, ref_labels)
        return self.loss(emb, labels, triplets, ref_emb=ref, ref_labels=ref_labels)


class NPairsLoss(PairLoss):
    """Multi-class N-pair loss (Sohn 2016) on scaled cosine similarities.

    For every anchor with a positive among the references, one positive p is picked (the first; an identity-pair
    batch has exactly one) and the loss is cross-entropy of ``s cos(a, p)`` against ``s cos(a, r)`` for every
    reference r of another class. Without references, as in Sohn, only one anchor per class is used and the other
    classes' positives are the negatives (pml's pairing). ``s`` replaces Sohn's unnormalised embeddings + L2
    regulariser, since our embeddings are normalised.
    """

    def __init__(self, scale: float = 16.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, embeddings, labels, ref_embeddings=None, ref_labels=None):
        emb, ref, ref_lab, pos, neg = _prepare(embeddings, labels, ref_embeddings, ref_labels)
        _require_positives(pos, "NPairsLoss")
        has_pos = pos.any(1)
        first_pos = torch.argmax(pos.int(), dim=1)  # first positive column of every anchor
        if ref_embeddings is None:
            # Sohn / pml pairing: one (anchor, positive) pair per class, the positives form the reference set.
            anchors, positives = [], []
            seen: set[int] = set()
            for i in torch.nonzero(has_pos).flatten().tolist():
                lab = int(labels[i])
                if lab not in seen:
                    seen.add(lab)
                    anchors.append(i)
                    positives.append(int(first_pos[i]))
            a, p = emb[anchors], emb[positives]
            logits = self.scale * a @ p.T
            return F.cross_entropy(logits, torch.arange(len(anchors), device=emb.device))
        idx = torch.nonzero(has_pos).flatten()
        sims = self.scale * emb[idx] @ ref.T
        pos_logit = sims.gather(1, first_pos[idx].view(-1, 1))
        neg_logits = sims.masked_fill(~neg[idx], float("-inf"))
        logits = torch.cat([pos_logit, neg_logits], 1)
        return F.cross_entropy(logits, torch.zeros(len(idx), dtype=torch.long, device=emb.device))


class LiftedStructureLoss(PairLoss):
    """Lifted structured embedding loss (Oh Song et al. 2016, eq. 4) on Euclidean distances of ``α f / |f|``.

    For every positive pair (i, j): ``J = log(Σ_{k∈N(i)} exp(m - D_ik) + Σ_{l∈N(j)} exp(m - D_jl)) + D_ij``,
    loss = mean over positive pairs of ``relu(J)^2 / 2``. With references, i is an embedding, j a reference and the
    negatives of j are the embeddings of another class. α is trainable when ``learnable_scale`` (doppelganger paper
    §4.2.5: init 12).
    """

    def __init__(self, neg_margin: float = 1.0, scale: float = 1.0, learnable_scale: bool = False) -> None:
        super().__init__()
        self.neg_margin = neg_margin
        if learnable_scale:
            self.scale = nn.Parameter(torch.tensor(float(scale)))
        else:
            self.register_buffer("scale", torch.tensor(float(scale)), persistent=False)

    def forward(self, embeddings, labels, ref_embeddings=None, ref_labels=None):
        emb, ref, ref_lab, pos, neg = _prepare(embeddings, labels, ref_embeddings, ref_labels)
        _require_positives(pos, "LiftedStructureLoss")
        e, r = self.scale * emb, self.scale * ref
        d = torch.cdist(e, r)  # (N, M)
        # negatives of the reference side: embeddings of another class than reference j -> (M, N)
        d_ref = torch.cdist(r, e)
        neg_ref = ref_lab.view(-1, 1) != labels.view(1, -1)
        lse_i = torch.logsumexp((self.neg_margin - d).masked_fill(~neg, float("-inf")), dim=1)        # (N,)
        lse_j = torch.logsumexp((self.neg_margin - d_ref).masked_fill(~neg_ref, float("-inf")), dim=1)  # (M,)
        ii, jj = torch.nonzero(pos, as_tuple=True)
        j_val = torch.logaddexp(lse_i[ii], lse_j[jj]) + d[ii, jj]
        return (F.relu(j_val) ** 2).mean() / 2


class MarginLoss(PairLoss):
    """Cosine margin-based loss of the doppelganger paper (eq. 2) with distance-weighted selection (eq. 3-5).

    ``ℓ(i, j) = relu(α - y_ij (S_ij - β))`` with S the cosine similarity, y = ±1 and β trainable. For every
    embedding, at most one positive and at most one negative pair is selected, each with probability proportional
    to its violation ``v_pos = relu(β + α - S)`` / ``v_neg = relu(S - (β - α))`` (none when no pair violates).
    The loss is the mean of ℓ over the selected pairs (0 when none are selected); β gets its gradient through ℓ.
    """

    def __init__(self, alpha: float = 0.1, beta: float = 0.5, learnable_beta: bool = True,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.alpha = alpha
        if learnable_beta:
            self.beta = nn.Parameter(torch.tensor(float(beta)))
        else:
            self.register_buffer("beta", torch.tensor(float(beta)))
        self.generator = generator
        self.last_num_pairs = 0

    @staticmethod
    def _select(violation: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One column per row drawn with p ∝ violation (eq. 5); rows whose violations are all zero select none."""
        rows = torch.nonzero(violation.sum(1) > 0).flatten()
        if len(rows) == 0:
            return rows, rows
        weights = violation[rows].double().cpu()
        cols = torch.multinomial(weights, 1, generator=generator).flatten().to(violation.device)
        return rows, cols

    def forward(self, embeddings, labels, ref_embeddings=None, ref_labels=None):
        emb, ref, _, pos, neg = _prepare(embeddings, labels, ref_embeddings, ref_labels)
        _require_positives(pos, "MarginLoss")
        sim = emb @ ref.T
        beta = self.beta.float()
        with torch.no_grad():
            v_pos = F.relu(beta + self.alpha - sim) * pos   # eq. 3
            v_neg = F.relu(sim - (beta - self.alpha)) * neg  # eq. 4
        pr, pc = self._select(v_pos, self.generator)
        nr, nc = self._select(v_neg, self.generator)
        self.last_num_pairs = len(pr) + len(nr)
        if self.last_num_pairs == 0:
            return (sim.sum() + beta) * 0.0  # keeps the graph (and DDP's parameter set) intact
        loss_pos = F.relu(self.alpha - (sim[pr, pc] - beta))   # y = +1
        loss_neg = F.relu(self.alpha + (sim[nr, nc] - beta))   # y = -1
        return torch.cat([loss_pos, loss_neg]).mean()
