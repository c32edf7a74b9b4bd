"""Face backbones: insightface-layout IResNet, MobileFaceNet, SFace's network and a small CNN for CPU runs.

All take ``(N, 3, H, W)`` images normalised to [-1, 1] and return un-normalised ``(N, embedding_size)`` features;
the method normalises. H and W must be multiples of 16 (the four stride-2 stages); the final FC adapts to the input
size, so 112x112 (the insightface default) and 64x64 (the CPU recipe) both work.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _check_size(image_size: int, stride: int) -> int:
    if image_size % stride:
        raise ValueError(f"backbone.image_size must be a multiple of {stride}, got {image_size}")
    return image_size // stride


class IBasicBlock(nn.Module):
    """insightface's pre-activation-style basic block: BN-conv3x3-BN-PReLU-conv3x3(stride)-BN (+ shortcut)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """IResNet (insightface arcface_torch layout): 4 stages of IBasicBlocks, BN-Dropout-FC-BN embedding.

    Args:
        gradient_checkpointing: recompute each block's activations in the backward pass instead of storing them
            (same outputs and gradients; activation memory ~ one block instead of all, for ~30 % more compute).
        weights: an arcface_torch ``backbone.pth`` (insightface key names) to start from; see
            ``load_arcface_torch``.
    """

    def __init__(self, layers: list[int], embedding_size: int = 512, image_size: int = 112,
                 widths: tuple[int, ...] = (64, 128, 256, 512), dropout: float = 0.0,
                 gradient_checkpointing: bool = False, weights: str | None = None) -> None:
        super().__init__()
        self.layers = list(layers)
        self.gradient_checkpointing = gradient_checkpointing
        side = _check_size(image_size, 16)
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0], eps=1e-5),
                                  nn.PReLU(widths[0]))
        blocks: list[nn.Module] = []
        inplanes = widths[0]
        for n, planes in zip(layers, widths):
            for i in range(n):
                blocks.append(IBasicBlock(inplanes, planes, stride=2 if i == 0 else 1))
                inplanes = planes
        self.body = nn.Sequential(*blocks)
        self.bn2 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(inplanes * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad_(False)  # insightface freezes the embedding BN scale
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
        # Zero-init the last BN of each residual branch so each block starts as identity: stabler from scratch.
        for m in self.body:
            nn.init.zeros_(m.bn3.weight)
        if weights:
            load_pretrained(self, weights, image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            for block in self.body:
                # non-reentrant (inputs need not require grad); the recomputation must not update the BN running
                # statistics a second time, so the result equals the plain forward's exactly
                x = checkpoint(block, x, use_reentrant=False,
                               context_fn=lambda b=block: (contextlib.nullcontext(), _bn_stats_frozen(b)))
        else:
            x = self.body(x)
        x = self.bn2(x)
        return self.features(self.fc(self.dropout(torch.flatten(x, 1))))


@contextlib.contextmanager
def _bn_stats_frozen(module: nn.Module):
    """BatchNorm layers of ``module`` normalise with the batch but leave running statistics and counters as they
    are (momentum 0), for a checkpoint's recomputation of a forward that already updated them."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(bns, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def arcface_torch_keys(layers: list[int]) -> dict[str, str]:
    """insightface key prefix -> ours: ``conv1/bn1/prelu`` are the stem, ``layer<s>.<b>`` body block
    ``sum(layers[:s-1]) + b``; ``bn2``, ``fc``, ``features`` and the block internals keep their names."""
    mapping = {"conv1.": "stem.0.", "bn1.": "stem.1.", "prelu.": "stem.2."}
    start = 0
    for stage, n in enumerate(layers, 1):
        for b in range(n):
            mapping[f"layer{stage}.{b}."] = f"body.{start + b}."
        start += n
    return mapping


def load_arcface_torch(model: IResNet, path: str) -> None:
    """Load an arcface_torch IResNet checkpoint (``torch.save(backbone.state_dict())``, optionally with a DDP
    ``module.`` prefix or inside ``{"state_dict": ...}``) into ``model``, strictly: every key mapped and matched in
    shape, or a ValueError naming the file and the differences. Read with ``weights_only=True`` (tensors only; a
    file that needs arbitrary unpickling is refused)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"backbone.weights: {path} does not exist (an arcface_torch backbone.pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure: say what was expected
        raise ValueError(f"backbone.weights: {path} is not a tensors-only state dict ({e})") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"backbone.weights: {path} holds a {type(state).__name__}, expected a state dict")
    mapping = sorted(arcface_torch_keys(model.layers).items(), key=lambda kv: -len(kv[0]))
    ours = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unknown = []
    for original, value in state.items():
        key = original.removeprefix("module.")  # saved from a DDP-wrapped model
        new = next((our + key[len(theirs):] for theirs, our in mapping if key.startswith(theirs)), key)
        if new in ours:
            mapped[new] = value
        else:
            unknown.append(original)
    missing = sorted(k for k in ours if k not in mapped and not k.endswith("num_batches_tracked"))
    shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(ours[k].shape)}" for k, v in mapped.items()
              if tuple(v.shape) != tuple(ours[k].shape)]
    if unknown or missing or shapes:
        hint = ("; fc's input follows the image size: an arcface_torch model is 112 px (data.image_size=112)"
                if any(s.startswith("fc.weight") for s in shapes) else "")
        raise ValueError(f"backbone.weights: {path} does not fit this IResNet {model.layers}: "
                         f"{len(unknown)} unknown keys {unknown[:4]}, {len(missing)} missing {missing[:4]}, "
                         f"shape mismatches {shapes[:3]}{hint}")
    model.load_state_dict({**{k: v for k, v in ours.items() if k.endswith("num_batches_tracked")}, **mapped})


def load_pretrained(model: nn.Module, path: str, image_size: int) -> None:
    """``backbone.weights``: an ONNX file (insightface model zoo, exported from an arcface_torch iresnet; see
    ``facelearn.nn.onnx_import``) or an arcface_torch ``backbone.pth``."""
    if str(path).lower().endswith(".onnx"):
        from facelearn.nn.onnx_import import load_onnx_weights
        norm = load_onnx_weights(model, str(path), image_size)
        # insightface graphs take (x - 127.5) / 127.5 from outside (= our input) or normalise alike inside
        if (norm["input_sub"], norm["input_mul"]) not in ((0.0, 1.0),) and not (
                abs(norm["input_sub"] - 127.5) < 1e-6 and abs(norm["input_mul"] - 1 / 127.5) < 1e-9):
            raise ValueError(f"backbone.weights: {path} normalises its input as (x - {norm['input_sub']}) * "
                             f"{norm['input_mul']}, not as insightface's (x - 127.5) / 127.5")
    else:
        load_arcface_torch(model, str(path))


def iresnet18(**kw) -> IResNet:
    return IResNet([2, 2, 2, 2], **kw)


def iresnet34(**kw) -> IResNet:
    return IResNet([3, 4, 6, 3], **kw)


def iresnet50(**kw) -> IResNet:
    return IResNet([3, 4, 14, 3], **kw)


def iresnet100(**kw) -> IResNet:
    return IResNet([3, 13, 30, 3], **kw)


NORMS = ("batch", "group")


def _norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm, or GroupNorm (groups of up to 8 channels' gcd): per-sample statistics, the same on any batch
    size and any split of a batch over processes (CPU DDP has no SyncBatchNorm)."""
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    return nn.BatchNorm2d(channels)


class _ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, p: int = 0, groups: int = 1,
                 act: bool = True, norm: str = "batch") -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False), _norm(norm, cout)]
        if act:
            layers.append(nn.PReLU(cout))
        super().__init__(*layers)


class _DepthWise(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(_ConvBN(cin, groups), _ConvBN(groups, groups, 3, stride, 1, groups=groups),
                                    _ConvBN(groups, cout, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class MobileFaceNet(nn.Module):
    """MobileFaceNet (Chen et al. 2018): depthwise bottlenecks, global depthwise conv, linear embedding.

    The stride-2 stages total 16, so a 112 input ends at 7x7 like the paper; the global depthwise conv kernel
    follows the input size.
    """

    def __init__(self, embedding_size: int = 512, image_size: int = 112, width: int = 64) -> None:
        super().__init__()
        side = _check_size(image_size, 16)
        w = width

        def stage(n: int, cin: int, cout: int, groups: int) -> nn.Sequential:
            return nn.Sequential(*[_DepthWise(cin, cout, 1, groups, residual=True) for _ in range(n)])

        self.body = nn.Sequential(
            _ConvBN(3, w, 3, 2, 1),
            _ConvBN(w, w, 3, 1, 1, groups=w),
            _DepthWise(w, w, 2, 2 * w, residual=False), stage(4, w, w, 2 * w),
            _DepthWise(w, 2 * w, 2, 4 * w, residual=False), stage(6, 2 * w, 2 * w, 4 * w),
            _DepthWise(2 * w, 2 * w, 2, 8 * w, residual=False), stage(2, 2 * w, 2 * w, 4 * w),
            _ConvBN(2 * w, 8 * w),
        )
        self.gdc = _ConvBN(8 * w, 8 * w, side, 1, 0, groups=8 * w, act=False)
        self.fc = nn.Linear(8 * w, embedding_size, bias=False)
        self.features = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gdc(self.body(x))
        return self.features(self.fc(torch.flatten(x, 1)))


class SFaceNet(nn.Module):
    """The network of SFace (Zhong et al., "SFace: Sigmoid-Constrained Hypersphere Loss for Robust Face
    Recognition", 2021) as OpenCV Zoo ships it (``face_recognition_sface_2021dec*.onnx``, exported from MXNet): a
    MobileNet-v1-style body (3x3 stem at stride 1, then 13 depthwise 3x3 + pointwise 1x1 pairs, stride 2 at the 2nd,
    4th, 6th and 12th pair: 112 -> 7), each conv followed by BatchNorm (eps 1e-3) and PReLU; then BatchNorm
    (eps 2e-5), dropout, a fully connected layer from 1024 x 7 x 7 and a BatchNorm (eps 2e-5) embedding of 128.

    ``weights``: the ONNX file, read with ``facelearn.nn.onnx_import`` (its int8 blocks dequantized). The file
    normalises pixels as (x - 127.5) x 0.0078125 inside the graph; our inputs are (x - 127.5) / 127.5, so the loader
    sets ``input_scale`` = 127.5 / 128 (1 for a net trained here from scratch).
    """

    #: (pointwise output width, depthwise stride) of the 13 depthwise-separable pairs
    PAIRS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
             (512, 1), (1024, 2), (1024, 1))

    def __init__(self, embedding_size: int = 128, image_size: int = 112, dropout: float = 0.4,
                 weights: str | None = None) -> None:
        super().__init__()
        side = _check_size(image_size, 16)

        def conv_bn(cin: int, cout: int, k: int, s: int, groups: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
                                 nn.BatchNorm2d(cout, eps=1e-3), nn.PReLU(cout))

        layers = [conv_bn(3, 32, 3, 1)]
        cin = 32
        for cout, stride in self.PAIRS:
            layers += [conv_bn(cin, cin, 3, stride, groups=cin), conv_bn(cin, cout, 1, 1)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin, eps=2e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=2e-5)
        self.register_buffer("input_scale", torch.ones(()))
        self.register_buffer("input_shift", torch.zeros(()))
        if weights:
            from facelearn.nn.onnx_import import load_onnx_weights
            if not str(weights).lower().endswith(".onnx"):
                raise ValueError(f"backbone.weights: {weights}: SFace weights are read from its ONNX file (.onnx)")
            norm = load_onnx_weights(self, str(weights), image_size)
            # our x = (p - 127.5) / 127.5; the graph's first conv sees (p - sub) * mul = a x + b
            self.input_scale.fill_(127.5 * norm["input_mul"])
            self.input_shift.fill_((127.5 - norm["input_sub"]) * norm["input_mul"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.body(x * self.input_scale + self.input_shift))
        return self.features(self.fc(self.dropout(torch.flatten(x, 1))))


class SmallFaceNet(nn.Module):
    """A small fast CNN for CPU tests and CPU-sized real-data runs (a few hundred k parameters).

    Four stages of (conv3x3-BN-PReLU) x ``depth`` with a stride-2 conv opening each stage, then BN-FC-BN like
    IResNet's embedding head. ``norm="group"`` puts GroupNorm in every BatchNorm's place (the embedding's over all
    its channels per sample): nothing then depends on the batch, e.g. for exact resumes on another number of CPU
    processes, where SyncBatchNorm is not available.
    """

    def __init__(self, embedding_size: int = 128, image_size: int = 64, widths: tuple[int, ...] = (32, 64, 128, 256),
                 depth: int = 1, dropout: float = 0.0, norm: Literal["batch", "group"] = "batch") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"backbone.norm={norm!r}: expected one of {', '.join(NORMS)}")
        side = _check_size(image_size, 16)
        layers: list[nn.Module] = []
        cin = 3
        for w in widths:
            layers.append(_ConvBN(cin, w, 3, 2, 1, norm=norm))
            layers += [_ConvBN(w, w, 3, 1, 1, norm=norm) for _ in range(depth)]
            cin = w
        self.body = nn.Sequential(*layers)
        self.bn = _norm(norm, cin)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size) if norm == "batch" else nn.GroupNorm(1, embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.body(x))
        return self.features(self.fc(self.dropout(torch.flatten(x, 1))))
