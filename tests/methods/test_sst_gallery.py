"""The SST gallery that keeps up: momentum ramp, queue staleness numbers, queue ages, queue_size=0."""

import logging
import math

import pytest
import torch

from facelearn.methods.sst import SSTModule
from facelearn.nn.backbones import SmallFaceNet
from facelearn.nn.heads import CosFace
from facelearn.nn.queue import GalleryQueue


def make(**kw):
    torch.manual_seed(0)
    net = SmallFaceNet(embedding_size=4, image_size=16, widths=(4, 4, 4, 4))
    kw.setdefault("queue_size", 8)
    return SSTModule(net, optimizer=lambda p: torch.optim.SGD(p, lr=0.1), head=CosFace(4, 0), embedding_size=4,
                     **kw)


def test_cosine_momentum_ramp_by_hand():
    m = make(momentum=0.9, momentum_end=0.999)
    assert m.momentum_at(0, 100) == pytest.approx(0.9)
    assert m.momentum_at(100, 100) == pytest.approx(0.999)
    assert m.momentum_at(50, 100) == pytest.approx((0.9 + 0.999) / 2)
    # t = 1/4: m_end - (m_end - m_start) (cos(pi/4) + 1) / 2
    assert m.momentum_at(25, 100) == pytest.approx(0.999 - 0.099 * (math.cos(math.pi / 4) + 1) / 2)
    assert make(momentum=0.99).momentum_at(70, 100) == 0.99  # constant without momentum_end
    with pytest.raises(ValueError, match="momentum_end"):
        make(momentum=0.9, momentum_end=1.0)


def test_queue_staleness_numbers():
    # sst_lfw before the sweep: queue 1,024 of 64 identities per step = 16 steps; m = 0.99 -> 0.16.
    s = make(momentum=0.99, queue_size=1024).queue_staleness(64)
    assert s["queue_age_steps"] == 16 and s["staleness_max"] == pytest.approx(0.16)
    # authors: ~30 steps at m = 0.999 -> 0.03
    assert make(momentum=0.999, queue_size=30 * 64).queue_staleness(64)["staleness_max"] == pytest.approx(0.03)
    ramp = make(momentum=0.9, momentum_end=0.999, queue_size=128).queue_staleness(64)
    assert ramp["staleness_max"] == pytest.approx(0.2) and ramp["staleness_min"] == pytest.approx(0.002)


def test_queue_records_write_step_and_age():
    q = GalleryQueue(size=4, dim=2)
    assert q.oldest_age(5) == 0
    q.enqueue(torch.zeros(2, 2), torch.tensor([1, 2]), step=3)
    q.enqueue(torch.zeros(2, 2), torch.tensor([3, 4]), step=4)
    assert q.oldest_age(5) == 2
    q.enqueue(torch.zeros(2, 2), torch.tensor([5, 6]), step=5)  # overwrites step 3's entries
    assert q.written_at.tolist() == [5, 5, 4, 4] and q.oldest_age(6) == 2


def test_old_checkpoint_without_write_steps_loads():
    q = GalleryQueue(size=4, dim=2)
    q.enqueue(torch.ones(2, 2), torch.tensor([1, 2]), step=7)
    state = {k: v for k, v in q.state_dict().items() if k != "written_at"}
    fresh = GalleryQueue(size=4, dim=2)
    fresh.load_state_dict(state)
    assert fresh.written_at.tolist() == [0, 0, -1, -1]


def test_queue_size_zero_means_no_queue():
    m = make(queue_size=0, momentum=0.0)
    assert m.use_queue is False
    with pytest.raises(ValueError, match="queue_size must be >= 0"):
        make(queue_size=-1)


def test_staleness_warning_names_the_numbers(caplog):
    class Loader:
        class batch_sampler:  # noqa: N801 - stands in for an identity-pair batch sampler
            batch_size = 128

    class Trainer:
        world_size, is_global_zero, train_dataloader = 1, True, Loader()

    m = make(momentum=0.99, queue_size=1024)
    m._trainer = Trainer()
    with caplog.at_level(logging.INFO):
        m.on_train_start()
    assert "16 steps of 64 identities" in caplog.text and "0.160 exceeds 0.10" in caplog.text
    caplog.clear()
    m = make(momentum=0.999, queue_size=1024)
    m._trainer = Trainer()
    with caplog.at_level(logging.INFO):
        m.on_train_start()
    assert "0.016" in caplog.text and "exceeds" not in caplog.text
