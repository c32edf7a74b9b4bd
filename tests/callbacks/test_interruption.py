"""SIGTERM (a scheduler's kill notice) mid-run: a resumable checkpoint is saved, the exit code says so, and the
resumed run ends with the same numbers as an uninterrupted one (issue 11, item 4).

The SIGTERM case runs SST (identity-pair sampler), the SIGKILL case a conventional run (the default shuffling
sampler): both samplers keep their position in the checkpoint."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY, run_cli

ARGS = ["+experiment=sst_shallow", *TINY, "trainer.max_epochs=6", "data.batch_size=16", "method.queue_size=48",
        "callbacks.benchmark.every_n_epochs=6"]


def diag_steps(csv_file):
    with csv_file.open() as fh:
        return [int(r["step"]) for r in csv.DictReader(fh) if r.get("diag/effective_rank")]


def epoch_losses(csv_file):
    with csv_file.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/loss_epoch")]
    return [float(r["train/loss_epoch"]) for r in sorted(rows, key=lambda r: int(r["epoch"]))]


def final_metrics(log_dir):
    (f,) = [p for p in log_dir.rglob("benchmark_metrics.json")]
    return json.loads(f.read_text())["metrics"]["synthetic"]


def test_sigterm_saves_resumable_checkpoint_and_exits_nonzero(tmp_path):
    env = dict(os.environ, FACELEARN_CACHE=str(tmp_path / "cache"), PYTHONWARNINGS="ignore::FutureWarning",
               PYTHONUNBUFFERED="1")
    log_dir = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "facelearn.train", *ARGS, f"paths.log_dir={log_dir}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.time() + 240
    for line in proc.stdout:  # wait until training is under way (epoch 1 finished), then send SIGTERM
        lines.append(line)
        if "epoch 2/" in line or time.time() > deadline:
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(lines) + proc.stdout.read()
    code = proc.wait(timeout=240)
    proc.stdout.close()
    assert code == 143, out[-3000:]
    assert "SIGTERM received: saved a resumable checkpoint" in out
    assert "weights_only" not in out  # the full state is saved on purpose (and loaded with weights_only=True)
    (ckpt,) = list(log_dir.rglob("checkpoints/last.ckpt"))
    assert not list(log_dir.rglob("*.tmp-*"))  # atomic save left no temporary file
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    run_cli([*ARGS, f"ckpt_path={ckpt}"], tmp_path / "resumed")
    run_cli(ARGS, tmp_path / "straight")
    # The resumed run continued in its own run directory, not a new one...
    assert not (tmp_path / "resumed" / "logs").exists()
    resumed, straight = final_metrics(log_dir), final_metrics(tmp_path / "straight")
    for key in ("accuracy", "auc", "tar@far=0.1"):
        assert resumed[key] == pytest.approx(straight[key], abs=1e-6), key
    # ... and its metrics.csv holds the steps before the interruption once and those after it.
    (csv_file,) = list(log_dir.rglob("metrics.csv"))
    (straight_csv,) = list((tmp_path / "straight").rglob("metrics.csv"))
    steps, straight_steps = diag_steps(csv_file), diag_steps(straight_csv)
    assert steps == straight_steps and min(steps) < state["global_step"] < max(steps)
    # Epoch averages, the interrupted epoch's included, equal the uninterrupted run's.
    assert epoch_losses(csv_file) == pytest.approx(epoch_losses(straight_csv), rel=1e-5)


def test_atomic_save_replaces_in_place(tmp_path):
    import torch

    from facelearn.runtime.checkpointing import AtomicCheckpointIO
    target = tmp_path / "ckpts" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"a": torch.ones(2)}, target)
    io.save_checkpoint({"a": torch.zeros(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.zeros(2))
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_sigkill_mid_epoch_loses_at_most_the_interval_and_resumes_exactly(tmp_path):
    """A run killed without warning resumes from the periodic mid-epoch last.ckpt to the uninterrupted numbers."""
    import torch

    env = dict(os.environ, FACELEARN_CACHE=str(tmp_path / "cache"), PYTHONWARNINGS="ignore::FutureWarning",
               PYTHONUNBUFFERED="1")
    args = ["+experiment=conventional_shallow", *TINY, "trainer.max_epochs=6", "data.batch_size=16",
            "callbacks.benchmark.every_n_epochs=6",
            "callbacks.checkpoint_interval.train_time_interval.minutes=0.005"]  # every 0.3 s
    log_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "facelearn.train", *args, f"paths.log_dir={log_dir}"]
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        for line in proc.stdout:
            if "epoch 3/" in line:  # the progress summary after the 3rd epoch
                break
        time.sleep(1.0)
        proc.kill()
        proc.stdout.read()
    (ckpt,) = list(log_dir.rglob("checkpoints/last.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] > 0
    run_cli([*args, f"ckpt_path={ckpt}"], tmp_path / "resumed")
    run_cli(args, tmp_path / "straight")
    resumed, straight = final_metrics(log_dir), final_metrics(tmp_path / "straight")
    for key in ("accuracy", "auc", "tar@far=0.1"):
        assert resumed[key] == pytest.approx(straight[key], abs=1e-6), key


@pytest.mark.slow
def test_two_rank_run_killed_mid_run_resumes_exactly_with_whole_epoch_averages(tmp_path):
    """2 CPU ranks (gloo): SIGKILL the whole process group after some periodic mid-epoch checkpoints, resume on 2
    ranks: the final metrics and every epoch's train/loss_epoch equal the uninterrupted 2-rank run's."""
    env = dict(os.environ, FACELEARN_CACHE=str(tmp_path / "cache"), PYTHONWARNINGS="ignore::FutureWarning",
               PYTHONUNBUFFERED="1")
    args = [*ARGS, "trainer=ddp", "trainer.devices=2", "data.train.num_identities=192",
            "callbacks.checkpoint_interval.train_time_interval.minutes=0.005"]
    log_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "facelearn.train", *args, f"paths.log_dir={log_dir}"]
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True) as proc:
        for line in proc.stdout:
            if "epoch 3/" in line:  # the progress summary after the 3rd epoch
                break
        time.sleep(1.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.read()
    (ckpt,) = list(log_dir.rglob("checkpoints/last.ckpt"))
    run_cli([*args, f"ckpt_path={ckpt}"], tmp_path / "resumed", timeout=400)
    run_cli(args, tmp_path / "straight", timeout=400)
    resumed, straight = final_metrics(log_dir), final_metrics(tmp_path / "straight")
    for key in ("accuracy", "auc"):
        assert resumed[key] == pytest.approx(straight[key], abs=1e-6), key
    (csv_file,) = list(log_dir.rglob("metrics.csv"))
    (straight_csv,) = list((tmp_path / "straight").rglob("metrics.csv"))
    assert epoch_losses(csv_file) == pytest.approx(epoch_losses(straight_csv), rel=1e-5)
