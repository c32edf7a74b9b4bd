"""Freezing the bottom of a pretrained backbone for fine-tuning (``freeze=<module name>``).

Everything up to and including the named module, in the order the backbone registers its modules (the order of
``named_modules``, i.e. the forward order of the usual stem -> stages -> head networks), keeps its weights and its
BatchNorm statistics: its parameters stop requiring gradients and its modules stay in eval mode whenever the model is
put in training mode. Autograd then records no graph below the first trained layer, so a frozen prefix costs only its
forward pass (``benchmarks/freeze_step.py``, SFace frozen through ``body.22``, one CPU thread, batch 32: 3.2x the
images/s of training the whole net on an idle machine, 5.7x beside two other runs).
"""

from __future__ import annotations

from torch import nn

#: attribute marking a frozen module (survives copy.deepcopy, so SST's gallery copy is frozen alike)
FROZEN = "_facelearn_frozen"


def frozen_modules(backbone: nn.Module, through: str) -> list[str]:
    """Names of the leaf modules up to and including ``through`` (a module name of ``backbone``)."""
    names = [name for name, _ in backbone.named_modules() if name]
    if through not in names:
        tops = [name for name, _ in backbone.named_children()]
        raise ValueError(f"freeze={through}: {type(backbone).__name__} has no module of that name (its top-level "
                         f"modules: {', '.join(tops)}; nested ones as e.g. {tops[0]}.0)")
    last = max(i for i, name in enumerate(names) if name == through or name.startswith(through + "."))
    modules = dict(backbone.named_modules())
    return [name for name in names[:last + 1] if not any(True for _ in modules[name].children())]


def freeze_through(backbone: nn.Module, through: str | None) -> tuple[int, int]:
    """Freeze ``backbone`` up to and including module ``through`` (None: nothing). Returns (frozen parameters,
    all parameters) as counts of scalars."""
    if not through:
        return 0, sum(p.numel() for p in backbone.parameters())
    modules = dict(backbone.named_modules())
    for name in frozen_modules(backbone, through):
        module = modules[name]
        module.requires_grad_(False)
        setattr(module, FROZEN, True)
    total = sum(p.numel() for p in backbone.parameters())
    return sum(p.numel() for p in backbone.parameters() if not p.requires_grad), total


def keep_frozen_in_eval(model: nn.Module) -> None:
    """Put every frozen module of ``model`` back in eval mode (BatchNorm uses and keeps its running statistics)."""
    for module in model.modules():
        if getattr(module, FROZEN, False):
            module.eval()
