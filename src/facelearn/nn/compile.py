"""``compile=backbone``: ``torch.compile`` of the run's networks, for training and for ``facelearn.evaluate``.

Compiled in place (``nn.Module.compile``), so parameter names, checkpoints and ``state_dict`` stay those of the eager
module (no ``_orig_mod.`` prefix): a checkpoint of a compiled run loads, evaluates and exports without compiling.
``backbone`` covers every copy of the backbone a method runs (SST's gallery network too); ``head`` the margin head
or Partial FC classifier. Compilation happens on the first batch (tens of seconds on a CPU: Inductor generates and
builds C++), so it pays on long runs, not on a 3-step debug run.

``channels_last=true`` (a top-level option of train and evaluate, with or without compiling: ``channels_last``
below) puts the backbone's weights and its input batches in channels_last (NHWC) memory format. Measured on a
2-core CPU (``benchmarks/training_step.py --compile --channels-last --steps 30``, ``experiments/results/speed``):
SmallFaceNet 64 px eager in NHWC 0.89-1.23x over four runs (1.15-1.23x in the two 30-step ones: not a consistent
gain), compiled 1.39-1.41x with or without it; MobileFaceNet 112 px slower in
NHWC (0.87x eager, 0.93x compiled, against 1.52x compiled in NCHW; 10-step run). Hence an option, off by default.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Sequence

import torch

log = logging.getLogger(__name__)

MODULES = ("backbone", "head")


class Compile:
    def __init__(self, modules: Sequence[str] = ("backbone",),
                 mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default",
                 dynamic: bool | None = None, fullgraph: bool = False, backend: str = "inductor") -> None:
        unknown = [m for m in modules if m not in MODULES]
        if unknown or not modules:
            raise ValueError(f"compile.modules={list(modules)}: expected some of {list(MODULES)}")
        self.modules, self.mode, self.dynamic = tuple(modules), mode, dynamic
        self.fullgraph, self.backend = fullgraph, backend

    def targets(self, module: Any) -> dict[str, torch.nn.Module]:
        out: dict[str, torch.nn.Module] = backbones(module) if "backbone" in self.modules else {}
        if "head" in self.modules and isinstance(getattr(module, "head", None), torch.nn.Module):
            out["head"] = module.head
        return out

    def apply(self, module: Any) -> Any:
        compiled = self.targets(module)
        for net in compiled.values():
            net.compile(mode=None if self.mode == "default" else self.mode, dynamic=self.dynamic,
                        fullgraph=self.fullgraph, backend=self.backend)
        log.info("torch.compile (%s, mode %s): %s", self.backend, self.mode, ", ".join(compiled) or "nothing")
        return module


def backbones(module: Any) -> dict[str, torch.nn.Module]:
    """Every copy of the backbone a method runs: ``backbone`` and SST's momentum / constrained ``gallery``."""
    out = {}
    for name in ("backbone", "gallery"):
        net = getattr(module, name, None)
        if isinstance(net, torch.nn.Module):
            out[name] = net
    return out


def channels_last(module: Any) -> list[str]:
    """Put the backbones' weights, and (by a forward pre-hook) their 4-D inputs, in channels_last memory format; before
    compiling. Parameter names and values are unchanged, so checkpoints load into a plain NCHW network."""
    nets = backbones(module)
    for net in nets.values():
        net.to(memory_format=torch.channels_last)
        net.register_forward_pre_hook(_channels_last_input)
    log.info("channels_last memory format: %s", ", ".join(nets) or "nothing")
    return list(nets)


def _channels_last_input(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    x = args[0]
    if torch.is_tensor(x) and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return (x, *args[1:])
