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
    repo = Path(__file__).resolve().parents[2]
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
                     ("facelearn.resume_run_dir", resume_run_dir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def resume_run_dir(ckpt_path: str | None, default: str) -> str:
    """The run directory a resumed training run continues: the one holding ``ckpt_path`` when that checkpoint is
    ``<run dir>/checkpoints/<file>`` of a facelearn run (its ``.hydra/`` is beside it), else ``default``."""
    if not ckpt_path:
        return default
    run = Path(str(ckpt_path)).resolve().parent.parent
    if Path(str(ckpt_path)).resolve().parent.name == "checkpoints" and (run / ".hydra").is_dir():
        return str(run)
    return default
