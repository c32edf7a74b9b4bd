"""Pair losses against hand-computed values on 2-D points, and against pytorch-metric-learning where we delegate
or where our version must coincide.

Fixture: class 0 at 0° and 30°, class 1 at 90° and 120° on the unit circle (norms differ: losses normalise).
Chord lengths: 30° -> 2 sin 15° = 0.517638, 60° -> 1.0, 90° -> 1.414214, 120° -> 1.732051.
"""

import math

import pytest
import torch
from pytorch_metric_learning import distances, losses as pml_losses

from facelearn.nn.pair_losses import ContrastiveLoss, LiftedStructureLoss, MarginLoss, NPairsLoss, TripletLoss


def points(degrees, scale=(1.0, 2.0, 0.5, 3.0)):
    rad = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return (torch.stack([torch.cos(rad), torch.sin(rad)], 1) * torch.tensor(scale, dtype=torch.float64)[:, None]
            ).float()


X = points([0.0, 30.0, 90.0, 120.0])
Y = torch.tensor([0, 0, 1, 1])


def test_contrastive_by_hand():
    # Positives: d = 0.517638 each (pulled, pos_margin 0). Negatives: d in {1.414, 1.732, 1.0, 1.414} >= margin 1:
    # zero loss. pml averages each part over its non-zero terms: 0.517638 + 0.
    assert ContrastiveLoss()(X, Y).item() == pytest.approx(0.517638, abs=1e-5)
    # margin 1.5 activates the 60° (d = 1.0) and 90° (d = 1.414) negatives: mean(0.5, 0.085786, 0.085786) ... the
    # ordered pairs (i, j) and (j, i) both count: negatives (a0,b0) 0.085786, (a1,b0) 0.5, (a1,b1) 0.085786, x2.
    expected = 0.517638 + (0.085786 + 0.5 + 0.085786) / 3
    assert ContrastiveLoss(neg_margin=1.5)(X, Y).item() == pytest.approx(expected, abs=1e-5)


def test_triplet_by_hand_zero_violation_and_selections():
    # margin 0.2: the hardest triplet is d(a,p) - d(a,n) + m = 0.517638 - 1.0 + 0.2 < 0: no violation.
    for sel in ("all", "hard", "semihard"):
        assert TripletLoss(margin=0.2, selection=sel)(X, Y).item() == pytest.approx(0.0, abs=1e-7)
    # margin 0.6: only (a1, a0, b0) and (b0, b1, a1) violate, by 0.517638 - 1 + 0.6 = 0.117638.
    assert TripletLoss(margin=0.6, selection="all")(X, Y).item() == pytest.approx(0.117638, abs=1e-5)
    # batch-hard: the hardest negative of a1 is b0 and of b0 is a1 -> the same two triplets.
    assert TripletLoss(margin=0.6, selection="hard")(X, Y).item() == pytest.approx(0.117638, abs=1e-5)


def test_npairs_by_hand_and_equals_pml():
    # anchors a0 (positive a1), b0 (positive b1); logits are cosines (scale 1):
    # a0: [cos 30, cos 120] -> log(1 + e^(-0.5 - 0.866025)) = 0.227236
    # b0: [cos 30, cos 60]  -> log(1 + e^(0.5 - 0.866025))  = 0.526777
    loss = NPairsLoss(scale=1.0)(X, Y)
    assert loss.item() == pytest.approx((0.227236 + 0.526777) / 2, abs=1e-5)
    pml = pml_losses.NPairsLoss(distance=distances.DotProductSimilarity(normalize_embeddings=True))
    assert loss.item() == pytest.approx(pml(X, Y).item(), abs=1e-6)
    torch.manual_seed(0)
    emb, lab = torch.randn(24, 8), torch.arange(12).repeat_interleave(2)
    assert NPairsLoss(scale=1.0)(emb, lab).item() == pytest.approx(pml(emb, lab).item(), abs=1e-5)


def test_npairs_with_references_uses_queue_negatives():
    # probe a0 against references [a1 (own class), b0, b1]: CE over [cos 30, cos 90, cos 120]
    ref, ref_lab = X[1:], Y[1:]
    loss = NPairsLoss(scale=1.0)(X[:1], Y[:1], ref, ref_lab)
    expected = -math.log(math.exp(0.866025) / (math.exp(0.866025) + math.exp(0.0) + math.exp(-0.5)))
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_lifted_equals_pml_and_scale_gets_gradient():
    torch.manual_seed(1)
    emb, lab = torch.randn(16, 6), torch.arange(4).repeat_interleave(4)
    ours = LiftedStructureLoss(neg_margin=1.0, scale=1.0)(emb, lab)
    pml = pml_losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0,
                                         distance=distances.LpDistance(normalize_embeddings=True))(emb, lab)
    assert ours.item() == pytest.approx(pml.item(), rel=1e-5)
    loss_fn = LiftedStructureLoss(scale=12.0, learnable_scale=True)
    loss_fn(emb, lab).backward()
    assert loss_fn.scale.grad is not None and loss_fn.scale.grad.abs() > 0


def test_lifted_by_hand_single_pair():
    # one positive pair (a0, a1) and one negative b at 90° from a0 and 60° from a1, scale 1, margin 1:
    # J = log(e^(1 - 1.414214) + e^(1 - 1.0)) + 0.517638 = log(0.660790 + 1) + 0.517638 = 1.024988
    emb = points([0.0, 30.0, 90.0], scale=(1.0, 1.0, 1.0))
    lab = torch.tensor([0, 0, 1])
    expected = (math.log(math.exp(1 - math.sqrt(2)) + 1.0) + 0.517638) ** 2 / 2
    assert LiftedStructureLoss()(emb, lab).item() == pytest.approx(expected, abs=1e-5)


def test_margin_loss_by_hand():
    # α = 0.1, β = 0.5: positives (cos 30 = 0.866) satisfy S >= β + α: v_pos = 0. Negatives violate when
    # S > β - α = 0.4: only (a1, b0) with cos 60 = 0.5, v = 0.1. a1 and b0 each select it: loss = 0.1 + 0 = 0.1.
    fn = MarginLoss(alpha=0.1, beta=0.5)
    loss = fn(X, Y)
    assert loss.item() == pytest.approx(0.1, abs=1e-6) and fn.last_num_pairs == 2
    loss.backward()
    assert fn.beta.grad.item() == pytest.approx(-1.0)  # d/dβ relu(α + S - β) = -1 on both selected pairs


def test_margin_loss_zero_violation():
    fn = MarginLoss(alpha=0.1, beta=0.7)  # negatives need S > 0.6, positives S < 0.8: none
    loss = fn(X, Y)
    loss.backward()
    assert loss.item() == 0.0 and fn.last_num_pairs == 0 and fn.beta.grad.item() == 0.0


def test_margin_selection_probability_is_proportional_to_violation():
    gen = torch.Generator().manual_seed(0)
    v = torch.tensor([[0.1, 0.3, 0.0]]).repeat(4000, 1)
    rows, cols = MarginLoss._select(v, gen)
    freq = torch.bincount(cols, minlength=3).float() / len(cols)
    assert len(rows) == 4000 and freq[2] == 0 and freq[1] == pytest.approx(0.75, abs=0.03)
    rows, _ = MarginLoss._select(torch.zeros(3, 4), gen)
    assert len(rows) == 0  # "one or none"


def test_references_and_self_pair_exclusion():
    # Scored against itself, a sample is never its own positive: with unique labels there are no positives.
    with pytest.raises(ValueError, match="at least 2 samples of some class"):
        ContrastiveLoss()(X, torch.arange(4))
    for fn in (TripletLoss(), NPairsLoss(), LiftedStructureLoss(), MarginLoss()):
        with pytest.raises(ValueError, match="M-per-class"):
            fn(X, torch.arange(4))
    # With references, the reference of the same label is the positive (SST: probe vs its gallery feature).
    loss = ContrastiveLoss()(X[[0, 2]], Y[[0, 2]], X[[1, 3]], Y[[1, 3]])
    assert loss.item() == pytest.approx(0.517638, abs=1e-5)
    with pytest.raises(ValueError, match="both"):
        ContrastiveLoss()(X, Y, ref_embeddings=X)


def test_squared_contrastive_and_triplet_by_hand():
    """2-D points at known distances: the squared forms use d², the default forms d."""
    import math

    import torch

    from facelearn.nn.pair_losses import ContrastiveLoss, TripletLoss
    # a = (1, 0), p = (0, 1): d(a, p) = sqrt(2); n = (-1, 0): d(a, n) = 2, d(p, n) = sqrt(2)
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    # contrastive, pos_margin 0, neg_margin 2.5: positive pair (a,p): d; negatives (a,n): 2.5 - 2, (p,n): 2.5 - sqrt2
    plain = ContrastiveLoss(0.0, 2.5)(emb, labels)
    squared = ContrastiveLoss(0.0, 2.5, squared=True)(emb, labels)
    # pml averages positives and negatives separately over their non-zero terms, then sums the two
    assert float(plain) == pytest.approx(math.sqrt(2) + ((2.5 - 2) + (2.5 - math.sqrt(2))) / 2, rel=1e-5)
    assert float(squared) == pytest.approx(2.0 + ((2.5 - 4) * 0 + (2.5 - 2)) / 1, rel=1e-5)
    # triplet (a, p, n) and (p, a, n), margin 1: plain sqrt2 - 2 + 1 and sqrt2 - sqrt2 + 1; squared 2 - 4 + 1 < 0, 2 - 2 + 1
    t_plain = TripletLoss(margin=1.0, selection="all")(emb, labels)
    t_sq = TripletLoss(margin=1.0, selection="all", squared=True)(emb, labels)
    assert float(t_plain) == pytest.approx(((math.sqrt(2) - 1) + 1) / 2, rel=1e-5)
    assert float(t_sq) == pytest.approx(1.0, rel=1e-5)
