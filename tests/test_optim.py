"""Learning-rate schedules (facelearn.optim) against values computed by hand."""

import pytest
import torch

from facelearn import optim


def lrs(factory, steps, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = factory(opt, total_steps=steps, steps_per_epoch=2, **kw)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_polynomial_is_arcface_torchs_warmup_then_polynomial_decay():
    # 2 warmup steps (1 epoch x 2 steps), then base x (1 - (s - 2) / 8) ** p over steps 2..9
    assert lrs(optim.polynomial, 10, warmup_epochs=1) == pytest.approx(
        [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    assert lrs(optim.polynomial, 4, power=2.0) == pytest.approx([1.0, 0.5625, 0.25, 0.0625])
    with pytest.raises(ValueError, match="scheduler.power=0"):
        lrs(optim.polynomial, 4, power=0)


def test_cosine_and_multistep_by_hand():
    # 1 warmup step, then 0.5 (1 + cos(pi (s - 1) / 4)): the minimum is reached one step after the last
    assert lrs(optim.cosine, 5, warmup_epochs=0.5) == pytest.approx([1.0, 1.0, 0.853553, 0.5, 0.146447], abs=1e-6)
    assert lrs(optim.multistep, 6, milestones=[1, 2]) == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
