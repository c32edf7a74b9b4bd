"""ONNX embedding models: export a trained checkpoint, and embed with onnxruntime like a checkpoint does.

The exported graph is the whole embedding: input ``images`` float32 (N, 3, H, W) with pixel values in [0, 255]
(RGB, the training crop), normalisation to [-1, 1] built in, the embedding network, the flip test-time augmentation
when the model uses it (f(x) + f(flip(x))), L2 normalisation; output ``embeddings`` (N, D). The batch dimension is
dynamic. ``OnnxEmbedder`` runs it with onnxruntime behind the same ``embed`` contract as a FaceModule, so every
benchmark and scorer evaluates it unchanged.
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

    def eval(self) -> "OnnxEmbedder":
        return self

    def train(self, mode: bool = True) -> "OnnxEmbedder":
        return self

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().numpy() if images.dtype == torch.uint8 else ((images.float() + 1) * 127.5).numpy()
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return torch.from_numpy(out)


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
