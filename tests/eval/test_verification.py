"""Verification metrics on hand-computed fixtures."""

import math

import numpy as np
import pytest

from facelearn.protocols.pairs import contiguous_folds
from facelearn.eval.verification import kfold_accuracy, roc_auc, tar_at_far, verification_metrics


def test_kfold_accuracy_by_hand():
    # fold 0: (0.9 same) (0.4 diff) (0.6 same); fold 1: (0.8 same) (0.7 diff) (0.2 diff)
    scores = np.array([0.9, 0.4, 0.6, 0.8, 0.7, 0.2])
    issame = np.array([1, 0, 1, 1, 0, 0], bool)
    folds = np.array([0, 0, 0, 1, 1, 1])
    m = kfold_accuracy(scores, issame, folds)
    # Fold 0 is tested at the threshold best on fold 1: 0.75 (accepts 0.8 only) -> 0.9 ok, 0.4 ok, 0.6 wrong: 2/3.
    # Fold 1 at the threshold best on fold 0: 0.5 -> 0.8 ok, 0.7 wrong, 0.2 ok: 2/3.
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["accuracy_std"] == pytest.approx(0.0)
    assert m["threshold"] == pytest.approx((0.75 + 0.5) / 2)


def test_auc_by_hand():
    scores = np.array([0.9, 0.4, 0.6, 0.8, 0.7, 0.2])
    issame = np.array([1, 0, 1, 1, 0, 0], bool)
    # positive > negative in 8 of 9 (pos, neg) combinations (0.6 < 0.7)
    assert roc_auc(scores, issame) == pytest.approx(8 / 9)
    assert roc_auc(np.array([0.5, 0.5]), np.array([True, False])) == pytest.approx(0.5)  # a tie counts half


def test_tar_at_far_by_hand_and_na():
    neg = np.round(np.arange(10) * 0.1, 1)  # 0.0 .. 0.9
    pos = np.array([0.85, 0.75, 0.95, 0.5])
    scores, issame = np.r_[pos, neg], np.r_[np.ones(4, bool), np.zeros(10, bool)]
    # FAR 0.1 of 10 negatives: accept at most 1 -> threshold above 0.8 -> positives 0.85, 0.95 pass.
    assert tar_at_far(scores, issame, 0.1) == pytest.approx(0.5)
    # 10 negatives cannot resolve FAR 1e-2: n/a, not a made-up number.
    assert math.isnan(tar_at_far(scores, issame, 0.01))
    m = verification_metrics(scores, issame, contiguous_folds(14, 2), fars=(0.1, 0.01))
    assert m["tar@far=0.1"] == pytest.approx(0.5) and math.isnan(m["tar@far=0.01"])


def test_perfect_and_inverted_scores():
    issame = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    folds = np.r_[contiguous_folds(50), contiguous_folds(50)]
    good = np.r_[np.linspace(0.6, 1, 50), np.linspace(-1, 0.4, 50)]
    assert kfold_accuracy(good, issame, folds)["accuracy"] == 1.0
    assert roc_auc(good, issame) == 1.0
    assert roc_auc(-good, issame) == 0.0


def test_contiguous_folds_match_kfold():
    # sklearn KFold(10) without shuffling: the first n % 10 folds get one extra element.
    f = contiguous_folds(23, 10)
    assert np.bincount(f).tolist() == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert (np.diff(f) >= 0).all()
