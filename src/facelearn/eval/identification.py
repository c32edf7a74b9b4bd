"""Closed-set identification and the one-shot protocol's coverage metric (doppelganger paper §4.1, §4.2.5).

Test images are classified by cosine similarity to class prototypes (the mean L2-normalised embedding of each
class's enrolment images: all training images of a base class, the single image of a novel class). Coverage at
precision p: accept the test images most-confident first (confidence = the top cosine); coverage is the largest
fraction of test images that can be accepted while the precision of the accepted ones stays >= p.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def coverage_at_precision(confidence: np.ndarray, correct: np.ndarray, precision: float) -> float:
    """Largest k/N such that the k most confident predictions have precision >= ``precision``."""
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, bool)
    if len(correct) == 0:
        return float("nan")
    order = np.argsort(-confidence, kind="stable")
    hits = np.cumsum(correct[order])
    k = np.arange(1, len(correct) + 1)
    ok = hits >= precision * k - 1e-12
    return float(k[ok].max() / len(correct)) if ok.any() else 0.0


def class_prototypes(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean embedding per class, L2-normalised (classes without images get a zero row)."""
    protos = torch.zeros(num_classes, embeddings.shape[1], dtype=embeddings.dtype)
    protos.index_add_(0, labels, embeddings)
    return F.normalize(protos, dim=1)


def identification_metrics(embeddings: torch.Tensor, labels: torch.Tensor, enrol: torch.Tensor,
                           groups: dict[str, torch.Tensor], precisions=(0.99, 0.999)) -> dict[str, float]:
    """Classify every non-enrolment image against all class prototypes; metrics per group of test images."""
    num_classes = int(labels.max()) + 1
    protos = class_prototypes(embeddings[enrol], labels[enrol], num_classes)
    out: dict[str, float] = {}
    for name, mask in groups.items():
        test = mask & ~enrol
        if not test.any():
            continue
        sims = embeddings[test] @ protos.T
        conf, pred = sims.max(1)
        correct = (pred == labels[test]).numpy()
        out[f"{name}/top1"] = float(correct.mean())
        for p in precisions:
            out[f"{name}/coverage@{100 * p:g}"] = coverage_at_precision(conf.numpy(), correct, p)
    return out
