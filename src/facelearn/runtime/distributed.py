"""The end of a multi-process run: every rank meets, then tears the process group down together.

Lightning leaves the gloo / NCCL process group alive after ``fit``; at interpreter exit each rank then destroys it
on its own, and a rank whose peer has already gone can abort in gloo's connection threads ("terminate called
without an active exception", exit status -6 after a run that finished). Seen twice in `make test` with two test
workers loading the machine: a Partial FC benchmark and a DDP doppelganger script.
"""

from __future__ import annotations


def shutdown_process_group() -> None:
    """Barrier, then ``destroy_process_group``, when a default process group is initialised (else nothing)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
