"""The debug group on data that is not synthetic (an identity folder): +debug=tiny|fdr|overfit run as typed, with no
data-specific key and without Lightning's too-few-batches warning."""

import csv
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for p in range(12):
        base = rng.integers(0, 255, (3, 3, 3))
        for i in range(4):  # a per-person colour layout plus noise: learnable, so overfitting is visible
            img = np.kron(base, np.ones((12, 12, 1))) + rng.normal(0, 20, (36, 36, 3))
            (root / f"p{p:02d}").mkdir(exist_ok=True)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"p{p:02d}" / f"{i}.png")
    return root


def run(folder, tmp_path, debug, *extra):
    args = ["data=folder", f"data.train.root={folder}", "data.image_size=32", "data.batch_size=8",
            "benchmark=none", "monitor=null", f"+debug={debug}", *extra]
    proc = subprocess.run([sys.executable, "-m", "facelearn.train", *args, f"paths.log_dir={tmp_path / 'logs'}",
                           f"paths.cache_dir={tmp_path / 'cache'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "log_every_n_steps" not in proc.stderr and "PossibleUserWarning" not in proc.stderr, proc.stderr[-3000:]
    return proc


def train_rows(tmp_path):
    path = next((tmp_path / "logs").rglob("csv/metrics.csv"))
    with open(path) as fh:
        return [r for r in csv.DictReader(fh) if r.get("train/loss_step")]


def test_tiny_is_three_steps_of_two_epochs_on_any_data(folder, tmp_path):
    run(folder, tmp_path, "tiny")
    rows = train_rows(tmp_path)
    assert [int(r["step"]) for r in rows] == list(range(6)), rows  # 2 epochs x 3 batches, each step logged


def test_fdr_is_one_batch_and_writes_no_checkpoint(folder, tmp_path):
    proc = run(folder, tmp_path, "fdr")
    assert "fast_dev_run" in proc.stdout + proc.stderr or "Running in `fast_dev_run` mode" in proc.stderr
    assert not list((tmp_path / "logs").rglob("*.ckpt"))


def test_overfit_fits_the_same_two_batches(folder, tmp_path):
    run(folder, tmp_path, "overfit", "optimizer.lr=0.01")
    rows = train_rows(tmp_path)
    first, last = float(rows[0]["train/loss_step"]), float(rows[-1]["train/loss_step"])
    assert len(rows) == 80 and last < 0.1 * first, (first, last)
