"""Optional Hydra plugins (launchers, sweepers): a missing one is named with the extra that installs it.

Hydra composes the config before any facelearn code runs and would only say "Could not find 'hydra/sweeper/optuna'";
``check_plugins`` reads the command line first and stops with the ``pip install`` line instead.
"""

from __future__ import annotations

import importlib.util
import sys

# command-line prefix -> (plugin module, facelearn extra)
_PLUGINS = {
    "hydra/launcher=submitit": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "hydra/launcher=slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "hydra/sweeper=optuna": ("hydra_plugins.hydra_optuna_sweeper", "search"),
    "+hparams_search=": ("hydra_plugins.hydra_optuna_sweeper", "search"),
    "hparams_search=": ("hydra_plugins.hydra_optuna_sweeper", "search"),
}


def missing_plugin(argv: list[str]) -> str | None:
    """The error message for the first argument that needs a plugin that is not installed, else None."""
    for arg in argv:
        for prefix, (module, extra) in _PLUGINS.items():
            if arg.startswith(prefix) and importlib.util.find_spec(module) is None:
                return (f"{arg} needs the Hydra plugin {module.split('.')[-1]}, which is not installed: "
                        f'pip install "facelearn[{extra}]"')
    return None


def check_plugins(argv: list[str] | None = None) -> None:
    message = missing_plugin(sys.argv[1:] if argv is None else argv)
    if message:
        sys.exit(f"error: {message}")
