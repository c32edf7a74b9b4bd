"""Partial FC against the full (replicated) classifier: step time and memory of the classifier step at 100k and 1M
classes, measured in one run, each arm in its own process (so its peak memory is its own).

A step: N random features (requires_grad, as a backbone's output) -> classifier loss -> backward -> SGD with momentum
(weights, gradients and momentum: what a classifier costs). Arms for each C: the full CosFace head; Partial FC at
sample rate 1 and 0.1 in one process; Partial FC at 0.1 sharded over 2 gloo ranks (each rank: half the classes, the
batch gathered from both). Prints per arm the median step time, the peak resident memory above the process's
baseline after imports (max over ranks), the classifier's parameter + gradient + momentum bytes per rank, and both
as ratios to the full FC of the same C.

    python benchmarks/partial_fc.py [--classes 100000 1000000] [--dim 128] [--batch 256] [--steps 5]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(arm: str, classes: int, dim: int, batch: int, steps: int) -> dict:
    """One arm in this process (rank = the process group's, if any)."""
    from facelearn.nn.heads import CosFace
    from facelearn.nn.partial_fc import PartialFC

    rank = dist.get_rank() if dist.is_initialized() else 0
    baseline = rss_mb()
    torch.manual_seed(rank)
    if arm == "full":
        classifier = CosFace(dim, classes, scale=30.0, margin=0.35)

        def loss_of(x, y):
            return torch.nn.functional.cross_entropy(classifier(x, y), y)
    else:
        classifier = PartialFC(CosFace(dim, 0, scale=30.0, margin=0.35), classes, sample_rate=float(arm.split("@")[1]),
                               seed=0)
        classifier.shard()

        def loss_of(x, y):
            return classifier.cross_entropy(x, y).loss
    opt = torch.optim.SGD(classifier.parameters(), lr=0.1, momentum=0.9)
    times = []
    for step in range(steps + 1):  # the first step allocates the gradient and momentum: not timed
        x = torch.randn(batch, dim, requires_grad=True)
        y = torch.randint(0, classes, (batch,))
        t0 = time.perf_counter()
        loss = loss_of(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
        if step:
            times.append(time.perf_counter() - t0)
    state_bytes = sum(3 * p.numel() * p.element_size() for p in classifier.parameters())  # weight + grad + momentum
    return {"step_s": statistics.median(times), "peak_mb": peak_mb() - baseline, "state_mb": state_bytes / 2**20}


def _rank(rank: int, world: int, init: str, args: tuple, out: str) -> None:
    torch.set_num_threads(1)  # 2 ranks on the 2 cores
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    result = measure(*args)
    with open(f"{out}.{rank}", "w") as f:
        json.dump(result, f)
    # both ranks here before either tears gloo down: a rank leaving first can abort the other one's pair threads
    # ("terminate called without an active exception", seen once under a loaded machine)
    dist.barrier()
    dist.destroy_process_group()


def run_arm(arm: str, classes: int, dim: int, batch: int, steps: int) -> dict:
    """``arm`` in a fresh process; ``pfc@rate@2ranks`` on 2 gloo ranks with batch/2 samples each."""
    cmd = [sys.executable, __file__, "--_arm", arm, "--classes", str(classes), "--dim", str(dim), "--batch",
           str(batch), "--steps", str(steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        raise RuntimeError(f"{arm} at {classes} classes failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(arm: str, classes: int, dim: int, batch: int, steps: int) -> dict:
    if arm.endswith("@2ranks"):
        with tempfile.TemporaryDirectory() as tmp:
            base = os.path.join(tmp, "result")
            mp.spawn(_rank, args=(2, os.path.join(tmp, "init"), (arm[:-len("@2ranks")], classes, dim, batch // 2,
                                                                 steps), base), nprocs=2)
            ranks = [json.load(open(f"{base}.{r}")) for r in range(2)]
        return {"step_s": max(r["step_s"] for r in ranks), "peak_mb": max(r["peak_mb"] for r in ranks),
                "state_mb": max(r["state_mb"] for r in ranks)}
    return measure(arm, classes, dim, batch, steps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--batch", type=int, default=256, help="global batch (2 ranks: half each)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--_arm", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._arm:
        print(json.dumps(child(args._arm, args.classes[0], args.dim, args.batch, args.steps)))
        return
    arms = ["full", "pfc@1", "pfc@0.1", "pfc@0.1@2ranks"]
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; embedding {args.dim}, global batch {args.batch}, "
          f"median of {args.steps} steps after one untimed step\n")
    print("| classes | classifier | step (s) | vs full | peak memory above baseline (MB) | vs full | "
          "weights+grad+momentum per rank (MB) |")
    print("|---|---|---|---|---|---|---|")
    for classes in args.classes:
        results = {arm: run_arm(arm, classes, args.dim, args.batch, args.steps) for arm in arms}
        full = results["full"]
        for arm, r in results.items():
            name = {"full": "full FC (CosFace)", "pfc@1": "Partial FC, rate 1", "pfc@0.1": "Partial FC, rate 0.1",
                    "pfc@0.1@2ranks": "Partial FC, rate 0.1, 2 ranks (1 thread each)"}[arm]
            print(f"| {classes:,} | {name} | {r['step_s']:.3f} | {r['step_s'] / full['step_s']:.2f} | "
                  f"{r['peak_mb']:.0f} | {r['peak_mb'] / full['peak_mb']:.2f} | {r['state_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
