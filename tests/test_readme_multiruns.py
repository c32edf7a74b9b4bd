"""The README's multirun (`-m`) commands, run as a user types them: from a directory outside the repository, with
no `paths.log_dir` (or any path) override. Only size overrides are added (tiny data, one epoch), which do not touch
where outputs go; the sweep directory, job directories and results must appear under the working directory.

The two cheapest commands run in the fast suite; every README `-m` command runs in the slow suite.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY

README = ROOT / "README.md"

# Size only: tiny synthetic data, one epoch. Nothing about paths.
SMALL = [*TINY, "trainer.max_epochs=1"]
SMALL_SST = [*SMALL, "method.queue_size=48", "data.batch_size=16"]
SMALL_DM = [*TINY[:-1], "trainer.max_epochs=1", "data.batch_size=27"]


def readme_multiruns() -> list[str]:
    """Every `python -m facelearn.<entry> -m ...` line of the README, comment stripped."""
    lines = []
    for line in README.read_text().splitlines():
        line = line.split("  #")[0].strip()
        if re.match(r"python -m facelearn\.\w+ -m ", line):
            lines.append(line)
    return lines


def user_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACELEARN_")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", PYTHONWARNINGS="ignore::FutureWarning")
    return env


def run_typed(line: str, cwd: Path, extra: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    args = shlex.split(line)
    assert args[0] == "python"
    cmd = [sys.executable, *args[1:], *extra]
    proc = subprocess.run(cmd, cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{line} (+ {extra}) from {cwd} exited {proc.returncode}\nSTDERR:\n{proc.stderr[-6000:]}")
    return proc


def sweep_dir(cwd: Path) -> Path:
    sweeps = list((cwd / "logs" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def job_results(sweep: Path) -> list[dict]:
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    return [json.loads((j / "benchmark_metrics.json").read_text()) for j in jobs]


def test_readme_lists_the_multiruns_this_suite_covers():
    lines = readme_multiruns()
    assert any("conventional_shallow,conventional_shallow_contrastive" in li for li in lines), lines
    assert any("+experiment=sst_ablation" in li for li in lines)
    assert any("+experiment=dm_table4" in li for li in lines)
    assert any("facelearn.evaluate -m" in li for li in lines)


def test_issue_example_two_heads_from_a_temporary_directory(tmp_path):
    """The command of the bug report, from a temp dir, no paths override: outputs land under that dir."""
    run_typed("python -m facelearn.train -m +experiment=conventional_shallow head=arcface,cosface", tmp_path, SMALL)
    results = job_results(sweep_dir(tmp_path))
    assert len(results) == 2


def test_log_dir_override_still_wins(tmp_path):
    out = tmp_path / "elsewhere"
    run_typed("python -m facelearn.train -m +experiment=conventional_shallow head=cosface", tmp_path,
              [*SMALL, f"paths.log_dir={out}"])
    assert not (tmp_path / "logs").exists()
    sweeps = list((out / "multiruns").iterdir())
    assert len(sweeps) == 1 and len(job_results(sweeps[0])) == 1


def test_readme_pair_loss_sweep_as_typed(tmp_path):
    line = next(li for li in readme_multiruns() if "conventional_shallow,conventional_shallow_contrastive" in li)
    run_typed(line, tmp_path, SMALL)
    assert len(job_results(sweep_dir(tmp_path))) == 4


@pytest.mark.slow
def test_readme_sst_ablation_as_typed(tmp_path):
    line = next(li for li in readme_multiruns() if "+experiment=sst_ablation" in li)
    run_typed(line, tmp_path, SMALL_SST, timeout=1800)
    assert len(job_results(sweep_dir(tmp_path))) == 36


@pytest.mark.slow
@pytest.mark.parametrize("experiment,jobs", [("dm_table4", 8), ("dm_table5", None)])
def test_readme_dm_tables_as_typed(tmp_path, experiment, jobs):
    line = next(li for li in readme_multiruns() if f"+experiment={experiment}" in li)
    run_typed(line, tmp_path, SMALL_DM, timeout=1200)
    results = job_results(sweep_dir(tmp_path))
    assert len(results) == (jobs or len(results)) and results


@pytest.mark.slow
def test_readme_ida_sweeps_as_typed(tmp_path):
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    subprocess.run([sys.executable, "-m", "facelearn.train", "+experiment=conventional_shallow", *SMALL],
                   cwd=train_dir, env=user_env(), check=True, capture_output=True, timeout=600)
    ckpt = next((train_dir / "logs").rglob("last.ckpt"))
    for line in (li for li in readme_multiruns() if "facelearn.evaluate -m" in li):
        line = line.replace("ckpt_path=...", f"ckpt_path={ckpt}")
        work = tmp_path / f"eval{abs(hash(line))}"
        work.mkdir()
        run_typed(line, work, [])
        assert job_results(sweep_dir(work))
