"""ONNX embedding models: export a trained checkpoint, and embed with onnxruntime like a checkpoint does.

Two layouts (``facelearn.export layout=...``, recorded in the file's metadata as ``facelearn_layout``):

* ``facelearn`` (default): the whole embedding. Input ``images`` float32 (N, 3, H, W) with pixel values in
  [0, 255] (RGB, the training crop), normalisation to [-1, 1] built in, the embedding network, the flip test-time
  augmentation when the model uses it (f(x) + f(flip(x))), L2 normalisation; output ``embeddings`` (N, D).
* ``insightface``: what insightface's ``model_zoo.ArcFaceONNX`` and arcface_torch's ``onnx_helper`` load, as
  arcface_torch's ``torch2onnx.py`` writes it: the embedding network alone (no flip, no L2), input ``data`` RGB
  (N, 3, S, S) already scaled to (x - 127.5) / 127.5, output the raw embedding, opset 11 (TorchScript exporter).
  ``ArcFaceONNX`` picks that scaling from the names of the graph's first 8 nodes (a ``Sub*``/``_minus*`` and a
  ``Mul*``/``_mul*`` node mean "normalisation inside": raw pixels); the export checks that rule gives 127.5 / 127.5.

The batch dimension is dynamic. ``OnnxEmbedder`` runs either with onnxruntime behind the same ``embed`` contract as
a FaceModule, so every benchmark and scorer evaluates it unchanged.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class EmbeddingGraph(nn.Module):
    """What gets exported: pixels [0, 255] -> L2-normalised embedding (as ``FaceModule.embed``)."""

    def __init__(self, net: nn.Module, flip_tta: bool) -> None:
        super().__init__()
        self.net, self.flip_tta = net, flip_tta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images / 127.5 - 1.0
        feats = self.net(x)
        if self.flip_tta:
            feats = feats + self.net(torch.flip(x, dims=[3]))
        return F.normalize(feats, dim=1)


def export_onnx(module, path: str, image_size: int) -> None:
    """Write ``module``'s embedding as ONNX (torch.export-based exporter, dynamic batch)."""
    graph = EmbeddingGraph(module.embedding_network(), module.flip_tta).eval()
    example = torch.rand(2, 3, image_size, image_size) * 255
    # The exporter logs every optional op library it does not find and each graph-optimisation step: not actionable.
    noisy = [logging.getLogger(n) for n in ("torch.onnx", "onnx_ir", "onnxscript")]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.ERROR)
    try:
        program = torch.onnx.export(graph, (example,), input_names=["images"], output_names=["embeddings"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, verbose=False)
    finally:
        for lg, level in zip(noisy, levels):
            lg.setLevel(level)
    program.save(path)
    _set_layout(path, "facelearn")


from facelearn.export import LAYOUTS  # noqa: E402 - one list, read by the CLI before torch is imported


def _set_layout(path: str, layout: str) -> None:
    import onnx
    model = onnx.load(path, load_external_data=False)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = "facelearn_layout", layout
    onnx.save(model, path)


def insightface_input_scaling(path: str) -> tuple[float, float]:
    """(mean, std) that insightface's ``ArcFaceONNX`` would feed this file with (its rule, re-implemented: a node
    named ``Sub*``/``_minus*`` and one named ``Mul*``/``_mul*`` among the first 8 mean raw pixels, (0, 1); else
    (127.5, 127.5))."""
    import onnx
    nodes = onnx.load(path, load_external_data=False).graph.node[:8]
    sub = any(n.name.startswith(("Sub", "_minus")) for n in nodes)
    mul = any(n.name.startswith(("Mul", "_mul")) for n in nodes)
    return (0.0, 1.0) if sub and mul else (127.5, 127.5)


def export_insightface_onnx(module, path: str, image_size: int, opset: int = 11) -> None:
    """The embedding network alone in insightface's layout (see the module docstring)."""
    import warnings
    net = module.embedding_network().eval()
    example = torch.rand(2, 3, image_size, image_size) * 2 - 1
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated; arcface_torch's files are made with it
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), path, input_names=["data"], output_names=["embedding"],
                          opset_version=opset, dynamo=False, do_constant_folding=True,
                          dynamic_axes={"data": {0: "batch"}, "embedding": {0: "batch"}})
    _set_layout(path, "insightface")
    if insightface_input_scaling(path) != (127.5, 127.5):
        raise RuntimeError(f"{path}: its first node names would make insightface feed raw pixels; rename them")


class OnnxEmbedder:
    """An ONNX embedding model behind the ``FaceModule.embed`` contract (CPU onnxruntime)."""

    device = torch.device("cpu")
    training = False

    def __init__(self, path: str) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("evaluating an ONNX model needs onnxruntime: pip install 'facelearn[onnx]'") from e
        self.path = path
        self.session = ort.InferenceSession(_runnable(path), providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(f"{path}: expected one (N, 3, H, W) input, got {[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        self.image_size = inputs[0].shape[-1] if isinstance(inputs[0].shape[-1], int) else None
        # facelearn's own files say their layout; a file without one is read as facelearn's (earlier exports)
        self.layout = self.session.get_modelmeta().custom_metadata_map.get("facelearn_layout", "facelearn")
        if self.layout not in LAYOUTS:
            raise ValueError(f"{path}: unknown facelearn_layout {self.layout!r} (expected one of {LAYOUTS})")

    def eval(self) -> "OnnxEmbedder":
        return self

    def train(self, mode: bool = True) -> "OnnxEmbedder":
        return self

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (or floats in [-1, 1]) -> L2-normalised embeddings, whichever layout the file has."""
        if self.layout == "insightface":  # (x - 127.5) / 127.5 in, raw embedding out
            x = images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()
        else:
            x = images.float() if images.dtype == torch.uint8 else (images.float() + 1) * 127.5
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0]
        out = torch.from_numpy(out)
        return F.normalize(out, dim=1) if self.layout == "insightface" else out


def _runnable(path: str):
    """The model for onnxruntime: the file itself, or (when the graph declares inputs that no node reads, as
    OpenCV Zoo's int8 SFace file does with the fp32 weights its quantized initializers replaced, which
    onnxruntime would then demand as feeds) the same graph without those declarations."""
    try:
        import onnx
    except ImportError:
        return path
    model = onnx.load(path, load_external_data=False)
    read = {i for n in model.graph.node for i in n.input}
    stale = [i.name for i in model.graph.input if i.name not in read]
    if not stale or any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return path
    log.info("%s: ignoring %d declared graph inputs that no node reads (e.g. %s)", path, len(stale), stale[:3])
    keep = [i for i in model.graph.input if i.name in read]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    return model.SerializeToString()
