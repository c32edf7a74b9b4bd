"""Margin-softmax heads: one head scores features against prototypes, the margin is pluggable.

Every head maps ``(features (N, D), targets (N,), prototypes (C, D) | None) -> logits (N, C)``, with the margin
already applied at each sample's target column and the scale applied, so the training loss is plain cross-entropy.
``targets`` are *column indices into the prototypes*: for conventional training that is the class label, for SST it
is the column of the probe's own gallery feature, for a Partial FC shard ``-1`` where the sample's class is held by
another rank (no margin in that row). Prototypes are the head's own weights unless the caller passes
them (SST passes the gallery queue), so there is one implementation and several callers (DESIGN.md).

Margins, with θ the angle between the L2-normalised feature and its target prototype:

* ``softmax``      plain FC ``W x + b`` (no normalisation, no margin).
* ``NormFace``     L2-softmax / NormFace (Wang et al. 2017; Ranjan et al. 2017): ``s cos θ``.
* ``CosFace``      AM-softmax / CosFace (Wang et al. 2018): ``s (cos θ - m)``.
* ``ArcFace``      additive angular margin (Deng et al. 2019): ``s cos(θ + m)``; past ``θ + m > π`` the target
                   logit would increase again with θ, so the insightface fallback ``cos θ - m sin(m)`` keeps it
                   monotonic.
* ``SphereFace``   multiplicative angular margin (Liu et al. 2017): ``ψ(θ) = (-1)^k cos(mθ) - 2k`` for
                   ``θ ∈ [kπ/m, (k+1)π/m]``, blended with ``cos θ`` as ``(λ cos θ + ψ) / (1 + λ)`` where λ anneals
                   from ``lambda_base`` to ``lambda_min`` (the original paper's recipe to make it trainable).
* ``CombinedMargin`` insightface's ``s (cos(m1 θ + m2) - m3)``; (1, 0.5, 0) is ArcFace, (1, 0, 0.35) CosFace.

Which prototypes enter the softmax is a separate, optional part (``selection``, ``facelearn.nn.selection``): e.g.
DP-softmax's dominant prototypes, with any of these margins.

All cosine/angle arithmetic runs in float32 with autocast off and the cosine clamped away from ±1 before ``acos``,
so there is no NaN (value or gradient) at cos = ±1, also when the surrounding step runs in bf16/fp16.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from facelearn.nn.selection import DominantPrototypes

# acos'(x) = -1/sqrt(1-x^2) is infinite at |x| = 1; this keeps θ and its gradient finite.
_COS_EPS = 1e-6


class HeadLoss(NamedTuple):
    """What a classifier gives the joint objective: ``loss`` (mean cross-entropy), ``acc`` (top-1), ``scores`` (the
    logits, detached, for mining), ``score_labels`` (the class of each column; None: column c is class c) and
    ``score_rows`` (the class of each row; None: the rows are the caller's samples, in order). A sharded classifier
    (``facelearn.nn.partial_fc``) scores the whole gathered batch against its own columns, hence the last two."""

    loss: torch.Tensor
    acc: torch.Tensor
    scores: torch.Tensor
    score_labels: torch.Tensor | None = None
    score_rows: torch.Tensor | None = None


def cosine_scores(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every feature (N, D) with every prototype (C, D) in float32."""
    with torch.autocast(device_type=features.device.type, enabled=False):
        return F.linear(F.normalize(features.float(), dim=1), F.normalize(prototypes.float(), dim=1))


class MarginHead(nn.Module):
    """Base class: owns optional prototypes (C, D) and turns cosines into margin logits.

    Args:
        embedding_size: feature dimension D.
        num_classes: number of own prototypes C; ``0`` for a head that is always given prototypes (SST).
        scale: the logit scale s.
        learnable_scale: make s a trainable parameter (as in L2-softmax of the doppelganger paper §4.2.5).
        selection: which prototypes enter each softmax (``facelearn.nn.selection``; None: all of them).
    """

    def __init__(self, embedding_size: int, num_classes: int = 0, scale: float = 64.0,
                 learnable_scale: bool = False, selection: nn.Module | None = None) -> None:
        super().__init__()
        self.selection = selection
        if embedding_size <= 0:
            raise ValueError(f"head.embedding_size must be positive, got {embedding_size}")
        if num_classes < 0:
            raise ValueError(f"head.num_classes must be >= 0, got {num_classes}")
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        if num_classes:
            self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
            nn.init.normal_(self.weight, std=0.01)
        else:
            self.register_parameter("weight", None)
        if learnable_scale:
            self.scale = nn.Parameter(torch.tensor(float(scale)))
        else:
            self.register_buffer("scale", torch.tensor(float(scale)), persistent=False)

    def prototypes(self, prototypes: torch.Tensor | None) -> torch.Tensor:
        if prototypes is not None:
            return prototypes
        if self.weight is None:
            raise ValueError(f"{type(self).__name__} has num_classes=0 (no own prototypes): pass prototypes=")
        return self.weight

    def scores(self, features: torch.Tensor, prototypes: torch.Tensor | None = None) -> torch.Tensor:
        """Similarity of features to prototypes without margin or scale (what mining reads)."""
        return cosine_scores(features, self.prototypes(prototypes))

    def target_logit(self, cos_target: torch.Tensor) -> torch.Tensor:
        """Margin-modified cosine for the target column (float32 in, float32 out)."""
        raise NotImplementedError

    def forward(self, features: torch.Tensor, targets: torch.Tensor,
                prototypes: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.scores(features, prototypes)
        if targets.shape != (features.shape[0],):
            raise ValueError(f"targets must have shape ({features.shape[0]},), got {tuple(targets.shape)}")
        with torch.autocast(device_type=cos.device.type, enabled=False):
            targets = targets.long()
            here = (targets >= 0).unsqueeze(1)  # -1: the class is not among these prototypes (Partial FC shard)
            idx = targets.clamp(min=0).unsqueeze(1)
            cos_t = cos.gather(1, idx).clamp(-1.0, 1.0)
            margin = torch.where(here, self.target_logit(cos_t), cos_t)
            logits = cos.scatter(1, idx, margin) * self.scale.float()
            return self.restrict(logits, cos, targets)

    def cross_entropy(self, features: torch.Tensor, targets: torch.Tensor, prototypes: torch.Tensor | None = None,
                      exclude: torch.Tensor | None = None) -> HeadLoss:
        """Cross-entropy of the margin logits; ``exclude`` (N, C) bool: columns left out of a row's softmax."""
        logits = self(features, targets, prototypes=prototypes)
        if exclude is not None:
            logits = logits.masked_fill(exclude, float("-inf"))
        return HeadLoss(F.cross_entropy(logits, targets), (logits.argmax(1) == targets).float().mean(),
                        logits.detach())

    def restrict(self, logits: torch.Tensor, cos: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Columns outside the selection get -inf (no loss, no gradient); without a selection all take part."""
        if self.selection is None:
            return logits
        return logits.masked_fill(~self.selection(cos, targets.clamp(min=0)), float("-inf"))

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, scale={float(self.scale):g}"


class Softmax(MarginHead):
    """Plain softmax classifier: ``W x + b`` on unnormalised features (the conventional baseline). No prototype
    selection (its logits are not cosines)."""

    def __init__(self, embedding_size: int, num_classes: int = 0, bias: bool = True) -> None:
        super().__init__(embedding_size, num_classes, scale=1.0)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5)) if self.weight is not None else None
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias and num_classes else None

    def scores(self, features: torch.Tensor, prototypes: torch.Tensor | None = None) -> torch.Tensor:
        # Mining and SST still compare directions, so scores stay cosine even for the plain FC head.
        return cosine_scores(features, self.prototypes(prototypes))

    def forward(self, features: torch.Tensor, targets: torch.Tensor,
                prototypes: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(device_type=features.device.type, enabled=False):
            bias = self.bias if prototypes is None else None
            return F.linear(features.float(), self.prototypes(prototypes).float(), bias)


class L2Softmax(Softmax):
    """L2-softmax (Ranjan, Castillo, Chellappa 2017), as the doppelganger paper uses it ([30], §4.2.5): the feature is
    L2-normalised and scaled by α (trainable, initialised at 16), then classified by a plain FC layer whose weights
    are **not** normalised, with a bias: ``logits = W (α x / ‖x‖) + b``. (NormFace, ``head=normface``, normalises the
    weights too and has no bias.) With given prototypes (SST) there is no bias."""

    def __init__(self, embedding_size: int, num_classes: int = 0, scale: float = 16.0,
                 learnable_scale: bool = True, bias: bool = True) -> None:
        super().__init__(embedding_size, num_classes, bias)
        if learnable_scale:
            self.scale = nn.Parameter(torch.tensor(float(scale)))
        else:
            self.register_buffer("scale", torch.tensor(float(scale)), persistent=False)

    def forward(self, features: torch.Tensor, targets: torch.Tensor,
                prototypes: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(device_type=features.device.type, enabled=False):
            x = F.normalize(features.float(), dim=1) * self.scale.float()
            bias = self.bias if prototypes is None else None
            return F.linear(x, self.prototypes(prototypes).float(), bias)


class NormFace(MarginHead):
    """NormFace (Wang et al. 2017): features and weights normalised, ``s cos θ`` (no margin, no bias); the scale
    can be trainable (``learnable_scale``)."""

    def __init__(self, embedding_size: int, num_classes: int = 0, scale: float = 30.0,
                 learnable_scale: bool = False, selection: nn.Module | None = None) -> None:
        super().__init__(embedding_size, num_classes, scale, learnable_scale, selection)

    def target_logit(self, cos_target: torch.Tensor) -> torch.Tensor:
        return cos_target


class CosFace(MarginHead):
    """AM-softmax / CosFace: ``s (cos θ - m)``."""

    def __init__(self, embedding_size: int, num_classes: int = 0, scale: float = 64.0, margin: float = 0.35,
                 learnable_scale: bool = False, selection: nn.Module | None = None) -> None:
        super().__init__(embedding_size, num_classes, scale, learnable_scale, selection)
        self.margin = float(margin)

    def target_logit(self, cos_target: torch.Tensor) -> torch.Tensor:
        return cos_target - self.margin


class CombinedMargin(MarginHead):
    """insightface's combined margin ``s (cos(m1 θ + m2) - m3)``.

    Past ``m1 θ + m2 > π`` the target logit would grow again with θ, so a monotonic fallback ``cos θ - m3 - c``
    is used there: for m1 = 1 it is insightface's ``c = m2 sin(m2)`` (the "usual" ArcFace fallback); for m1 > 1
    ``c = 1 + cos θ_L`` with ``θ_L = (π - m2) / m1``, which joins the margin curve continuously at θ_L.
    """

    def __init__(self, embedding_size: int, num_classes: int = 0, scale: float = 64.0, m1: float = 1.0,
                 m2: float = 0.5, m3: float = 0.0, learnable_scale: bool = False,
                 selection: nn.Module | None = None) -> None:
        super().__init__(embedding_size, num_classes, scale, learnable_scale, selection)
        if m1 < 1:
            raise ValueError(f"head.m1 must be >= 1 (multiplicative angular margin), got {m1}")
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)
        self.theta_limit = (math.pi - self.m2) / self.m1
        self.fallback_shift = (math.sin(self.m2) * self.m2 if self.m1 == 1.0
                               else 1.0 + math.cos(self.theta_limit))

    def target_logit(self, cos_target: torch.Tensor) -> torch.Tensor:
        theta = torch.acos(cos_target.clamp(-1 + _COS_EPS, 1 - _COS_EPS))
        margin_cos = torch.cos(self.m1 * theta + self.m2) - self.m3
        fallback = cos_target - self.fallback_shift - self.m3
        return torch.where(theta <= self.theta_limit, margin_cos, fallback)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", m1={self.m1:g}, m2={self.m2:g}, m3={self.m3:g}"


class ArcFace(CombinedMargin):
    """ArcFace: ``s cos(θ + m)`` with the insightface fallback ``cos θ - m sin m`` where ``θ + m > π``."""

    def __init__(self, embedding_size: int, num_classes: int = 0, scale: float = 64.0, margin: float = 0.5,
                 learnable_scale: bool = False, selection: nn.Module | None = None) -> None:
        super().__init__(embedding_size, num_classes, scale, m1=1.0, m2=margin, m3=0.0,
                         learnable_scale=learnable_scale, selection=selection)
        self.margin = float(margin)


class SphereFace(MarginHead):
    """SphereFace (A-softmax) multiplicative angular margin on normalised features.

    ``ψ(θ) = (-1)^k cos(mθ) - 2k`` on ``θ ∈ [kπ/m, (k+1)π/m]`` (monotonically decreasing on [0, π]); the target
    logit is ``s (λ cos θ + ψ(θ)) / (1 + λ)`` with ``λ = max(lambda_min, lambda_base (1 + gamma t)^-power)`` at
    training step t, the annealing of the original paper. The step counter is a buffer so resuming continues it.
    """

    def __init__(self, embedding_size: int, num_classes: int = 0, scale: float = 30.0, margin: int = 4,
                 lambda_base: float = 1000.0, lambda_min: float = 5.0, gamma: float = 0.12, power: float = 1.0,
                 learnable_scale: bool = False, selection: nn.Module | None = None) -> None:
        super().__init__(embedding_size, num_classes, scale, learnable_scale, selection)
        if int(margin) != margin or margin < 1:
            raise ValueError(f"head.margin for SphereFace must be a positive integer, got {margin}")
        self.margin = int(margin)
        self.lambda_base, self.lambda_min, self.gamma, self.power = lambda_base, lambda_min, gamma, power
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def lam(self) -> float:
        return max(self.lambda_min, self.lambda_base * (1.0 + self.gamma * float(self.step)) ** (-self.power))

    def psi(self, cos_target: torch.Tensor) -> torch.Tensor:
        theta = torch.acos(cos_target.clamp(-1 + _COS_EPS, 1 - _COS_EPS))
        k = torch.floor(self.margin * theta / math.pi).clamp(max=self.margin - 1)
        sign = 1.0 - 2.0 * torch.remainder(k, 2)
        return sign * torch.cos(self.margin * theta) - 2.0 * k

    def target_logit(self, cos_target: torch.Tensor) -> torch.Tensor:
        lam = self.lam
        if self.training:
            self.step += 1
        return (lam * cos_target + self.psi(cos_target)) / (1.0 + lam)


def DPSoftmax(embedding_size: int, num_classes: int = 0, scale: float = 30.0, margin: float = 0.35,
              num_dominant: int = 256, learnable_scale: bool = False) -> CosFace:
    """DP-softmax as the SST supplementary uses it: AM-softmax (CosFace) + ``DominantPrototypes`` selection
    (``head=dp_softmax``; any other margin: ``head=<margin> +head/selection=dominant``). Kept as a name because
    checkpoints of earlier runs store this target."""
    return CosFace(embedding_size, num_classes, scale, margin, learnable_scale,
                   selection=DominantPrototypes(num_dominant))
