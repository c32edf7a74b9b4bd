"""Representation diagnostics by hand, and the callback logging them during a real (tiny) SST run."""

import csv
import math

import pytest
import torch

from conftest import TINY, run_cli
from facelearn.eval.representation import effective_rank, mean_negative_cosine, mean_pair_cosine


def test_effective_rank_by_hand():
    # Singular values of diag(3, 1) are 3 and 1: p = (3/4, 1/4), H = -(3/4 ln 3/4 + 1/4 ln 1/4).
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert effective_rank(torch.tensor([[3.0, 0.0], [0.0, 1.0]])) == pytest.approx(math.exp(h), rel=1e-6)
    # Collapse: every row the same direction -> rank 1; orthonormal rows -> rank D.
    assert effective_rank(torch.ones(8, 4)) == pytest.approx(1.0, abs=1e-5)
    assert effective_rank(torch.eye(5)) == pytest.approx(5.0, rel=1e-6)
    assert effective_rank(torch.zeros(3, 3)) == 0.0


def test_negative_and_pair_cosines_by_hand():
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 2])
    # different-identity pairs (both orders): (0,2) 0, (0,3) -1, (1,2) 0, (1,3) -1, (2,3) 0 -> mean -2/5
    assert mean_negative_cosine(e, labels) == pytest.approx(-0.4)
    assert math.isnan(mean_negative_cosine(e[:2], labels[:2]))
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    assert mean_pair_cosine(a, b) == pytest.approx((1 / math.sqrt(2) - 1) / 2)


def test_diagnostics_logged_for_sst_and_conventional(tmp_path):
    for exp, extra in (("sst_shallow", ["method.queue_size=48", "data.batch_size=16"]), ("conventional_shallow", [])):
        run_cli([f"+experiment={exp}", *TINY, *extra, "callbacks.diagnostics.every_n_steps=2"], tmp_path / exp)
        (metrics,) = (tmp_path / exp / "logs").rglob("metrics.csv")
        with metrics.open() as fh:
            rows = list(csv.DictReader(fh))
        diag = [r for r in rows if r.get("diag/effective_rank")]
        assert len(diag) >= 3
        for r in diag:
            assert 1.0 <= float(r["diag/effective_rank"]) <= 64.0
            assert -1.0 <= float(r["diag/negative_cosine"]) <= 1.0
        if exp == "sst_shallow":
            ages = [float(r["diag/queue_age"]) for r in diag]
            # 48-entry queue of 8 identities per step: once full it holds steps t-6 .. t-1 when step t scores.
            assert max(ages) == 6.0 and ages[0] == 0.0
            assert all(-1.0 <= float(r["diag/probe_gallery_cosine"]) <= 1.0 for r in diag)
        else:
            assert "diag/queue_age" not in rows[0] or not any(r["diag/queue_age"] for r in rows)
