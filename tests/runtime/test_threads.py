"""facelearn.runtime.threads: the cores a run may use (affinity, cgroup quota), shared among local ranks and
DataLoader workers; user choices (threads=, OMP_NUM_THREADS) win; the plan is printed once at start."""

import pytest

from conftest import TINY, run_cli
from facelearn.runtime.threads import cgroup_cpu_quota, local_ranks_of, plan_threads


@pytest.mark.parametrize("ranks,workers,torch_threads,decode", [
    (1, 0, 8, 8),   # one process: every core
    (2, 0, 4, 4),   # two DDP ranks share them
    (1, 2, 8, 8),   # decoding workers take no core from torch (measured faster on 2 cores: 467 vs 371 images/s)
    (16, 3, 1, 1),  # never fewer than one
])
def test_the_cores_are_shared(ranks, workers, torch_threads, decode):
    plan = plan_threads(ranks, workers, cores=(8, "test"), environ={})
    assert (plan.torch_threads, plan.decode_threads) == (torch_threads, decode)


def test_user_choices_win_and_are_named():
    assert plan_threads(threads=3, cores=(8, "t"), environ={"OMP_NUM_THREADS": "2"}).torch_threads == 3
    plan = plan_threads(cores=(8, "t"), environ={"OMP_NUM_THREADS": "2"})
    assert plan.torch_threads == 2 and "OMP_NUM_THREADS as set" in plan.describe()


def test_cgroup_quota_v2_and_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(str(tmp_path)) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(str(tmp_path)) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(str(v1)) == 2.0


def test_local_ranks_from_the_launcher_or_the_trainer(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    assert local_ranks_of({"strategy": "ddp", "devices": 2}) == 2
    assert local_ranks_of({"strategy": "auto", "devices": 1}) == 1
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4(x2)")
    assert local_ranks_of({}) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert local_ranks_of({}) == 3


def test_the_plan_is_printed_and_threads_is_checked(tmp_path):
    proc = run_cli([*TINY, "threads=1", "trainer.max_epochs=1"], tmp_path)
    assert "torch 1 thread(s) per rank (threads= as configured)" in proc.stdout + proc.stderr
    import subprocess
    import sys
    bad = subprocess.run([sys.executable, "-m", "facelearn.train", *TINY, "threads=0"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "threads=0: expected an integer >= 1" in bad.stderr


def test_a_second_run_in_one_process_plans_afresh(monkeypatch):
    """apply_plan exports OMP_NUM_THREADS for child processes; the next job of a multirun in the same process must
    not read it back as the user's choice."""
    import torch

    from facelearn.runtime import threads
    monkeypatch.setattr(threads, "_USER_OMP", None)
    before = torch.get_num_threads()
    try:
        threads.apply_plan(threads.plan_threads(threads=1, cores=(2, "t")))
        assert threads.plan_threads(cores=(2, "t")).torch_threads == 2
    finally:
        torch.set_num_threads(before)
        monkeypatch.setenv("OMP_NUM_THREADS", str(before))
