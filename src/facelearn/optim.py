"""Learning-rate schedules as step-wise ``LambdaLR`` factories (Hydra partials).

Each factory takes ``(optimizer, total_steps, steps_per_epoch)`` (filled in by the module from the trainer, so
configs speak in epochs) and returns a scheduler stepped every optimisation step. All support a linear warmup.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _warmup(step: int, warmup_steps: int) -> float:
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


def constant(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0) -> LambdaLR:
    warm = int(warmup_epochs * steps_per_epoch)
    return LambdaLR(optimizer, lambda s: _warmup(s, warm))


def multistep(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, milestones: list[float],
              gamma: float = 0.1, warmup_epochs: float = 0.0) -> LambdaLR:
    """Multiply the LR by ``gamma`` at each milestone (in epochs, fractional allowed), after a linear warmup."""
    if list(milestones) != sorted(milestones):
        raise ValueError(f"scheduler.milestones must be increasing, got {list(milestones)}")
    warm = int(warmup_epochs * steps_per_epoch)
    bounds = [int(m * steps_per_epoch) for m in milestones]
    return LambdaLR(optimizer, lambda s: _warmup(s, warm) * gamma ** sum(s >= b for b in bounds))


def cosine(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
           min_lr_ratio: float = 0.0) -> LambdaLR:
    """Linear warmup, then cosine decay from the base LR towards ``min_lr_ratio`` x base LR, which step
    ``total_steps`` (one after the last) would reach."""
    warm = int(warmup_epochs * steps_per_epoch)
    span = max(1, total_steps - warm)

    def f(s: int) -> float:
        if s < warm:
            return _warmup(s, warm)
        t = min(1.0, (s - warm) / span)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return LambdaLR(optimizer, f)


def polynomial(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
               power: float = 1.0) -> LambdaLR:
    """arcface_torch's schedule (``lr_scheduler.PolynomialLRWarmup``, used by its ``train_v2.py``): a linear warmup
    to the base LR, then ``base x (1 - (s - w) / (T - w)) ** power``, 0 at step ``T`` (one after the last);
    arcface_torch passes no power (1: linear decay); its older ``PolyScheduler`` used 2."""
    if power <= 0:
        raise ValueError(f"scheduler.power={power}: expected a number > 0")
    warm = int(warmup_epochs * steps_per_epoch)
    span = max(1, total_steps - warm)

    def f(s: int) -> float:
        if s < warm:
            return _warmup(s, warm)
        return max(0.0, 1.0 - (s - warm) / span) ** power

    return LambdaLR(optimizer, f)
