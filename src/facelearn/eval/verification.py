"""Verification metrics from pair scores: 10-fold accuracy (insightface protocol), ROC AUC and TAR@FAR.

Scores are similarities (higher = more likely the same person): cosine by default, IDA scores when configured.

* **k-fold accuracy**: for every fold, the threshold is the one that maximises accuracy on the *other* folds (all
  midpoints between consecutive distinct scores are candidates, so the best threshold is found exactly rather than
  on insightface's 0.01 distance grid); the fold's accuracy is measured at that threshold. Reported as mean ± std
  (population std, like numpy/insightface) over folds, plus the mean best threshold.
* **TAR@FAR**: from the ROC of all pairs; the threshold is the smallest score that accepts at most FAR of the
  negatives. A FAR needs at least ``1 / FAR`` negative pairs to be resolved; below that it is reported as n/a (NaN)
  rather than a number the data cannot support.
* **AUC**: area under the ROC (ties handled as half, i.e. the Mann-Whitney statistic).
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_FARS = (1e-1, 1e-2, 1e-3, 1e-4)


def _best_threshold(scores: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """Threshold maximising accuracy of ``score >= t``; returns (threshold, accuracy)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], issame[order]
    n_pos = y.sum()
    # Accepting the top j pairs (j = 0..n): TP = cumsum(y), TN = (#neg) - (j - TP).
    tp = np.r_[0, np.cumsum(y)]
    j = np.arange(len(s) + 1)
    correct = tp + (len(s) - n_pos) - (j - tp)
    # Only cut between distinct scores (a threshold cannot separate tied pairs).
    valid = np.r_[True, s[1:] != s[:-1], True] if len(s) else np.array([True])
    correct = np.where(valid, correct, -1)
    best = int(np.argmax(correct))
    if best == 0:
        t = s[0] + 1e-6 if len(s) else 0.0
    elif best == len(s):
        t = s[-1] - 1e-6
    else:
        t = 0.5 * (s[best - 1] + s[best])
    return float(t), float(correct[best]) / max(len(s), 1)


def fold_accuracies(scores: np.ndarray, issame: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of each fold at the threshold chosen on the other folds, and those thresholds (fold order: sorted
    fold ids). Two scorers on one benchmark pair by fold: their per-fold differences give a paired spread."""
    scores, issame, folds = np.asarray(scores, np.float64), np.asarray(issame, bool), np.asarray(folds)
    accs, thresholds = [], []
    for f in np.unique(folds):
        test = folds == f
        t, _ = _best_threshold(scores[~test], issame[~test])
        accs.append(float(((scores[test] >= t) == issame[test]).mean()))
        thresholds.append(t)
    return np.array(accs), np.array(thresholds)


def kfold_accuracy(scores: np.ndarray, issame: np.ndarray, folds: np.ndarray) -> dict[str, float]:
    accs, thresholds = fold_accuracies(scores, issame, folds)
    return {"accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
            "threshold": float(np.mean(thresholds))}


def roc_auc(scores: np.ndarray, issame: np.ndarray) -> float:
    scores, issame = np.asarray(scores, np.float64), np.asarray(issame, bool)
    n_pos, n_neg = issame.sum(), (~issame).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    return float((ranks[issame].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (vectorised: IJB-C's 15.7M pairs in one sort)."""
    order = np.argsort(x, kind="stable")
    sx = x[order]
    starts = np.r_[0, np.flatnonzero(sx[1:] != sx[:-1]) + 1] if len(x) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(x)] - 1
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(0.5 * (starts + ends) + 1, ends - starts + 1)
    return ranks


def tar_at_far(scores: np.ndarray, issame: np.ndarray, far: float) -> float:
    """True accept rate at the threshold accepting at most ``far`` of the negatives; NaN when unsupported."""
    return tar_at_fars(scores, issame, (far,))[far]


def tar_at_fars(scores: np.ndarray, issame: np.ndarray, fars) -> dict[float, float]:
    """``tar_at_far`` at several FARs from one sort of the negatives."""
    scores, issame = np.asarray(scores, np.float64), np.asarray(issame, bool)
    neg = np.sort(scores[~issame])[::-1]
    pos = scores[issame]
    out: dict[float, float] = {}
    for far in fars:
        if len(pos) == 0 or len(neg) * far < 1:
            out[far] = float("nan")
            continue
        k = int(math.floor(len(neg) * far + 1e-9))  # negatives we may accept
        # Accept s > neg[k] (strictly above the (k+1)-th highest negative): at most k negatives pass.
        threshold = neg[k] if k < len(neg) else -np.inf
        out[far] = float((pos > threshold).mean())
    return out


def roc_points(scores: np.ndarray, issame: np.ndarray, max_points: int = 200) -> dict[str, list[float]]:
    """The ROC curve (FAR, TAR at every distinct threshold, highest first), thinned to at most ``max_points``
    points (the first and last always kept), for plots."""
    scores, issame = np.asarray(scores, np.float64), np.asarray(issame, bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], issame[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # last index of each distinct score
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    far = np.r_[0.0, fp / max(1, (~y).sum())]
    tar = np.r_[0.0, tp / max(1, y.sum())]
    keep = np.unique(np.linspace(0, len(far) - 1, min(max_points, len(far))).round().astype(int))
    return {"far": far[keep].tolist(), "tar": tar[keep].tolist()}


def verification_metrics(scores: np.ndarray, issame: np.ndarray, folds: np.ndarray,
                         fars: tuple[float, ...] = DEFAULT_FARS) -> dict[str, float]:
    out = kfold_accuracy(scores, issame, folds)
    out["auc"] = roc_auc(scores, issame)
    out.update({f"tar@far={far:g}": tar for far, tar in tar_at_fars(scores, issame, fars).items()})
    return out
