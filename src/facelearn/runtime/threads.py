"""One decision, at start, of the threads a run uses: torch's intra-op threads per process, the image-decode
thread pool, and what DataLoader workers and local ranks take, from the CPUs this process may use.

Sized on its own, each part takes every core (torch: one thread per core; the decode pool: up to 8; each DDP rank
and each DataLoader worker likewise), so two ranks with two workers each on a 2-core machine run 8+ busy threads on
2 cores; with other load on the machine a run with torch's default threads measured 5x slower than with one thread
per process. The plan: the cores this process may use (CPU affinity, capped by a cgroup CPU quota), shared among
the local ranks; each rank gives torch its whole share, DataLoader workers included (they decode part of the
time: reserving a core per worker cost more than the workers' contention). Measured on the idle 2-core machine
(``benchmarks/threads.py``, ``experiments/results/speed``): 2 threads 333 images/s vs 1 thread 170 on sst_shallow;
2 DDP ranks x 1 thread 338; streamed LFW JPEGs (conventional_lfw, ``data.stream=true``): 0 workers 448 images/s,
1 worker with torch at 1 thread (the rule before) 326 vs 2 threads 412, 2 workers 371 vs 467. Decoding before training (the
cache build, benchmark images) uses the rank's share. User choices win: ``threads=N`` (the config key) or an
``OMP_NUM_THREADS`` set before the run fixes torch's threads; the plan is printed once, naming what decided it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

_PLAN: "ThreadPlan | None" = None
# The user's OMP_NUM_THREADS as the process started (apply_plan sets the variable for child processes: a second
# run in this process, e.g. the next job of a multirun, must not take that for the user's choice).
_USER_OMP = os.environ.get("OMP_NUM_THREADS")


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs allowed by the cgroup's CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), None when unlimited."""
    try:
        with open(os.path.join(root, "cpu.max")) as fh:
            quota, period = fh.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as fh:
            quota = int(fh.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as fh:
            period = int(fh.read())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cores(cgroup_root: str = "/sys/fs/cgroup") -> tuple[int, str]:
    """(cores this process may use, how that was decided)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None and math.ceil(quota) < affinity:
        return max(1, math.ceil(quota)), f"{affinity} CPUs in the affinity mask, cgroup quota {quota:g} CPUs"
    return max(1, affinity), f"{affinity} CPUs in the affinity mask"


def local_ranks_of(trainer_cfg) -> int:
    """Processes of this run on this machine: a launcher's (torchrun's LOCAL_WORLD_SIZE, SLURM's tasks per node),
    else the trainer's devices when it runs DDP on the CPU (Lightning starts one process per device)."""
    for var in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(var, "")
        if value.split("(")[0].isdigit():
            return max(1, int(value.split("(")[0]))
    trainer_cfg = trainer_cfg or {}
    devices = trainer_cfg.get("devices", 1)
    if str(trainer_cfg.get("strategy", "")).startswith("ddp") and isinstance(devices, int):
        return max(1, devices)
    return 1


@dataclass(frozen=True)
class ThreadPlan:
    cores: int  # CPUs this process tree may use
    cores_source: str
    local_ranks: int
    workers: int  # decoding DataLoader workers per rank
    torch_threads: int  # intra-op threads per rank
    decode_threads: int  # the decode pool of each rank (cache build, benchmark images)
    torch_source: str

    def describe(self) -> str:
        return (f"threads: {self.cores} cores ({self.cores_source}), {self.local_ranks} local rank(s) x "
                f"{self.workers} decoding DataLoader worker(s): torch {self.torch_threads} thread(s) per rank "
                f"({self.torch_source}), decoding {self.decode_threads} thread(s)")


def plan_threads(local_ranks: int = 1, workers: int = 0, threads: int | None = None,
                 cores: tuple[int, str] | None = None, environ: dict | None = None) -> ThreadPlan:
    environ = {"OMP_NUM_THREADS": _USER_OMP or ""} if environ is None else environ
    n, source = cores or available_cores()
    share = max(1, n // max(1, local_ranks))
    if threads is not None:
        torch_threads, why = int(threads), "threads= as configured"
    elif environ.get("OMP_NUM_THREADS", "").isdigit() and int(environ["OMP_NUM_THREADS"]) > 0:
        torch_threads, why = int(environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS as set"
    else:
        torch_threads = share
        why = f"{share} core(s) per rank"
    return ThreadPlan(n, source, local_ranks, workers, torch_threads, share, why)


def apply_plan(plan: ThreadPlan) -> ThreadPlan:
    """Set torch's threads and the environment the processes this one starts inherit (DDP ranks spawned by
    Lightning read OMP_NUM_THREADS at import); remembered for ``decode_threads()``."""
    global _PLAN
    import torch
    torch.set_num_threads(plan.torch_threads)
    os.environ["OMP_NUM_THREADS"] = str(plan.torch_threads)
    _PLAN = plan
    return plan


def decode_threads() -> int:
    """Threads for decoding images in this process: the plan's when one was applied, else the cores (up to 8)."""
    if _PLAN is not None:
        return _PLAN.decode_threads
    return min(8, available_cores()[0])
