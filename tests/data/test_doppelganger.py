"""Doppelganger list updates, sampler chains, coverage@precision, the one-shot split, DDP and resume."""

import numpy as np
import pytest
import torch

from facelearn.data.doppelganger import DoppelgangerList, DoppelgangerSampler
from facelearn.protocols.oneshot import OneShotSplit
from facelearn.data.synthetic import SyntheticFaces
from facelearn.eval.identification import coverage_at_precision


def update_from_scores(dl, scores, labels):
    cand, val = DoppelgangerList.batch_candidates(torch.tensor(scores), torch.tensor(labels))
    return dl.update(torch.tensor(labels), cand, val)


def test_candidates_from_columns_of_several_prototypes_per_class():
    """SST's scores: columns are gallery features + queue entries, a class may own several columns, and every
    column of the sample's own class is excluded (by hand)."""
    scores = torch.tensor([[0.9, 0.8, 0.3, 0.5, float("-inf")],   # own class 7 in cols 0, 4: best other col 1 -> 3
                           [0.2, 0.1, 0.6, 0.4, 0.7]])            # own class 3 in cols 1, 3: best other col 4 -> 7
    columns = torch.tensor([7, 3, 5, 3, 7])
    cand, val = DoppelgangerList.batch_candidates(scores, torch.tensor([7, 3]), columns)
    assert cand.tolist() == [3, 7] and val.tolist() == pytest.approx([0.8, 0.7])


def test_list_update_by_hand():
    dl = DoppelgangerList(5)
    scores = [[0.9, 0.5, 0.7, 0.1, 0.0],   # class 0: best other = 2 (0.7); own score 0.9 is excluded
              [0.8, 0.2, 0.1, 0.3, 0.0],   # class 0 again: best other = 3 (0.3) < 0.7 -> class 0 keeps 2
              [0.6, 0.9, 0.6, 0.2, 0.0]]   # class 1: tie 0.6 between classes 0 and 2 -> lowest index 0
    assert update_from_scores(dl, scores, [0, 0, 1]) == 2
    assert dl.doppelganger.tolist() == [2, 0, -1, -1, -1]  # classes 2-4 absent from the batch: untouched
    assert dl.num_assigned == 2
    # the true class is excluded even when it is not the top score
    assert update_from_scores(dl, [[0.1, 0.0, 0.0, 0.95, 0.2]], [3]) == 1
    assert dl.doppelganger[3] == 4
    assert update_from_scores(dl, [[0.1, 0.0, 0.0, 0.95, 0.2]], [3]) == 0  # unchanged entry: no change counted
    assert "doppelganger" in dl.state_dict()


def make_sampler(dops=None, **kw):
    labels = np.repeat(np.arange(20), 4)
    s = DoppelgangerSampler(labels, batch_size=kw.pop("batch_size", 12), images_per_class=kw.pop("ipc", 3), **kw)
    if dops is not None:
        s.doppelgangers = DoppelgangerList(20)
        s.doppelgangers.doppelganger.copy_(torch.tensor(dops))
    return s, labels


def test_sampler_chains_follow_the_list():
    # chain 0 -> 1 -> 2 -> 3 ...: with N_r = 1 every further class is the doppelganger of the previous one
    s, labels = make_sampler([(c + 1) % 20 for c in range(20)], num_random=1)
    for i in range(5):
        batch = s.build_batch(0, i)
        classes = s.last_classes
        assert len(classes) == 4 and len(batch) == 12
        assert all(classes[j + 1] == (classes[j] + 1) % 20 for j in range(3))
        assert sorted(np.unique(labels[batch], return_counts=True)[1]) == [3] * 4


def test_sampler_n_r_two_gives_pairs_and_fallbacks():
    dops = [-1] * 20
    dops[5] = 6
    s, _ = make_sampler(dops, num_random=2)
    for i in range(30):
        s.build_batch(0, i)
        c = s.last_classes
        assert len(set(c)) == len(c)  # never a duplicate class
        for j in range(2, 4):
            if c[j - 2] == 5 and 6 not in c[:j]:
                assert c[j] == 6
    # a doppelganger already in the batch falls back to a random class (no cycles): 0 <-> 1
    s, _ = make_sampler([1, 0] + [-1] * 18, num_random=1)
    for i in range(30):
        s.build_batch(0, i)
        assert len(set(s.last_classes)) == 4


def test_n_r_equal_n_c_is_random_sampling_and_ratio():
    s_full, _ = make_sampler([(c + 1) % 20 for c in range(20)], num_random=4)
    s_none, _ = make_sampler(None, num_random=4)
    assert [s_full.build_batch(1, i) for i in range(5)] == [s_none.build_batch(1, i) for i in range(5)]
    s, _ = make_sampler(None, random_ratio=1 / 3, batch_size=81, ipc=3)
    assert s.n_random(27) == 9
    with pytest.raises(ValueError, match="exactly one"):
        make_sampler(None, num_random=2, random_ratio=0.5)


def test_count_range_and_ranks_disjoint():
    s, labels = make_sampler(None, num_random=2, ipc=[2, 5], batch_size=16)
    for i in range(10):
        b = s.build_batch(0, i)
        counts = np.unique(labels[b], return_counts=True)[1]
        assert len(b) == 16 and counts.min() >= 2
    ranks = [make_sampler(None, num_random=2, num_replicas=2, rank=r)[0] for r in (0, 1)]
    for i in range(10):
        b0, b1 = ranks[0].build_batch(0, i), ranks[1].build_batch(0, i)
        assert not set(np.repeat(np.arange(20), 4)[b0]) & set(np.repeat(np.arange(20), 4)[b1])


def test_sampler_resume_position():
    s, _ = make_sampler(None, num_random=2)
    full = list(s)
    r, _ = make_sampler(None, num_random=2)
    r.load_state_dict({"epoch": 0, "start": 2, "seed": 0})
    assert list(r) == full[2:]


def test_coverage_at_precision_by_hand():
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 0, 1, 1], bool)
    # precision of the top k: 1, 1, 2/3, 3/4, 4/5 -> at 99 %: k = 2 -> 40 %; at 80 %: k = 5 -> 100 %;
    # at 76 %: still k = 5 (the largest k that qualifies, although k = 4 does not)
    assert coverage_at_precision(conf, correct, 0.99) == pytest.approx(0.4)
    assert coverage_at_precision(conf, correct, 0.8) == pytest.approx(1.0)
    assert coverage_at_precision(conf, correct, 0.85) == pytest.approx(0.4)
    assert coverage_at_precision(conf, ~correct, 0.99) == 0.0
    assert coverage_at_precision(conf[::-1], correct[::-1], 0.99) == pytest.approx(0.4)  # order by confidence


def test_oneshot_split_partitions_and_filters_training():
    src = SyntheticFaces(num_identities=30, images_per_identity=[2, 5], seed=0)
    split = OneShotSplit(src, num_novel=5, base_test_per_class=1, base_test_min_images=3, seed=0)
    records = src.load(16)
    train = split.filter_training(records, 16)
    novel = split.identities()
    assert len(novel) == 5 and not (train.identity_set & novel)
    ident = split.load(16)
    assert ident.enrol[ident.novel].sum() == 5  # one enrolment image per novel class
    n_base_test = int((~ident.enrol & ~ident.novel).sum())
    assert len(train) == len(records) - int(ident.novel.sum()) - n_base_test


def test_ddp_two_ranks_hold_the_same_list(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "ddp_doppelganger.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                          timeout=240, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["steps"] == r1["steps"] == 6 and torch.equal(r0["list"], r1["list"])
    assert int((r0["list"] >= 0).sum()) > 0
    for c0, c1 in zip(r0["classes"], r1["classes"]):
        assert not set(c0) & set(c1)  # disjoint batches
    # every class seen by either rank got a doppelganger: the update merged both ranks' candidates
    seen = set(sum(r0["classes"] + r1["classes"], []))
    assert all(int(r0["list"][c]) >= 0 for c in seen)


def test_callback_state_roundtrip():
    from facelearn.callbacks import DoppelgangerCallback

    class _DM:
        num_classes = 4

    class _T:
        datamodule = _DM()

    cb = DoppelgangerCallback()
    cb.setup(_T(), None, "fit")
    cb.list.doppelganger.copy_(torch.tensor([1, 0, -1, 2]))
    state = cb.state_dict()
    fresh = DoppelgangerCallback()
    fresh.load_state_dict(state)
    fresh.setup(_T(), None, "fit")
    assert fresh.list.doppelganger.tolist() == [1, 0, -1, 2]


def test_identification_folder_rank1_with_distractors(tmp_path):
    from PIL import Image

    from facelearn.protocols.oneshot import IdentificationFolder
    from facelearn.eval.embedding import evaluate_set

    rng = np.random.default_rng(0)
    for p in range(4):
        base = rng.integers(0, 255, (8, 8, 3))
        for i in range(3):  # small noise around each person's pattern: rank-1 must be perfect
            img = np.clip(base + rng.integers(-5, 6, (8, 8, 3)), 0, 255).astype(np.uint8)
            (tmp_path / "ids" / f"p{p}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(tmp_path / "ids" / f"p{p}" / f"{i}.png")
    (tmp_path / "distract").mkdir()
    for d in range(5):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)).save(tmp_path / "distract" / f"{d}.png")
    ident = IdentificationFolder(str(tmp_path / "ids"), str(tmp_path / "distract")).load(8)
    assert len(ident.labels) == 17 and ident.enrol.sum() == 4 + 5

    class _Pixels(torch.nn.Module):
        training = False

        @property
        def device(self):
            return torch.device("cpu")

        def embed(self, x):
            return torch.nn.functional.normalize(x.float().flatten(1) - 127.5, dim=1)

    m = evaluate_set(_Pixels(), ident)
    assert m["probe/top1"] == 1.0 and m["probe/coverage@99"] == 1.0
    assert sorted(k for k in m if "coverage" in k) == ["probe/coverage@99", "probe/coverage@99.9"]
    levels = IdentificationFolder(str(tmp_path / "ids"), str(tmp_path / "distract"), precisions=[0.99, 0.5])
    m = evaluate_set(_Pixels(), levels.load(8))
    assert sorted(k for k in m if "coverage" in k) == ["probe/coverage@50", "probe/coverage@99"]
    with pytest.raises(ValueError, match=r"benchmark.identification.precisions must be fractions in \(0, 1\]"):
        IdentificationFolder(str(tmp_path / "ids"), precisions=[99])


def test_no_image_twice_in_a_batch_and_counts_in_range():
    """LFW-like classes, most with 1-2 images: no image repeats, the batch keeps its size, short classes counted."""
    from facelearn.data.doppelganger import DoppelgangerSampler
    rng = np.random.default_rng(0)
    sizes = rng.choice([1, 1, 1, 2, 2, 3, 6], 300)
    labels = np.repeat(np.arange(300), sizes)
    s = DoppelgangerSampler(labels, batch_size=81, images_per_class=3, num_random=9, seed=0)
    for i in range(20):
        b = s.build_batch(0, i)
        assert len(b) == 81 and len(set(b)) == 81
        _, counts = np.unique(labels[b], return_counts=True)
        assert counts.max() <= 3
    assert s.short_classes > 0
    # the count range is kept when the batch is a sum of in-range counts: 16 from [3, 5] never gives a 1 or a 6
    s2 = DoppelgangerSampler(np.repeat(np.arange(40), 8), batch_size=16, images_per_class=[3, 5], num_random=4)
    for i in range(50):
        counts = np.unique(np.repeat(np.arange(40), 8)[s2.build_batch(0, i)], return_counts=True)[1]
        assert counts.min() >= 3 and counts.max() <= 5 and counts.sum() == 16


def test_table6_classifier_finetuning_starts_from_mean_embeddings_and_helps_on_separable_data():
    """With 0 iterations the fine-tuned classifier is the mean-embedding classifier (plus alpha); trained, it fits
    the enrolment set at least as well and reports finetuned_* metrics."""
    from facelearn.eval.identification import classifier_identification_metrics, finetune_classifier
    torch.manual_seed(0)
    centers = torch.nn.functional.normalize(torch.randn(30, 16), dim=1)
    labels = torch.arange(30).repeat_interleave(4)
    emb = torch.nn.functional.normalize(centers[labels] + 0.1 * torch.randn(120, 16), dim=1)
    w0, b0, a0 = finetune_classifier(emb, labels, 30, iterations=0)
    protos = torch.nn.functional.normalize(torch.stack([emb[labels == c].mean(0) for c in range(30)]), dim=1)
    assert torch.allclose(w0, protos, atol=1e-6) and float(b0.abs().sum()) == 0 and float(a0) == 16.0
    w, b, a = finetune_classifier(emb, labels, 30, iterations=200, lr=(0.1, 0.01), classes_per_batch=20)
    loss = lambda W, B, A: float(torch.nn.functional.cross_entropy(A * emb @ W.T + B, labels))  # noqa: E731
    assert loss(w, b, a) < loss(w0, b0, a0)
    enrol = torch.arange(120) % 4 != 0
    groups = {"novel": labels < 10, "base": labels >= 10}
    m = classifier_identification_metrics(emb, labels, enrol, groups, (0.99,), iterations=50)
    assert set(m) == {"novel/finetuned_top1", "novel/finetuned_coverage@99", "base/finetuned_top1",
                      "base/finetuned_coverage@99"}
    assert m["base/finetuned_top1"] > 0.8


def test_three_ranks_get_disjoint_classes():
    """Every rank builds all ranks' doppelganger batches with the same draws (images included), so no class is in
    two ranks' batches of a step, with any number of ranks."""
    labels = np.repeat(np.arange(40), 4)
    ranks = [DoppelgangerSampler(labels, batch_size=9, images_per_class=3, num_random=1, num_replicas=3, rank=r)
             for r in range(3)]
    for i in range(10):
        classes = [set(labels[s.build_batch(0, i)].tolist()) for s in ranks]
        assert all(len(c) == 3 for c in classes)
        assert not (classes[0] & classes[1] or classes[0] & classes[2] or classes[1] & classes[2])


def test_a_resumed_sampler_on_another_split_keeps_the_runs_doppelganger_batches():
    """2 ranks x 12: each step's global batch is two 12-image doppelganger batches (chains from the live list). On
    1 process x 24 with the run's unit (12, restored from the checkpoint) the sampler yields their concatenation;
    on 4 ranks x 6 each rank half of one. A fresh 1 x 24 run builds 24-image doppelganger batches instead."""
    dops = [(c + 1) % 20 for c in range(20)]
    two = [make_sampler(dops, num_random=2, num_replicas=2, rank=r)[0] for r in (0, 1)]
    one = make_sampler(dops, num_random=2, batch_size=24)[0]
    four = [make_sampler(dops, num_random=2, batch_size=6, num_replicas=4, rank=r)[0] for r in range(4)]
    state = {**two[0].state_dict(), "start": 1}
    assert state["unit"] == 12
    for s in (one, *four):
        s.load_state_dict(state)
    for s in two:
        s.start = 1
    expected = [b0 + b1 for b0, b1 in zip(*(list(s) for s in two))]
    assert len(expected) == two[0].batches_per_epoch - 1
    assert list(one) == expected
    assert [sum(parts, []) for parts in zip(*(list(s) for s in four))] == expected
    fresh = make_sampler(dops, num_random=2, batch_size=24)[0]
    assert fresh.build_batch(0, 1) != expected[0]
