"""A resumed run continues its loggers: the CSV keeps the rows before the checkpoint's step, W&B keeps its run id."""

import csv

import pytest

from facelearn.loggers import ContinuingCSVLogger, wandb_logger


def test_csv_continues_and_drops_rows_after_the_checkpoint(tmp_path):
    first = ContinuingCSVLogger(save_dir=str(tmp_path), name="csv", version="")
    for step in range(6):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.save()
    resumed = ContinuingCSVLogger(save_dir=str(tmp_path), name="csv", version="")
    resumed.resume_from(4)  # checkpoint after step 3: steps 4, 5 are redone
    resumed.log_metrics({"train/loss": 40.0, "diag/effective_rank": 2.0}, step=4)
    resumed.save()
    with open(tmp_path / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4]
    assert rows[-1]["train/loss"] == "40.0" and rows[-1]["diag/effective_rank"] == "2.0"
    fresh = ContinuingCSVLogger(save_dir=str(tmp_path), name="csv", version="")
    with pytest.warns(UserWarning, match="will be deleted"):
        fresh.log_metrics({"train/loss": 1.0}, step=0)
    fresh.save()  # a new (not resumed) run in the same directory starts a new file, as Lightning's does
    with open(tmp_path / "csv" / "metrics.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 1


def test_wandb_run_id_is_kept_per_run_directory(tmp_path):
    a = wandb_logger(save_dir=str(tmp_path / "run"), mode="disabled")
    b = wandb_logger(save_dir=str(tmp_path / "run"), mode="disabled")
    c = wandb_logger(save_dir=str(tmp_path / "other"), mode="disabled")
    assert a._wandb_init["id"] == b._wandb_init["id"] != c._wandb_init["id"]
    assert a._wandb_init["resume"] == "allow"


def test_csv_continue_drops_a_line_cut_by_a_kill(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("epoch,step,train/loss\n0,0,1.0\n0,1,0.9\n0,2,0.8,0.7,9\n0,3")
    logger = ContinuingCSVLogger(save_dir=str(tmp_path), name="csv", version="")
    logger.resume_from(3)
    logger.log_metrics({"train/loss": 0.5}, step=3)
    logger.save()
    with open(tmp_path / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["step"] for r in rows] == ["0", "1", "3"]


def test_missing_optional_packages_name_the_extra(monkeypatch, tmp_path):
    """wandb and faiss are extras: without them, logger=wandb says what to install and IDA falls back or says so."""
    import sys

    import torch

    from facelearn.eval import ida
    from facelearn.loggers import wandb_logger

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"pip install 'facelearn\[wandb\]'"):
        wandb_logger(save_dir=str(tmp_path))
    monkeypatch.setattr(ida, "faiss", None)
    assert ida.AnchorIndex(torch.randn(5, 4)).backend == "torch"  # exact search still works
    with pytest.raises(ValueError, match=r"needs faiss \(pip install 'facelearn\[faiss\]' or faiss-gpu\)"):
        ida.AnchorIndex(torch.randn(5, 4), kind="ivf")
