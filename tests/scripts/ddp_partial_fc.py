"""2 CPU ranks (gloo, torch.multiprocessing): Partial FC against the replicated full classifier.

Each rank holds a different number of samples (5 and 3) and half of C=11 classes (6 and 5); the backbone is a Linear
layer wrapped in DDP. Rank 0 also computes the reference on the whole batch in one process: a full margin head with
all C prototypes, and the same Linear layer (no DDP). Every rank writes OUT/rank<r>.pt with its loss, accuracy, shard
gradient and DDP-averaged backbone gradient, the reference's, and the columns it sampled.
Run as a script (never DDP inside pytest: see STACK-NOTES):  python ddp_partial_fc.py OUT MARGIN:RATE [...]
(one process group for all cases; files OUT/<margin>_<rate>_rank<r>.pt)
"""

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from facelearn.nn import heads
from facelearn.nn.partial_fc import PartialFC

C, D_IN, D, SIZES = 11, 6, 8, (5, 3)
MARGINS = {"cosface": lambda n: heads.CosFace(D, n, scale=8.0, margin=0.3),
           "arcface": lambda n: heads.ArcFace(D, n, scale=8.0, margin=0.4),
           "normface": lambda n: heads.NormFace(D, n, scale=8.0),
           "combined": lambda n: heads.CombinedMargin(D, n, scale=8.0, m1=1.0, m2=0.3, m3=0.1),
           "sphereface": lambda n: heads.SphereFace(D, n, scale=8.0, margin=2, lambda_base=5.0),
           "learnable": lambda n: heads.CosFace(D, n, scale=8.0, margin=0.3, learnable_scale=True)}


class Model(nn.Module):
    """Backbone + Partial FC in one DDP-wrapped module with the shard ignored, as Lightning wraps a FaceModule."""

    def __init__(self, linear: nn.Module, pfc: PartialFC) -> None:
        super().__init__()
        self.linear, self.pfc = linear, pfc

    def forward(self, x, y):
        out = self.pfc.cross_entropy(self.linear(x), y)
        return out.loss, out.acc, out.scores, out.score_labels, out.score_rows


def worker(rank: int, out: str, cases: list[str], init: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=2)
    for case in cases:
        margin, rate = case.split(":")
        run_case(rank, out, margin, float(rate))
    dist.barrier()  # both ranks done before gloo is torn down (a rank leaving first can abort the other)
    dist.destroy_process_group()


def run_case(rank: int, out: str, margin: str, rate: float) -> None:
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(C, D, generator=g)
    inputs = torch.randn(sum(SIZES), D_IN, generator=g)
    labels = torch.tensor([0, 7, 3, 10, 7, 5, 1, 3])  # classes of both shards, a class on both ranks
    torch.manual_seed(1)
    linear = nn.Linear(D_IN, D)
    reference_linear = nn.Linear(D_IN, D)
    reference_linear.load_state_dict(linear.state_dict())

    start = sum(SIZES[:rank])
    mine = slice(start, start + SIZES[rank])
    pfc = PartialFC(MARGINS[margin](0), C, sample_rate=rate)
    pfc.shard()
    pfc.weight.data.copy_(weight[pfc.class_start:pfc.class_start + pfc.num_local])
    model = Model(linear, pfc)
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ["pfc.weight"])
    ddp = nn.parallel.DistributedDataParallel(model)
    torch.manual_seed(100 + rank)  # the negatives' sampling differs per rank
    loss, acc, scores, score_labels, score_rows = ddp(inputs[mine], labels[mine])
    loss.backward()
    result = type("Result", (), dict(loss=loss, acc=acc, scores=scores, score_labels=score_labels,
                                     score_rows=score_rows))
    sampled = result.score_labels if result.score_labels is not None else torch.arange(pfc.class_start,
                                                                                       pfc.class_start + pfc.num_local)
    columns = [torch.zeros(C, dtype=torch.long) for _ in range(2)]
    padded = torch.full((C,), -1, dtype=torch.long)
    padded[:len(sampled)] = sampled
    dist.all_gather(columns, padded)
    union = torch.cat([c[c >= 0] for c in columns]).sort().values

    # reference: one process, all samples, all prototypes; softmax restricted to the columns the ranks sampled
    ref_head = MARGINS[margin](C)
    ref_head.weight.data.copy_(weight)
    logits = ref_head(reference_linear(inputs), labels)
    logits = logits.masked_fill(~torch.isin(torch.arange(C), union), float("-inf"))
    ref_loss = F.cross_entropy(logits, labels)
    ref_loss.backward()
    torch.save({"loss": result.loss.detach(), "acc": result.acc, "ref_loss": ref_loss.detach(),
                "ref_acc": (logits.argmax(1) == labels).float().mean(),
                "shard_grad": pfc.weight.grad, "ref_shard_grad": ref_head.weight.grad[pfc.class_start:
                                                                                      pfc.class_start + pfc.num_local],
                "backbone_grad": [p.grad for p in linear.parameters()],
                "ref_backbone_grad": [p.grad for p in reference_linear.parameters()],
                "scale_grad": getattr(pfc.margin.scale, "grad", None),
                "ref_scale_grad": getattr(ref_head.scale, "grad", None),
                "num_local": pfc.num_local, "class_start": pfc.class_start, "sampled": sampled, "union": union,
                "score_rows": result.score_rows, "scores_shape": tuple(result.scores.shape)},
               os.path.join(out, f"{margin}_{rate:g}_rank{rank}.pt"))


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2:], os.path.join(sys.argv[1], "init")), nprocs=2)
