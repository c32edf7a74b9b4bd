"""Resume on another number of processes with the global batch kept (issue 25, item 1), through the CLI on gloo:
2 ranks x B -> 1 rank x 2B -> 2 ranks x B ends where the uninterrupted 2-rank run ends (weights, SST queue and
gallery, doppelganger list, Partial FC prototypes and their momentum, the epoch averages); a change of the global
batch is refused before any data, naming the data.batch_size that keeps it.

The backbone uses GroupNorm (``backbone.norm=group``): with BatchNorm the statistics of a 16-image and a 32-image
batch differ by nature, and CPU DDP has no SyncBatchNorm; the resume then logs that difference
(``tests/callbacks/test_resume.py``)."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY, run_cli

# Step checkpoints (every 4 steps, all kept) so a resume can start mid-epoch from a known step.
STEP_CKPTS = ["callbacks.checkpoint_interval.train_time_interval=null",
              "+callbacks.checkpoint_interval.every_n_train_steps=4",
              "callbacks.checkpoint_interval.filename='s{step}'", "callbacks.checkpoint_interval.save_top_k=-1"]
SST = ["+experiment=sst_shallow", *TINY, "trainer.max_epochs=3", "method.queue_size=48", "backbone.norm=group",
       *STEP_CKPTS]
TWO = ["trainer=ddp", "trainer.devices=2", "data.batch_size=16"]
ONE = ["data.batch_size=32"]


def run_dir(log_dir):
    (ckpt,) = log_dir.rglob("checkpoints/last.ckpt")
    return ckpt.parent.parent


def take(log_dir, name, dest):
    """A step checkpoint copied out of its run (a checkpoint inside a run directory resumes into that run)."""
    shutil.copy(run_dir(log_dir) / "checkpoints" / name, dest)
    return dest


def last(log_dir):
    return torch.load(run_dir(log_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def final_metrics(log_dir):
    (f,) = log_dir.rglob("benchmark_metrics.json")
    return json.loads(f.read_text())["metrics"]["synthetic"]


def epoch_losses(log_dir):
    (f,) = log_dir.rglob("metrics.csv")
    with f.open() as fh:
        return {int(r["epoch"]): float(r["train/loss_epoch"]) for r in csv.DictReader(fh) if r.get("train/loss_epoch")}


def assert_same_state(a, b, atol=1e-5):
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        if value.is_floating_point():
            assert torch.allclose(value, b["state_dict"][key], atol=atol), key
        else:
            assert torch.equal(value, b["state_dict"][key]), key


def assert_refused_before_any_data(ckpt, tmp_path):
    """Every change of the global batch (2 x 16 = 32) is refused before the data are built, naming the
    data.batch_size that keeps it (or the accumulation to keep)."""
    env = dict(os.environ, FACELEARN_CACHE=str(tmp_path / "cache"), PYTHONWARNINGS="ignore::FutureWarning")
    cases = [(["data.batch_size=16"], "with 1 process(es), data.batch_size=32 keeps the global batch of 32"),
             (["trainer=ddp", "trainer.devices=2", "data.batch_size=32"],
              "with 2 process(es), data.batch_size=16 keeps the global batch of 32"),
             (["trainer=ddp", "trainer.devices=3", "data.batch_size=10"],
              "no data.batch_size gives the global batch of 32 on 3 process(es)"),
             (["data.batch_size=16", "+trainer.accumulate_grad_batches=2"],
              "keep trainer.accumulate_grad_batches=1")]
    for args, message in cases:
        proc = subprocess.run([sys.executable, "-m", "facelearn.train", *SST, *args, f"ckpt_path={ckpt}",
                               f"paths.log_dir={tmp_path / 'refused'}"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert message in proc.stderr, proc.stderr[-2000:]
        assert "training data:" not in proc.stderr + proc.stdout  # refused before the data were built


def test_sst_resumes_from_two_ranks_on_one_and_back_to_the_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    run_cli([*SST, *TWO], full, timeout=300)  # 3 epochs x 6 steps (96 identities, 16 pairs per global batch)
    # step 8 is mid-epoch 1: resume it on 1 process x 32, then that run's step 16 (mid-epoch 2) on 2 x 16
    s8 = take(full / "logs", "sstep=8.ckpt", tmp_path / "s8.ckpt")
    assert_refused_before_any_data(s8, tmp_path)
    one = tmp_path / "one"
    proc = run_cli([*SST, *ONE, f"ckpt_path={s8}"], one)
    out = proc.stdout + proc.stderr
    assert "resuming a run of 2 process(es) x data.batch_size=16 on 1 process(es) x data.batch_size=32" in out
    assert "nothing else depends on the split" in out
    back = tmp_path / "back"
    run_cli([*SST, *TWO, f"ckpt_path={take(one / 'logs', 'sstep=16.ckpt', tmp_path / 's16.ckpt')}"], back,
            timeout=300)
    reference = last(full / "logs")
    for resumed in (last(one / "logs"), last(back / "logs")):
        assert_same_state(reference, resumed)  # backbone, momentum gallery, SST queue features and identities
    # the final benchmark: a pair whose cosine sits at the threshold may flip with a 1e-7 weight difference
    ref_metrics = final_metrics(full / "logs")
    for log_dir in (one / "logs", back / "logs"):
        metrics = final_metrics(log_dir)
        for key in ("accuracy", "auc"):
            assert metrics[key] == pytest.approx(ref_metrics[key], abs=1e-3), key
    # epoch averages of the epochs the resumes fell in cover the whole epoch (sums of 2 ranks merged into 1, and
    # of 1 rank handed to rank 0 of 2)
    ref_losses = epoch_losses(full / "logs")
    assert epoch_losses(one / "logs") == pytest.approx({1: ref_losses[1], 2: ref_losses[2]}, rel=1e-4)
    assert epoch_losses(back / "logs") == pytest.approx({2: ref_losses[2]}, rel=1e-4)


DM = ["+experiment=dm_joint", "head=cosface", "loss=none", "data.sampler.num_random=3",
      "data.train.images_per_identity=[3,5]", "benchmark.oneshot.num_novel=20", *TINY, "classifier=partial_fc",
      "classifier.sample_rate=1.0", "backbone.norm=group", "trainer.max_epochs=3",
      *[a.replace("every_n_train_steps=4", "every_n_train_steps=3") for a in STEP_CKPTS]]


def test_doppelganger_mining_with_partial_fc_resumes_from_two_ranks_on_one(tmp_path):
    """The doppelganger sampler's batches (two 27-image doppelganger batches per global batch, kept on 1 process),
    the mined list and the Partial FC prototypes (2 shards -> 1) with their SGD momentum continue exactly."""
    full = tmp_path / "full"
    run_cli([*DM, "trainer=ddp", "data.batch_size=27"], full, timeout=300)
    one = tmp_path / "one"
    run_cli([*DM, "data.batch_size=54", f"ckpt_path={take(full / 'logs', 'sstep=6.ckpt', tmp_path / 's6.ckpt')}"],
            one)
    a, b = last(full / "logs"), last(one / "logs")
    assert_same_state(a, b)
    dm = next(k for k in a["callbacks"] if "Doppelganger" in k)
    assert (a["callbacks"][dm]["doppelganger"] >= 0).sum() > 10
    assert torch.equal(a["callbacks"][dm]["doppelganger"], b["callbacks"][dm]["doppelganger"])
    index = a["facelearn_sharded"]["objective.head"]
    momentum = [c["optimizer_states"][0]["state"][index]["momentum_buffer"] for c in (a, b)]
    assert torch.allclose(*momentum, atol=1e-5)
