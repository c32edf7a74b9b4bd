"""The benchmark scripts run and print their tables (tiny sizes); numbers that do not depend on the machine are
checked: Partial FC's classifier memory per rank is that of the full FC, halved on 2 ranks."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT


def run(script: str, *args: str, timeout: int = 600) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def table(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| classes") and not line.startswith("| experiment")]


def test_partial_fc_benchmark_memory_per_rank():
    rows = table(run("partial_fc.py", "--classes", "4000", "--dim", "32", "--batch", "64", "--steps", "1"))
    assert [r[1] for r in rows] == ["full FC (CosFace)", "Partial FC, rate 1", "Partial FC, rate 0.1",
                                    "Partial FC, rate 0.1, 2 ranks (1 thread each)"]
    state = [float(r[6]) for r in rows]
    full_mb = 3 * 4000 * 32 * 4 / 2**20  # weights + gradient + momentum, fp32
    assert state[:3] == pytest.approx([full_mb] * 3, abs=0.5) and state[3] == pytest.approx(full_mb / 2, abs=0.5)
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows) and float(rows[0][3]) == 1.0


@pytest.mark.slow
def test_training_step_benchmark_prints_both_arms():
    out = run("training_step.py", "--epochs", "1", "--methods", "conventional_shallow")
    (row,) = table(out)
    assert row[0] == "conventional_shallow" and float(row[1]) > 0 and float(row[2]) > 0
    assert re.fullmatch(r"\d+\.\d{3}", row[3])


def test_freeze_step_benchmark_prints_both_arms():
    out = run("freeze_step.py", "--backbone", "small", "--freeze", "body.1", "--batch", "4", "--steps", "1")
    (row,) = [r for r in table(out) if r[0] != "backbone"]
    assert row[0] == "small" and float(row[1]) > 0 and float(row[2]) > 0 and float(row[3]) > 0
