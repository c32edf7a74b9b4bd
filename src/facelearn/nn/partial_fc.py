"""Partial FC: a classifier whose prototypes are sharded over the DDP ranks, with sampled negative classes.

An et al., "Partial FC: Training 10 Million Identities on a Single Machine" (ICCVW 2021), as arcface_torch's
``PartialFC_V2`` does it. With C classes over W ranks, rank r holds the prototypes of classes
``[start_r, start_r + n_r)`` (n_r = C/W, the first C mod W ranks one more), so the weights, their gradients and
their optimiser state take 1/W of the memory of a replicated FC. Every step, on every rank:

1. the features (with autograd) and labels of all ranks are gathered: N_g rows;
2. the rank keeps the *positive* classes of the gathered batch that it holds and adds random other classes of its
   shard up to ``ceil(sample_rate * n_r)`` columns (positives are always kept, even beyond that number);
3. the margin head (any of ``facelearn.nn.heads`` with normalised prototypes) scores the N_g features against those
   columns: the margin goes to a row's target column where this rank holds the row's class, target -1 elsewhere;
4. the softmax cross-entropy runs over the union of every rank's columns: the row maximum and the sum of
   exponentials are all-reduced, so the loss is exactly the cross-entropy of one softmax over all sampled columns
   (with ``sample_rate=1``: the full classifier's loss, ``tests/nn/test_partial_fc.py`` checks it on 2 ranks).

Backward: the logits' gradient ``p - onehot`` stays on each rank; the shard's weight gradient is local (DDP is told
to ignore the shard, ``FaceModule.configure_model``); the gathered features' gradient is summed over the ranks'
shards and multiplied by W, because DDP then *averages* the backbone's gradients over the ranks — so the backbone
receives the same gradient as with a replicated FC, whose DDP average of per-rank mean losses is the global mean.
A learnable scale of the margin head (replicated, averaged by DDP) gets its shard's part x W for the same reason.

Known differences from a full FC: unsampled prototypes get no loss gradient, but weight decay and SGD momentum
still move them (as in arcface_torch); doppelganger mining sees the sampled columns only (the batch's own classes
always are, and a doppelganger-mined batch holds the confusable classes). Checkpoints hold the full (C, D) weight
(gathered at save time), so they load on any number of ranks and evaluate without the trainer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from facelearn.nn.heads import HeadLoss, MarginHead, Softmax

# Rows of the initial weights drawn per seeded block: the initialisation of class c does not depend on the number
# of ranks (the same seed gives the same prototypes on 1 or 8 ranks).
_INIT_BLOCK = 4096


def dist_state() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """(first class, number of classes) held by ``rank``: contiguous blocks, the first ``C mod W`` one larger."""
    base, extra = divmod(num_classes, world_size)
    return rank * base + min(rank, extra), base + int(rank < extra)


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """All ranks' rows of ``x`` concatenated in rank order (ranks may hold different numbers of rows); no autograd."""
    if dist_state()[1] == 1:
        return x
    return _GatherRows.apply(x, 1.0)


class _GatherRows(torch.autograd.Function):
    """All-gather of rows whose backward sums the gradient over the ranks and returns this rank's rows x ``scale``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        rank, world = dist_state()
        n = torch.tensor([x.shape[0]], device=x.device)
        sizes = [torch.zeros_like(n) for _ in range(world)]
        dist.all_gather(sizes, n)
        sizes = [int(s) for s in sizes]
        buf = x.new_zeros((max(sizes), *x.shape[1:]))  # all_gather needs equal shapes: pad to the largest
        buf[:x.shape[0]] = x
        parts = [torch.empty_like(buf) for _ in range(world)]
        dist.all_gather(parts, buf)
        ctx.sizes, ctx.rank, ctx.scale = sizes, rank, scale
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's shard contributed to every row's gradient
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]] * ctx.scale, None


def _all_reduce(x: torch.Tensor, op: Any = None) -> torch.Tensor:
    if dist_state()[1] > 1:
        dist.all_reduce(x, op=op or dist.ReduceOp.SUM)
    return x


class _ShardedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy over the union of every rank's columns.

    ``logits`` (N, S_r): this rank's columns; ``targets`` (N,): the target column here, -1 where another rank holds
    the row's class. loss_i = log Σ_ranks Σ_j e^{z_ij} − z_{i,y_i}, computed as max + log-sum-exp with the max and
    the sum all-reduced; the gradient of this rank's logits is (p − onehot) / N."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        row_max = _all_reduce(logits.max(dim=1).values, dist.ReduceOp.MAX)
        exp = (logits - row_max.unsqueeze(1)).exp()
        total = _all_reduce(exp.sum(dim=1))
        here = targets >= 0
        target_logit = torch.zeros_like(row_max)
        target_logit[here] = logits[here, targets[here]]
        target_logit = _all_reduce(target_logit)
        loss = (total.log() + row_max - target_logit).mean()
        ctx.save_for_backward(exp.div_(total.unsqueeze(1)), targets)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        prob, targets = ctx.saved_tensors
        grad_logits = prob.clone()
        here = torch.nonzero(targets >= 0).flatten()
        grad_logits[here, targets[here]] -= 1.0
        return grad_logits * (grad / prob.shape[0]), None


def _sharded_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Top-1 over all ranks' columns: a row is right where the rank holding its class has the global maximum there."""
    best, col = logits.max(dim=1)
    global_best = _all_reduce(best.clone(), dist.ReduceOp.MAX)
    right = ((targets >= 0) & (col == targets) & (best >= global_best)).float()
    return _all_reduce(right).clamp(max=1.0).mean()


class PartialFC(nn.Module):
    """Sharded, sampled classifier around a margin head (module docstring; ``classifier=partial_fc``).

    Args:
        margin: the margin head (``head=arcface|cosface|normface|combined|sphereface``) built with
            ``num_classes=0``: it supplies the margin and scale, this module the prototypes.
        num_classes: C, all training classes (over all ranks).
        sample_rate: fraction of each shard's classes in each step's softmax (positives always included); 1: all.
        seed: seed of the prototypes' initialisation (normal, std 0.01, as the heads); None: ``torch.initial_seed()``
            at construction (the run's ``seed`` after ``seed_everything``).

    The shard is allocated by :meth:`shard` (``FaceModule.configure_model`` calls it once the process group exists,
    before the optimiser is built) or when a checkpoint is loaded.
    """

    def __init__(self, margin: MarginHead, num_classes: int, sample_rate: float = 1.0, seed: int | None = None,
                 ) -> None:
        super().__init__()
        if not isinstance(margin, MarginHead) or isinstance(margin, Softmax):
            raise ValueError(f"classifier=partial_fc needs a normalised-prototype margin head (head=arcface, cosface, "
                             f"normface, combined, sphereface), got {type(margin).__name__}: softmax and l2softmax "
                             "have unnormalised weights and a bias")
        if margin.weight is not None:
            raise ValueError("classifier=partial_fc owns the prototypes: the margin head must have num_classes=0")
        if margin.selection is not None:
            raise ValueError("classifier=partial_fc samples its own columns: it does not combine with a prototype "
                             "selection (head.selection / head=dp_softmax)")
        if not 0 < sample_rate <= 1:
            raise ValueError(f"classifier.sample_rate={sample_rate}: expected a fraction in (0, 1]")
        if num_classes < 1:
            raise ValueError(f"classifier.num_classes={num_classes}: expected >= 1")
        self.margin = margin
        self.num_classes = int(num_classes)
        self.embedding_size = margin.embedding_size
        self.sample_rate = float(sample_rate)
        self.seed = int(torch.initial_seed() if seed is None else seed) % (2 ** 63)
        self.rank, self.world_size, self.class_start = 0, 1, 0
        self.weight = nn.Parameter(torch.empty(0, self.embedding_size))
        self.allocated = False
        self._register_load_state_dict_pre_hook(self._load_full_weight)
        # The margin's own parameters (a learnable scale) are replicated: each rank's gradient is its shard's part of
        # the total, and DDP averages; x world size makes that average the sum over the shards.
        for p in self.margin.parameters():
            p.register_hook(lambda grad: grad * self.world_size)

    # -- the shard ---------------------------------------------------------------------------------------------
    def shard(self, rank: int | None = None, world_size: int | None = None) -> None:
        """Allocate this rank's prototypes (default: the current process group's rank); a no-op if done already."""
        if rank is None or world_size is None:
            rank, world_size = dist_state()
        if self.allocated and (rank, world_size) == (self.rank, self.world_size):
            return
        if world_size > self.num_classes:
            raise ValueError(f"classifier=partial_fc: {self.num_classes} classes cannot be sharded over "
                             f"{world_size} ranks")
        start, count = shard_range(self.num_classes, rank, world_size)
        self.rank, self.world_size, self.class_start = rank, world_size, start
        self.weight = nn.Parameter(self._initial_rows(start, count).to(self.weight.device))
        self.allocated = True

    def _initial_rows(self, start: int, count: int) -> torch.Tensor:
        rows = []
        for block in range(start // _INIT_BLOCK, (start + count - 1) // _INIT_BLOCK + 1 if count else 0):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + block)
            first = block * _INIT_BLOCK
            n = min(_INIT_BLOCK, self.num_classes - first)
            full = torch.randn(n, self.embedding_size, generator=g) * 0.01
            lo, hi = max(start, first) - first, min(start + count, first + n) - first
            rows.append(full[lo:hi])
        return torch.cat(rows) if rows else torch.empty(0, self.embedding_size)

    @property
    def num_local(self) -> int:
        return self.weight.shape[0]

    @property
    def sharded(self) -> bool:
        """True when this rank holds only part of the prototypes."""
        return self.world_size > 1

    def sample(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(columns of the shard in this step's softmax, sorted; each label's column among them or -1).

        All positives of the shard are kept; random negatives fill up to ``ceil(sample_rate * n_r)`` columns."""
        local = labels - self.class_start
        here = (local >= 0) & (local < self.num_local)
        num_sample = math.ceil(self.sample_rate * self.num_local)
        if num_sample >= self.num_local:
            index = torch.arange(self.num_local, device=labels.device)
        else:
            priority = torch.rand(self.num_local, device=labels.device)
            priority[local[here]] = 2.0  # positives first
            positives = int(torch.unique(local[here]).numel())
            index = priority.topk(max(num_sample, positives)).indices.sort().values
        targets = torch.full_like(labels, -1)
        targets[here] = torch.searchsorted(index, local[here])
        return index, targets

    # -- the loss ----------------------------------------------------------------------------------------------
    def cross_entropy(self, features: torch.Tensor, targets: torch.Tensor, prototypes: torch.Tensor | None = None,
                      exclude: torch.Tensor | None = None) -> HeadLoss:
        """The joint objective's head term (``HeadLoss``): scores are the gathered batch's logits over this rank's
        sampled columns, with the class of every column (``score_labels``) and row (``score_rows``)."""
        if prototypes is not None or exclude is not None:
            raise ValueError("classifier=partial_fc scores against its own prototypes: it cannot take a method's "
                             "references (SST's gallery queue)")
        if not self.allocated:
            raise RuntimeError("PartialFC.shard() was not called (FaceModule.configure_model does it in training)")
        rank, world = dist_state()
        if (rank, world) != (self.rank, self.world_size):
            raise RuntimeError(f"PartialFC was sharded for rank {self.rank} of {self.world_size}, but runs as rank "
                               f"{rank} of {world}")
        labels = targets.long()
        if world > 1:
            features = _GatherRows.apply(features, float(world))
            labels = gather_rows(labels)
        index, local_targets = self.sample(labels)
        full = index.numel() == self.num_local
        # all columns: the shard itself (indexing would copy the whole weight matrix every step)
        logits = self.margin(features, local_targets, prototypes=self.weight if full else self.weight[index])
        loss = _ShardedCrossEntropy.apply(logits, local_targets)
        with torch.no_grad():
            acc = _sharded_accuracy(logits, local_targets)
        every_class = index.numel() == self.num_classes
        return HeadLoss(loss, acc, logits.detach(), None if every_class else index + self.class_start,
                        labels if world > 1 else None)

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.cross_entropy(features, targets).loss

    # -- checkpoints -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def full_weight(self) -> torch.Tensor:
        """All C prototypes (a collective under DDP: every rank must call it)."""
        return gather_rows(self.weight.detach()) if self.sharded else self.weight.detach()

    @torch.no_grad()
    def gather_rows_of(self, tensor: torch.Tensor) -> torch.Tensor:
        """A per-prototype tensor of this shard (e.g. its SGD momentum) completed to all C rows (collective)."""
        return gather_rows(tensor) if self.sharded else tensor

    def local_rows(self, full: torch.Tensor) -> torch.Tensor:
        """This shard's rows of a per-prototype tensor of all C classes."""
        return full[self.class_start:self.class_start + self.num_local]

    def _load_full_weight(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        key = prefix + "weight"
        if key not in state_dict:
            return
        rows = state_dict[key].shape[0]
        if rows != self.num_classes:
            raise ValueError(f"{key}: the checkpoint holds {rows} prototypes, the classifier has {self.num_classes} "
                             "classes")
        if not self.allocated:  # e.g. evaluation: allocated for this process (all classes when alone)
            self.shard()
        state_dict[key] = self.local_rows(state_dict[key])

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, sample_rate={self.sample_rate:g}, shard=[{self.class_start}, "
                f"{self.class_start + self.num_local}) of rank {self.rank}/{self.world_size}")
