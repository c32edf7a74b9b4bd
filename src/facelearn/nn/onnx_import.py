"""Pretrained weights from published ONNX files, loaded into our trainable torch backbones.

An ONNX recogniser (OpenCV Zoo's SFace, insightface's model-zoo ArcFace iresnets) is a chain of Conv /
BatchNormalization / PRelu / Gemm nodes whose weights are initializers, possibly behind a small constant subgraph
(SFace's int8 block quantization: ``DequantizeLinear`` then ``Reshape``). ``read_layers`` folds those constant
subgraphs with numpy (dequantizing: (q - zero_point) x scale per block) and lists the parameterised nodes in graph
order; ``load_onnx_weights`` runs the torch module once with hooks to list its parameterised leaf modules in
execution order and pairs the two lists, strictly: every ONNX weight used, every torch parameter and BatchNorm
statistic set, types, shapes and BN epsilons checked; otherwise one error lists every mismatch.

Exporters fold a BatchNorm that follows a Conv into the Conv's weight and bias (the TorchScript exporter in eval mode,
which produced insightface's files). Such a Conv with a bias, paired with our Conv (no bias) + BatchNorm, loads as
the Conv weight and an identity BatchNorm carrying the bias (scale 1, mean 0, variance 1 - eps): the same function in
eval mode; the original running statistics are not in the file, so BatchNorm in training mode starts from batch
statistics instead (say so when fine-tuning such a model).

External data (weights in side files) is refused unless it lies inside the model's folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

#: ONNX ops that carry weights, and the torch leaf modules they map onto.
_PARAM_OPS = {"Conv": nn.Conv2d, "BatchNormalization": nn.modules.batchnorm._BatchNorm, "PRelu": nn.PReLU,
              "Gemm": nn.Linear}
#: Ops allowed in the compute chain without weights of their own (activations, reshapes, residual adds, dropout).
_PASS_OPS = {"Relu", "Add", "Dropout", "Flatten", "Reshape", "Identity", "Sub", "Mul", "Div", "Concat",
             "GlobalAveragePool", "Shape", "Gather", "Unsqueeze", "Cast", "Transpose", "ReduceL2", "Squeeze",
             "MatMul", "Sqrt", "Clip"}


@dataclass
class OnnxLayer:
    """One parameterised node: its op, name, weight arrays (by role) and attributes."""

    op: str
    name: str
    weights: dict[str, np.ndarray]
    attrs: dict = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.op} {self.name!r} " + ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.weights.items())


@dataclass
class OnnxGraph:
    layers: list[OnnxLayer]
    input_name: str
    input_shape: tuple
    #: ``(x - sub) * mul`` applied to the input before the first layer, when the graph starts with Sub / Mul / Div
    input_sub: float = 0.0
    input_mul: float = 1.0


def _require_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise ImportError("reading ONNX weights needs the onnx package: pip install 'facelearn[onnx]'") from e
    return onnx, numpy_helper


def _load_model(path: str):
    onnx, _ = _require_onnx()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"backbone.weights: {path} does not exist (an ONNX model file)")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # noqa: BLE001 - a protobuf parse failure of any kind: not an ONNX file
        raise ValueError(f"backbone.weights: {path} is not a readable ONNX model ({e})") from e
    base = os.path.realpath(os.path.dirname(path))
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    for t in external:
        loc = {e.key: e.value for e in t.external_data}.get("location", "")
        full = os.path.realpath(os.path.join(base, loc))
        if os.path.isabs(loc) or os.path.commonpath([full, base]) != base:
            raise ValueError(f"backbone.weights: {path}: initializer {t.name!r} keeps its data in {loc!r}, outside "
                             f"the model's folder {base}: refused")
    if external:
        from onnx.external_data_helper import load_external_data_for_model
        load_external_data_for_model(model, base)
    return model


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int, block: int) -> np.ndarray:
    """ONNX DequantizeLinear: per tensor, per axis, or blocked along ``axis`` (block_size > 0)."""
    q = q.astype(np.float32)
    zero = np.zeros_like(scale, dtype=np.float32) if zero is None else zero.astype(np.float32)
    scale = scale.astype(np.float32)
    if scale.ndim == 0 or scale.size == 1:
        return (q - zero.reshape(())) * scale.reshape(())
    axis = axis % q.ndim
    if block:
        scale = np.repeat(scale, block, axis=axis).take(np.arange(q.shape[axis]), axis=axis)
        zero = np.repeat(zero, block, axis=axis).take(np.arange(q.shape[axis]), axis=axis)
        return (q - zero) * scale
    shape = [1] * q.ndim
    shape[axis] = -1
    return (q - zero.reshape(shape)) * scale.reshape(shape)


def _fold(node, inputs: list[np.ndarray | None], attrs: dict, path: str) -> np.ndarray:
    """Evaluate a node whose inputs are all constants (the weight subgraph)."""
    op = node.op_type
    if op == "DequantizeLinear":
        return _dequantize(inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None,
                           int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)))
    if op == "Reshape":
        shape = [int(v) for v in inputs[1]]
        shape = [inputs[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
        return inputs[0].reshape(shape)
    if op == "Transpose":
        return np.transpose(inputs[0], attrs.get("perm"))
    if op in ("Identity", "Cast"):
        return inputs[0].astype(np.float32) if op == "Cast" else inputs[0]
    if op == "Squeeze":
        return np.squeeze(inputs[0]) if len(inputs) < 2 else np.squeeze(inputs[0], tuple(int(a) for a in inputs[1]))
    if op == "Unsqueeze":
        axes = attrs.get("axes") if len(inputs) < 2 else [int(a) for a in inputs[1]]
        out = inputs[0]
        for a in sorted(axes):
            out = np.expand_dims(out, a)
        return out
    raise ValueError(f"backbone.weights: {path}: cannot fold the constant {op} node {node.name!r} (supported: "
                     "DequantizeLinear, Reshape, Transpose, Identity, Cast, (Un)Squeeze)")


def read_layers(path: str) -> OnnxGraph:
    """The parameterised layers of an ONNX model in graph order, with their weights as float32 numpy arrays."""
    onnx, numpy_helper = _require_onnx()
    model = _load_model(path)
    g = model.graph
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    init_names = set(consts)
    used: set[str] = set()
    # Graph inputs no node reads are stale declarations (SFace's int8 file still lists the fp32 weights its quantized
    # initializers replaced, which is why onnxruntime rejects it): ignored, and only the image input is used.
    read = {x for n in g.node for x in n.input}
    inputs = [i for i in g.input if i.name not in init_names and i.name in read]
    data_inputs = [i for i in inputs if len(i.type.tensor_type.shape.dim) == 4]
    if len(data_inputs) != 1:
        raise ValueError(f"backbone.weights: {path}: expected one (N, 3, H, W) image input, found "
                         f"{[i.name for i in data_inputs]}")
    inp = data_inputs[0]
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim)
    graph = OnnxGraph([], inp.name, shape)
    data_path: set[str] = {inp.name}
    first_layer_seen = False
    for node in g.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant":
            if "value" not in attrs:
                raise ValueError(f"backbone.weights: {path}: Constant node {node.name!r} without a tensor value")
            consts[node.output[0]] = numpy_helper.to_array(attrs["value"])
            continue
        ins = [x for x in node.input if x]
        if not any(x in data_path for x in ins):  # weight subgraph: fold it
            vals = [consts.get(x) for x in node.input]
            if any(v is None for v, x in zip(vals, node.input) if x):
                missing = [x for v, x in zip(vals, node.input) if x and v is None]
                raise ValueError(f"backbone.weights: {path}: node {node.name!r} ({node.op_type}) reads {missing}, "
                                 "neither an initializer nor a constant")
            used.update(x for x in node.input if x)
            consts[node.output[0]] = _fold(node, vals, attrs, path)
            continue
        data_path.update(node.output)
        weight_inputs = [x for x in ins if x not in data_path]
        used.update(weight_inputs)
        op = node.op_type
        if op in _PARAM_OPS:
            first_layer_seen = True
            w = {k: consts[x].astype(np.float32) for k, x in zip(_roles(op), node.input[1:]) if x}
            graph.layers.append(OnnxLayer(op, node.name or node.output[0], w, attrs))
        elif op in ("Sub", "Mul", "Div") and not first_layer_seen and weight_inputs:
            value = consts[weight_inputs[0]].astype(np.float64)
            if value.size != 1:
                raise ValueError(f"backbone.weights: {path}: per-channel input normalisation ({op} of shape "
                                 f"{value.shape}) is not supported")
            v = float(value.reshape(()))
            if op == "Sub":
                graph.input_sub += v / graph.input_mul
            elif op == "Mul":
                graph.input_mul *= v
            else:
                graph.input_mul /= v
        elif op not in _PASS_OPS:
            raise ValueError(f"backbone.weights: {path}: op {op} (node {node.name!r}) is not supported in the "
                             f"compute chain")
        elif weight_inputs and op in ("Add", "Mul", "MatMul", "Concat"):
            raise ValueError(f"backbone.weights: {path}: {op} node {node.name!r} applies constant tensors "
                             f"{weight_inputs} to the features; no torch layer takes them")
    # A float initializer no node reads would be a weight we silently drop: refused. Integer ones that no node
    # reads are dead shape constants (SFace's file has two, for Reshapes its exporter removed).
    unused = sorted(x for x in init_names - used if np.issubdtype(consts[x].dtype, np.floating))
    if unused:
        raise ValueError(f"backbone.weights: {path}: {len(unused)} initializers are used by no node, e.g. "
                         f"{unused[:5]}")
    return graph


def _roles(op: str) -> tuple[str, ...]:
    return {"Conv": ("weight", "bias"), "BatchNormalization": ("weight", "bias", "running_mean", "running_var"),
            "PRelu": ("weight",), "Gemm": ("weight", "bias")}[op]


def leaf_layers(module: nn.Module, image_size: int) -> list[tuple[str, nn.Module]]:
    """The parameterised leaf modules of ``module`` in the order a forward pass runs them."""
    order: list[tuple[str, nn.Module]] = []
    names = {m: n for n, m in module.named_modules()}
    wanted = tuple(_PARAM_OPS.values())
    hooks = [m.register_forward_pre_hook(lambda mod, _args: order.append((names[mod], mod)))
             for m in module.modules() if isinstance(m, wanted)]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    seen: set[int] = set()
    return [(n, m) for n, m in order if not (id(m) in seen or seen.add(id(m)))]


def load_onnx_weights(module: nn.Module, path: str, image_size: int, input_sub: float | None = None,
                      input_mul: float | None = None) -> dict[str, float]:
    """Copy an ONNX model's weights into ``module`` (strict; see the module docstring). ``input_sub`` and
    ``input_mul``: the input normalisation the module expects the graph to apply, ``(pixels - sub) * mul``; a
    graph that normalises otherwise is refused. Returns the graph's normalisation."""
    graph = read_layers(path)
    if graph.input_shape[-1] not in (None, image_size):
        raise ValueError(f"backbone.weights: {path} takes {graph.input_shape[-2:]} images, the backbone is built "
                         f"for {image_size} (data.image_size={graph.input_shape[-1]})")
    if input_sub is not None and (abs(graph.input_sub - input_sub) > 1e-6 or abs(graph.input_mul - input_mul) > 1e-9):
        raise ValueError(f"backbone.weights: {path} normalises its input as (x - {graph.input_sub}) * "
                         f"{graph.input_mul}; this backbone expects (x - {input_sub}) * {input_mul}")
    torch_layers = leaf_layers(module, image_size)
    problems: list[str] = []
    assigned: dict[str, torch.Tensor] = {}
    i = j = 0
    while i < len(graph.layers) and j < len(torch_layers):
        layer, (name, mod) = graph.layers[i], torch_layers[j]
        nxt = torch_layers[j + 1] if j + 1 < len(torch_layers) else (None, None)
        if not isinstance(mod, _PARAM_OPS[layer.op]):
            problems.append(f"#{i} {layer.describe()} meets {name} ({type(mod).__name__})")
            i, j = i + 1, j + 1
            continue
        # Folded: our next layer is a BatchNorm the file lacks here. A bias our layer has no room for must be
        # such a fold; otherwise the file's next node tells (a BatchNorm there is this one).
        next_is_bn = i + 1 < len(graph.layers) and graph.layers[i + 1].op == "BatchNormalization"
        folded_bn = (layer.op in ("Conv", "Gemm") and isinstance(nxt[1], nn.modules.batchnorm._BatchNorm)
                     and (("bias" in layer.weights and getattr(mod, "bias", None) is None) or not next_is_bn))
        problems += _assign(layer, name, mod, assigned, folded_bn)
        if folded_bn:  # the exporter folded our next BatchNorm into this layer: an identity BN carries the bias
            bn_name, bn = nxt
            has_bias = "bias" in layer.weights and getattr(mod, "bias", None) is None
            bias = (torch.from_numpy(layer.weights["bias"]) if has_bias else torch.zeros_like(bn.running_mean))
            _set(assigned, problems, f"{bn_name}.weight", bn.weight, torch.ones_like(bias))
            _set(assigned, problems, f"{bn_name}.bias", bn.bias, bias)
            _set(assigned, problems, f"{bn_name}.running_mean", bn.running_mean, torch.zeros_like(bias))
            _set(assigned, problems, f"{bn_name}.running_var", bn.running_var, torch.full_like(bias, 1 - bn.eps))
            j += 1
        i, j = i + 1, j + 1
    problems += [f"ONNX layer without a torch layer: {l.describe()}" for l in graph.layers[i:]]
    problems += [f"torch layer without ONNX weights: {n} ({type(m).__name__})" for n, m in torch_layers[j:]]
    if problems:
        raise ValueError(f"backbone.weights: {path} does not fit {type(module).__name__} "
                         f"({len(graph.layers)} ONNX layers, {len(torch_layers)} torch layers): "
                         + "; ".join(problems[:8]) + (f"; ... {len(problems) - 8} more" if len(problems) > 8 else ""))
    state = module.state_dict()
    needed = [k for k, _ in module.named_parameters()] + [f"{n}.{b}" for n, m in torch_layers
                                                          for b in ("running_mean", "running_var")
                                                          if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    missing = [k for k in needed if k not in assigned]
    if missing:
        raise ValueError(f"backbone.weights: {path} sets no value for {missing[:6]}")
    with torch.no_grad():
        for k, v in assigned.items():
            state[k].copy_(v)
    return {"input_sub": graph.input_sub, "input_mul": graph.input_mul}


def _set(assigned: dict, problems: list, key: str, target: torch.Tensor | None, value: torch.Tensor) -> None:
    if target is None:
        problems.append(f"{key}: the torch layer has no such tensor")
    elif tuple(target.shape) != tuple(value.shape):
        problems.append(f"{key}: file {tuple(value.shape)} vs model {tuple(target.shape)}")
    else:
        assigned[key] = value.to(target.dtype)


def _assign(layer: OnnxLayer, name: str, mod: nn.Module, assigned: dict, folded_bn: bool) -> list[str]:
    """Copy one layer's weights (a bias the torch layer lacks is only allowed where a folded BN takes it)."""
    problems: list[str] = []
    w = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in layer.weights.items()}
    if layer.op == "Conv":
        a = layer.attrs
        want = (tuple(a.get("strides", [1, 1])), int(a.get("group", 1)), tuple(a.get("pads", [0, 0, 0, 0])[:2]))
        have = (tuple(mod.stride), mod.groups, tuple(mod.padding))
        if want != have:
            problems.append(f"{name}: ONNX {layer.name!r} has stride/groups/padding {want}, the model {have}")
        _set(assigned, problems, f"{name}.weight", mod.weight, w["weight"])
        problems += _bias(name, mod, w, layer, assigned, folded_bn)
    elif layer.op == "BatchNormalization":
        eps = float(layer.attrs.get("epsilon", 1e-5))
        if abs(eps - mod.eps) > 1e-7:
            problems.append(f"{name}: BatchNorm eps {mod.eps} vs the file's {eps:.3g}")
        for role in ("weight", "bias", "running_mean", "running_var"):
            _set(assigned, problems, f"{name}.{role}", getattr(mod, role), w[role])
    elif layer.op == "PRelu":
        slope = w["weight"].reshape(-1)
        if slope.numel() == 1 and mod.weight.numel() > 1:
            slope = slope.expand(mod.weight.numel()).clone()
        _set(assigned, problems, f"{name}.weight", mod.weight, slope)
    elif layer.op == "Gemm":
        weight = w["weight"] if int(layer.attrs.get("transB", 0)) else w["weight"].t()
        if float(layer.attrs.get("alpha", 1.0)) != 1.0 or float(layer.attrs.get("beta", 1.0)) != 1.0:
            problems.append(f"{name}: Gemm {layer.name!r} with alpha/beta != 1")
        _set(assigned, problems, f"{name}.weight", mod.weight, weight.contiguous())
        problems += _bias(name, mod, w, layer, assigned, folded_bn)
    return problems


def _bias(name: str, mod: nn.Module, w: dict, layer: OnnxLayer, assigned: dict, folded_bn: bool) -> list[str]:
    problems: list[str] = []
    if mod.bias is not None:
        if "bias" in w:
            _set(assigned, problems, f"{name}.bias", mod.bias, w["bias"])
        else:
            problems.append(f"{name}: has a bias the ONNX {layer.op} {layer.name!r} lacks")
    elif "bias" in w and not folded_bn:
        problems.append(f"{name}: the ONNX {layer.op} {layer.name!r} has a bias this layer lacks (and no "
                        "BatchNorm follows to take it)")
    return problems
