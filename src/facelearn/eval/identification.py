"""Closed-set identification and the one-shot protocol's coverage metric (doppelganger paper §4.1, §4.2.5).

Test images are classified by cosine similarity to class prototypes (the mean L2-normalised embedding of each
class's enrolment images: all training images of a base class, the single image of a novel class). Coverage at
precision p: accept the test images most-confident first (confidence = the top cosine); coverage is the largest
fraction of test images that can be accepted while the precision of the accepted ones stays >= p. With
``finetune_iterations`` > 0 the one-shot benchmark also reports the paper's Table 6 setting (``finetuned_*``): a new
classifier over base + novel classes, initialised with the mean embeddings and trained alone.
"""

from __future__ import annotations

import math

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
    return _group_metrics(lambda e: e @ protos.T, embeddings, labels, enrol, groups, precisions, "")


def _group_metrics(score, embeddings: torch.Tensor, labels: torch.Tensor, enrol: torch.Tensor,
                   groups: dict[str, torch.Tensor], precisions, prefix: str) -> dict[str, float]:
    """top-1 and coverage@precision of each group's test (non-enrolment) images; ``score`` maps their embeddings
    to class scores, the top score being the confidence."""
    out: dict[str, float] = {}
    for name, mask in groups.items():
        test = mask & ~enrol
        if not test.any():
            continue
        conf, pred = score(embeddings[test]).max(1)
        correct = (pred == labels[test]).numpy()
        out[f"{name}/{prefix}top1"] = float(correct.mean())
        for p in precisions:
            out[f"{name}/{prefix}coverage@{100 * p:g}"] = coverage_at_precision(conf.numpy(), correct, p)
    return out


def finetune_classifier(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int, iterations: int = 500,
                        lr: tuple[float, float] = (1e-3, 1e-4), classes_per_batch: int = 81, scale: float = 16.0,
                        seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The doppelganger paper's Table 6 stage: a new L2-softmax classifier over all (base + novel) classes, its
    weights initialised with each class's mean embedding, bias 0, trainable scale α (initial 16); only this layer is
    trained (the network is frozen, so training on the enrolment images' fixed embeddings is the same), for
    ``iterations`` steps of ``classes_per_batch`` classes with one random image each (N_r = N_c), the learning rate
    decaying from ``lr[0]`` to ``lr[1]`` (cosine), Nesterov SGD with momentum 0.9. Returns (W, b, α)."""
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(embeddings.float(), dim=1)
    weight = torch.nn.Parameter(class_prototypes(emb, labels, num_classes).clone())
    bias = torch.nn.Parameter(torch.zeros(num_classes))
    alpha = torch.nn.Parameter(torch.tensor(float(scale)))
    opt = torch.optim.SGD([weight, bias, alpha], lr=lr[0], momentum=0.9, nesterov=True)
    by_class = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
    present = torch.tensor([c for c in range(num_classes) if len(by_class[c])])
    k = min(classes_per_batch, len(present))
    for it in range(iterations):
        for group in opt.param_groups:
            group["lr"] = lr[1] + (lr[0] - lr[1]) * 0.5 * (1 + math.cos(math.pi * it / max(1, iterations)))
        classes = present[torch.randperm(len(present), generator=g)[:k]]
        idx = torch.stack([by_class[c][torch.randint(len(by_class[c]), (1,), generator=g)][0] for c in classes.tolist()])
        logits = F.linear(alpha * emb[idx], weight, bias)
        loss = F.cross_entropy(logits, labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return weight.detach(), bias.detach(), alpha.detach()


def classifier_identification_metrics(embeddings: torch.Tensor, labels: torch.Tensor, enrol: torch.Tensor,
                                      groups: dict[str, torch.Tensor], precisions=(0.99, 0.999),
                                      iterations: int = 500, seed: int = 0) -> dict[str, float]:
    """Like ``identification_metrics``, but test images are classified by the fine-tuned classifier
    (``finetune_classifier`` on the enrolment images); confidence = the top softmax probability."""
    num_classes = int(labels.max()) + 1
    weight, bias, alpha = finetune_classifier(embeddings[enrol], labels[enrol], num_classes, iterations, seed=seed)
    emb = F.normalize(embeddings.float(), dim=1)
    return _group_metrics(lambda e: F.linear(alpha * e, weight, bias).softmax(1), emb, labels, enrol, groups,
                          precisions, "finetuned_")
