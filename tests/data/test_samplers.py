"""Batch sampler invariants: P x K shape, identity pairs, disjoint DDP ranks, seed determinism, resume."""

import numpy as np
import pytest

from facelearn.data.samplers import IdentityPairSampler, MPerClassBatchSampler, ShuffleBatchSampler

LABELS = np.repeat(np.arange(40), [2, 3, 5, 6] * 10)  # 40 identities with 2..6 images


def test_m_per_class_shape_and_coverage():
    s = MPerClassBatchSampler(LABELS, batch_size=16, images_per_class=4, seed=0)
    batches = list(s)
    assert len(batches) == len(s) == 40 // 4
    for b in batches:
        lab = LABELS[b]
        assert len(b) == 16 and sorted(np.unique(lab, return_counts=True)[1]) == [4] * 4
    seen = np.concatenate([np.unique(LABELS[b]) for b in batches])
    assert len(seen) == len(set(seen)) == 40  # every identity once per epoch


def test_identity_pairs_are_two_distinct_images_of_one_identity():
    s = IdentityPairSampler(LABELS, batch_size=8, seed=1)
    for b in s:
        b = np.array(b).reshape(-1, 2)
        assert (LABELS[b[:, 0]] == LABELS[b[:, 1]]).all() and (b[:, 0] != b[:, 1]).all()
        assert len(np.unique(LABELS[b[:, 0]])) == 4
    s.set_epoch(1)
    assert list(s) != list(IdentityPairSampler(LABELS, batch_size=8, seed=1))  # new images/order each epoch
    single = IdentityPairSampler(np.r_[LABELS, 40], batch_size=8)  # one single-image identity
    assert single.skipped == 1


@pytest.mark.parametrize("cls,kw", [(MPerClassBatchSampler, {"images_per_class": 2}), (IdentityPairSampler, {})])
def test_ranks_disjoint_equal_length_deterministic(cls, kw):
    ranks = [cls(LABELS, batch_size=8, seed=5, num_replicas=3, rank=r, **kw) for r in range(3)]
    per_rank = [list(r) for r in ranks]
    assert len({len(p) for p in per_rank}) == 1 and len(per_rank[0]) > 0
    ids = [set(LABELS[np.concatenate(p)].tolist()) for p in per_rank]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    again = [list(cls(LABELS, batch_size=8, seed=5, num_replicas=3, rank=r, **kw)) for r in range(3)]
    assert again == per_rank
    other = list(cls(LABELS, batch_size=8, seed=6, num_replicas=3, rank=0, **kw))
    assert other != per_rank[0]


@pytest.mark.parametrize("cls,kw", [(MPerClassBatchSampler, {"images_per_class": 4}), (IdentityPairSampler, {})])
def test_resume_gives_the_remaining_batches(cls, kw):
    full = cls(LABELS, batch_size=8, seed=3, **kw)
    full.set_epoch(2)
    expected = list(full)
    resumed = cls(LABELS, batch_size=8, seed=3, **kw)
    resumed.load_state_dict({"epoch": 2, "start": 3, "seed": 3})
    resumed.set_epoch(2)  # Lightning calls set_epoch with the same epoch on restart: position kept
    assert len(resumed) == len(expected) - 3
    assert list(resumed) == expected[3:]
    assert len(list(resumed)) == len(expected)  # the next pass is a whole epoch again
    with pytest.raises(ValueError, match="seed 9"):
        resumed.load_state_dict({"epoch": 0, "start": 0, "seed": 9})


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="multiple of sampler.images_per_class"):
        MPerClassBatchSampler(LABELS, batch_size=10, images_per_class=4)
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        MPerClassBatchSampler(LABELS, batch_size=400, images_per_class=4)
    with pytest.raises(ValueError, match="even"):
        IdentityPairSampler(LABELS, batch_size=7)


def test_shuffle_sampler_covers_every_image_once_per_epoch_disjoint_ranks_and_resumes():
    from facelearn.data.samplers import ShuffleBatchSampler
    labels = np.arange(103) % 7
    one = ShuffleBatchSampler(labels, batch_size=10, seed=3)
    batches = list(one)
    flat = [i for b in batches for i in b]
    assert len(batches) == 10 and len(set(flat)) == 100 and all(len(b) == 10 for b in batches)
    one.set_epoch(1)
    assert list(one) != batches  # a new permutation every epoch
    r0 = ShuffleBatchSampler(labels, batch_size=10, seed=3, num_replicas=2, rank=0)
    r1 = ShuffleBatchSampler(labels, batch_size=10, seed=3, num_replicas=2, rank=1)
    b0, b1 = list(r0), list(r1)
    assert len(b0) == len(b1) == 5 and not {i for b in b0 for i in b} & {i for b in b1 for i in b}
    resumed = ShuffleBatchSampler(labels, batch_size=10, seed=3)
    resumed.load_state_dict({"epoch": 0, "start": 4, "seed": 3})
    assert list(resumed) == batches[4:]


# +debug=overfit: the batch sampler repeats epoch 0's batches every epoch (trainer.overfit_batches).
def test_same_every_epoch_repeats_epoch_zero():
    labels = np.repeat(np.arange(20), 3)
    s = ShuffleBatchSampler(labels=labels, batch_size=6, seed=1, num_replicas=1, rank=0)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first  # normally a new permutation
    s.same_every_epoch = True
    s.set_epoch(2)
    assert list(s) == first


@pytest.mark.parametrize("cls, kw", [(ShuffleBatchSampler, {}), (MPerClassBatchSampler, {"images_per_class": 4}),
                                     (IdentityPairSampler, {})])
def test_the_global_batch_is_the_same_on_any_split(cls, kw):
    """Concatenating the ranks' batches of step t gives the same global batch on 1 x 16, 2 x 8 and 4 x 4 (what lets
    a run resume on another number of processes)."""
    def global_steps(world):
        ranks = [cls(LABELS, batch_size=16 // world, seed=5, num_replicas=world, rank=r, **kw) for r in range(world)]
        for s in ranks:
            s.set_epoch(1)
        return [sum(batches, []) for batches in zip(*(list(s) for s in ranks))]

    one = global_steps(1)
    assert len(one) > 1
    assert global_steps(2) == one and global_steps(4) == one
