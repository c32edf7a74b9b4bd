import os
import subprocess
import sys
from pathlib import Path

import pytest

# Under pytest-xdist (`make test`: one worker per core) each worker, and every process it starts (they inherit the
# environment), computes on one thread: torch's default of one thread per core in every worker would oversubscribe
# the cores (the suite took 17 min serial, 9.5 min as two single-threaded workers on 2 cores).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
LFW_ROOT = Path(os.environ.get("FACELEARN_LFW", ROOT.parent / "shared" / "data" / "lfw"))

# A tiny synthetic run: 32 px, a narrow CNN, 3 epochs (seconds on 2 CPU cores); conf/debug/tiny_synthetic.yaml.
TINY = ["+debug=tiny_synthetic"]


def run_cli(args: list[str], tmp_path: Path, timeout: int = 240, module: str = "facelearn.train",
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a facelearn entry point in a subprocess (outputs under tmp_path) and fail with its output on error."""
    full_env = {**os.environ, "FACELEARN_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline",
                "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore::FutureWarning", **(env or {})}
    flags = [a for a in args if a.startswith("-")]
    cmd = [sys.executable, "-m", module, *flags, f"paths.log_dir={tmp_path / 'logs'}",
           *[a for a in args if not a.startswith("-")]]
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\n"
                    f"STDERR:\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    if not (LFW_ROOT / "pairsDevTest.txt").is_file():
        pytest.skip(f"LFW not found at {LFW_ROOT} (../shared absent)")
    return LFW_ROOT


class FilePayload:
    """Unpickling this object creates ``marker``: a stand-in for code a hostile pickle would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))
