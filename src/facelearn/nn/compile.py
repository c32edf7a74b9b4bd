"""``compile=backbone``: ``torch.compile`` of the run's networks, for training and for ``facelearn.evaluate``.

Compiled in place (``nn.Module.compile``), so parameter names, checkpoints and ``state_dict`` stay those of the eager
module (no ``_orig_mod.`` prefix): a checkpoint of a compiled run loads, evaluates and exports without compiling.
``backbone`` covers every copy of the backbone a method runs (SST's gallery network too); ``head`` the margin head
or Partial FC classifier. Compilation happens on the first batch (tens of seconds on a CPU: Inductor generates and
builds C++), so it pays on long runs, not on a 3-step debug run.
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
        out: dict[str, torch.nn.Module] = {}
        if "backbone" in self.modules:
            for name in ("backbone", "gallery"):  # gallery: SST's momentum / constrained copy of the backbone
                net = getattr(module, name, None)
                if isinstance(net, torch.nn.Module):
                    out[name] = net
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
