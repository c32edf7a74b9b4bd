"""Partial FC (facelearn.nn.partial_fc): equal to the full classifier at sample rate 1 (1 process and 2 gloo ranks),
sampling, sharding, checkpoints, errors, and training through the CLI (single process and 2-rank DDP)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from facelearn.nn import heads
from facelearn.nn.partial_fc import PartialFC, shard_range
from facelearn.nn.selection import DominantPrototypes

from conftest import TINY, run_cli

D = 8
MARGINS = {"cosface": lambda n: heads.CosFace(D, n, scale=8.0, margin=0.3),
           "arcface": lambda n: heads.ArcFace(D, n, scale=8.0, margin=0.4),
           "normface": lambda n: heads.NormFace(D, n, scale=8.0),
           "combined": lambda n: heads.CombinedMargin(D, n, scale=8.0, m1=1.0, m2=0.3, m3=0.1),
           "sphereface": lambda n: heads.SphereFace(D, n, scale=8.0, margin=2, lambda_base=5.0)}


def _pair(margin: str, num_classes: int, rate: float = 1.0):
    full = MARGINS[margin](num_classes)
    pfc = PartialFC(MARGINS[margin](0), num_classes, sample_rate=rate, seed=0)
    pfc.shard()
    pfc.weight.data.copy_(full.weight.data)
    return full, pfc


@pytest.mark.parametrize("margin", sorted(MARGINS))
def test_one_process_rate_one_equals_the_full_head(margin):
    torch.manual_seed(0)
    full, pfc = _pair(margin, 13)
    x = torch.randn(9, D, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y = torch.randint(0, 13, (9,))
    ref = F.cross_entropy(full(x, y), y)
    ref.backward()
    out = pfc.cross_entropy(x2, y)
    out.loss.backward()
    assert torch.allclose(out.loss, ref, atol=1e-6)
    assert torch.allclose(pfc.weight.grad, full.weight.grad, atol=1e-6)
    assert torch.allclose(x2.grad, x.grad, atol=1e-6)
    assert out.score_labels is None and out.score_rows is None and out.scores.shape == (9, 13)
    assert out.acc == (full(x, y).argmax(1) == y).float().mean()


def test_sampling_keeps_positives_and_fills_with_random_negatives():
    pfc = PartialFC(heads.CosFace(D, 0), 100, sample_rate=0.1, seed=0)
    pfc.shard()
    labels = torch.tensor([3, 3, 50, 99])
    index, targets = pfc.sample(labels)
    assert len(index) == 10 and torch.equal(index, index.sort().values) and len(set(index.tolist())) == 10
    assert {3, 50, 99} <= set(index.tolist())
    assert torch.equal(index[targets], labels)  # each label's column points at its class
    # more positives than ceil(rate * C): all positives, nothing else
    many = torch.arange(0, 40, 2)
    index, targets = pfc.sample(many)
    assert torch.equal(index, many) and torch.equal(index[targets], many)


def test_sampled_loss_is_the_cross_entropy_over_the_sampled_columns():
    torch.manual_seed(0)
    full, pfc = _pair("arcface", 40, rate=0.25)
    x, y = torch.randn(6, D), torch.tensor([1, 5, 5, 30, 39, 12])
    torch.manual_seed(7)
    out = pfc.cross_entropy(x, y)
    torch.manual_seed(7)
    index, _ = pfc.sample(y)
    assert torch.equal(out.score_labels, index) and len(index) == 10
    logits = full(x, y).masked_fill(~torch.isin(torch.arange(40), index), float("-inf"))
    assert torch.allclose(out.loss, F.cross_entropy(logits, y), atol=1e-6)
    assert torch.allclose(out.scores, logits[:, index], atol=1e-5)


def test_two_gloo_ranks_equal_the_replicated_full_classifier(tmp_path):
    """sample rate 1: loss, accuracy, shard gradients and the DDP-averaged backbone gradients (and a learnable
    scale's) equal one process with the full classifier, for every margin; with sampling (0.7) they equal the full softmax restricted to the columns
    the ranks sampled (rank 0: 4 positives + 1 negative of 6 classes; rank 1: 2 positives + 2 negatives of 5)."""
    cases = [f"{m}:1" for m in sorted(MARGINS)] + ["cosface:0.7", "arcface:0.7", "learnable:1", "learnable:0.7"]
    script = Path(__file__).parents[1] / "scripts" / "ddp_partial_fc.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), *cases], capture_output=True, text=True,
                          timeout=240, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    for case in cases:
        margin, rate = case.split(":")
        r0, r1 = (torch.load(tmp_path / f"{margin}_{float(rate):g}_rank{r}.pt") for r in (0, 1))
        # memory: each rank holds its half of the 11 classes
        assert (r0["num_local"], r1["num_local"]) == (6, 5) and (r0["class_start"], r1["class_start"]) == (0, 6)
        for r in (r0, r1):
            assert torch.allclose(r["loss"], r["ref_loss"], atol=1e-5), case
            assert r["acc"] == r["ref_acc"], case
            assert torch.allclose(r["shard_grad"], r["ref_shard_grad"], atol=1e-6), case
            for got, ref in zip(r["backbone_grad"], r["ref_backbone_grad"]):
                assert torch.allclose(got, ref, atol=1e-6), case
            assert r["score_rows"].tolist() == [0, 7, 3, 10, 7, 5, 1, 3]  # the gathered batch's labels
            if margin == "learnable":  # a replicated parameter of the margin: DDP's average = the full gradient
                assert torch.allclose(r["scale_grad"], r["ref_scale_grad"], atol=1e-5), case
        if rate == "1":
            assert r0["union"].tolist() == list(range(11))
        else:
            assert len(r0["sampled"]) == 5 and len(r1["sampled"]) == 4
            assert {0, 1, 3, 5} <= set(r0["sampled"].tolist()) and {7, 10} <= set(r1["sampled"].tolist())


def test_shards_cover_the_classes_and_initialisation_does_not_depend_on_the_world_size():
    for c, w in ((11, 2), (10, 3), (5, 5), (100_003, 8)):
        ranges = [shard_range(c, r, w) for r in range(w)]
        assert sum(n for _, n in ranges) == c and [s for s, _ in ranges] == [sum(n for _, n in ranges[:r])
                                                                           for r in range(w)]
        assert max(n for _, n in ranges) == math.ceil(c / w)
    one = PartialFC(heads.CosFace(D, 0), 9000, seed=3)
    one.shard(0, 1)
    parts = []
    for rank in range(3):
        p = PartialFC(heads.CosFace(D, 0), 9000, seed=3)
        p.shard(rank, 3)
        assert p.num_local == 3000 and p.sharded
        parts.append(p.weight.data)
    assert torch.equal(torch.cat(parts), one.weight.data)
    assert abs(one.weight.std().item() - 0.01) < 1e-3


def test_checkpoint_of_all_classes_loads_into_a_shard_and_unsharded():
    src = PartialFC(heads.CosFace(D, 0), 7, seed=1)
    src.shard()
    state = src.state_dict()
    fresh = PartialFC(heads.CosFace(D, 0), 7, seed=2)
    fresh.load_state_dict(state)  # not yet allocated: allocated for this process, then loaded
    assert torch.equal(fresh.weight, src.weight)
    shard = PartialFC(heads.CosFace(D, 0), 7, seed=2)
    shard.shard(1, 2)
    shard.load_state_dict(state)
    assert torch.equal(shard.weight, src.weight[4:])
    with pytest.raises(ValueError, match="holds 7 prototypes, the classifier has 8"):
        PartialFC(heads.CosFace(D, 0), 8).load_state_dict(state)


@pytest.mark.parametrize("make, match", [
    (lambda: PartialFC(heads.Softmax(D, 0), 5), "normalised-prototype margin head"),
    (lambda: PartialFC(heads.L2Softmax(D, 0), 5), "normalised-prototype margin head"),
    (lambda: PartialFC(heads.CosFace(D, 5), 5), "num_classes=0"),
    (lambda: PartialFC(heads.CosFace(D, 0, selection=DominantPrototypes(2)), 5), "selection"),
    (lambda: PartialFC(heads.CosFace(D, 0), 5, sample_rate=0), "sample_rate=0"),
    (lambda: PartialFC(heads.CosFace(D, 0), 5, sample_rate=1.5), "sample_rate=1.5"),
])
def test_bad_configurations_name_the_option(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_unallocated_or_references_are_refused():
    pfc = PartialFC(heads.CosFace(D, 0), 5)
    with pytest.raises(RuntimeError, match="shard"):
        pfc.cross_entropy(torch.randn(2, D), torch.tensor([0, 1]))
    pfc.shard()
    with pytest.raises(ValueError, match="gallery queue"):
        pfc.cross_entropy(torch.randn(2, D), torch.tensor([0, 1]), prototypes=torch.randn(3, D))


@pytest.mark.parametrize("args, match", [
    (["classifier=partial_fc", "head=none", "loss=contrastive"], "needs a margin head"),
    (["+experiment=sst_shallow", "classifier=partial_fc"], "gallery queue"),
])
def test_cli_refuses_partial_fc_without_own_prototypes(tmp_path, args, match):
    proc = subprocess.run([sys.executable, "-m", "facelearn.train", *TINY, *args, f"paths.log_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, HYDRA_FULL_ERROR="1"))
    assert proc.returncode != 0 and match in proc.stderr


def test_cli_two_ranks_train_evaluate_and_resume_with_doppelganger_mining(tmp_path):
    """The user's command: DM (sampler + mining callback) with Partial FC on 2 gloo ranks; the checkpoint holds all
    prototypes (and their momentum), evaluates in one process to the training-time metrics and resumes on 2 ranks."""
    dm = ["+experiment=dm_joint", "head=cosface", "loss=none", "data.batch_size=27", "data.sampler.num_random=3",
          "data.train.images_per_identity=[3,5]", "benchmark.oneshot.num_novel=20"]
    run_cli([*dm, *TINY, "classifier=partial_fc", "classifier.sample_rate=0.5", "trainer=ddp",
             "trainer.max_epochs=2", "callbacks.benchmark.every_n_epochs=1"], tmp_path)
    run_dir = next((tmp_path / "logs").rglob("benchmark_metrics.json")).parent
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    classes = ckpt["facelearn_num_classes"]
    assert ckpt["state_dict"]["objective.head.weight"].shape[0] == classes
    index = ckpt["facelearn_sharded"]["objective.head"]
    assert ckpt["optimizer_states"][0]["state"][index]["momentum_buffer"].shape[0] == classes
    dm_list = next(v for k, v in ckpt["callbacks"].items() if "Doppelganger" in k)["doppelganger"]
    assert (dm_list >= 0).sum() > 0  # mining saw the gathered scores
    trained = json.loads((run_dir / "benchmark_metrics.json").read_text())["metrics"]
    proc = run_cli([f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"], tmp_path, module="facelearn.evaluate")
    evaluated = json.loads(next((tmp_path / "logs").rglob("evaluation.json")).read_text())
    assert trained
    for name, metrics in trained.items():
        numbers = {k: v for k, v in metrics.items() if isinstance(v, float)}
        assert numbers and {k: evaluated["metrics"][name][k] for k in numbers} == pytest.approx(numbers), proc.stdout
    # resumed on 2 ranks (on 1 process with the global batch kept: tests/callbacks/test_world_size_resume.py)
    run_cli([*dm, *TINY, "classifier=partial_fc", "classifier.sample_rate=0.5", "trainer=ddp", "trainer.max_epochs=3",
             f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"], tmp_path)
