"""Default locations, as OmegaConf resolvers usable anywhere in the configs.

``${hydra:runtime.cwd}`` is not set while Hydra computes a multirun's sweep directory, so every ``-m`` run failed
when ``paths.root_dir`` used it. These resolvers need no HydraConfig: they read the process's working directory
(Hydra does not change it: ``hydra.job.chdir=false``) and where the package itself lives.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


def working_dir() -> str:
    """The directory the command was typed in (the default root of logs and caches)."""
    return os.getcwd()


def checkout_root() -> Path | None:
    """The repository root when facelearn runs from a source checkout (src layout), else None (installed wheel)."""
    repo = Path(__file__).resolve().parents[3]  # src/facelearn/runtime/paths.py -> the checkout
    return repo if (repo / "pyproject.toml").is_file() and (repo / "src" / "facelearn").is_dir() else None


def default_data_dir() -> str:
    """Where the real face sets are looked for when ``FACELEARN_DATA`` is not set: ``../shared/data`` next to the
    checkout the package runs from, else ``../shared/data`` next to the working directory."""
    repo = checkout_root()
    base = repo if repo is not None else Path(os.getcwd())
    return str((base.parent / "shared" / "data").resolve())


def default_models_dir() -> str:
    """``../shared/models`` beside the checkout (or the working directory), like ``default_data_dir``."""
    return str((Path(default_data_dir()).parent / "models").resolve())


def register_resolvers() -> None:
    for name, fn in (("facelearn.cwd", working_dir), ("facelearn.data_dir", default_data_dir),
                     ("facelearn.models_dir", default_models_dir),
                     ("facelearn.resume_run_dir", resume_run_dir), ("facelearn.rank_suffix", rank_suffix)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
    if not OmegaConf.has_resolver("facelearn.run_stamp"):  # cached: one run directory per process
        OmegaConf.register_new_resolver("facelearn.run_stamp", run_stamp, use_cache=True)


_STAMP = "%Y-%m-%d_%H-%M-%S-%f"


def launcher_rank() -> int | None:
    """This process's global rank when an external launcher started every rank (torchrun, a multi-task srun),
    else None. (Lightning's own DDP children are told their run directory on the command line.)"""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env and "RANK" in env:
        return int(env["RANK"])
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"])
    return None


def rank_suffix() -> str:
    """``""`` on rank 0 (and without a launcher), ``_rank<r>`` on the others: per-rank Hydra job logs and
    ``.hydra`` folders in the one shared run directory."""
    rank = launcher_rank()  # (Lightning's own DDP children already have their own job name)
    return f"_rank{rank}" if rank else ""


def run_stamp() -> str:
    """The run directory's name: the start time, the same on every rank of one launch. Each rank of a torchrun
    or srun launch is its own Python process composing its own config, so ``${now:...}`` would give each its own
    directory; here they agree: srun -> ``slurm-<job>.<step>``; torchrun with a rendezvous id -> ``torchrun-<id>``;
    torchrun without one (one node, static rendezvous) -> the start time of the elastic agent, the local ranks'
    common parent."""
    from datetime import datetime
    env = os.environ
    if launcher_rank() is None:
        return datetime.now().strftime(_STAMP)
    if "SLURM_PROCID" in env and "TORCHELASTIC_RUN_ID" not in env:
        return f"slurm-{env.get('SLURM_JOB_ID', 'job')}.{env.get('SLURM_STEP_ID', '0')}"
    run_id = env.get("TORCHELASTIC_RUN_ID", "none")
    if run_id not in ("", "none"):
        return f"torchrun-{run_id}"
    started = _process_start(os.getppid())
    if started is None:
        raise RuntimeError("torchrun without --rdzv-id on a system without /proc: the ranks cannot agree on a run "
                           "directory; give torchrun --rdzv-id=<name> (or hydra.run.dir=<dir>)")
    return started.strftime(_STAMP)


def _process_start(pid: int):
    """A process's start time from /proc (Linux), or None."""
    from datetime import datetime, timedelta
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 (starttime), counted after "pid (comm)"
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return datetime.fromtimestamp(boot) + timedelta(seconds=ticks / os.sysconf("SC_CLK_TCK"))


def resume_run_dir(ckpt_path: str | None, default: str) -> str:
    """The run directory a resumed training run continues: the one holding ``ckpt_path`` when that checkpoint is
    ``<run dir>/checkpoints/<file>`` of a facelearn run (its ``.hydra/`` is beside it), else ``default``."""
    if not ckpt_path:
        return default
    run = Path(str(ckpt_path)).resolve().parent.parent
    if Path(str(ckpt_path)).resolve().parent.name == "checkpoints" and (run / ".hydra").is_dir():
        return str(run)
    return default
