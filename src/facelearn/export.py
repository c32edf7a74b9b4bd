"""Export a checkpoint's embedding model to ONNX: ``python -m facelearn.export ckpt_path=PATH [output=FILE]``.

The ONNX model takes float32 RGB pixels in [0, 255] (N, 3, S, S; S = the training image size) and returns
L2-normalised embeddings (normalisation and, when the model uses it, flip test-time augmentation are inside the
graph; the batch dimension is dynamic). After writing, onnxruntime's output is compared with PyTorch's on random
images (``check``). Evaluate it like a checkpoint: ``python -m facelearn.evaluate onnx_path=FILE benchmark=...``.
``layout=insightface`` writes what insightface's ``ArcFaceONNX`` / arcface_torch's ``onnx_helper`` load instead (the
network alone, (x - 127.5) / 127.5 RGB in, raw embedding out, opset 11; see ``facelearn.onnx_model``).
"""

from __future__ import annotations

import logging
import os
import warnings

import hydra
from omegaconf import DictConfig

from facelearn.cli.validate import one_line_errors

log = logging.getLogger(__name__)
LAYOUTS = ("facelearn", "insightface")  # facelearn.onnx_model.LAYOUTS, here so a wrong one fails before any import


def export(cfg: DictConfig) -> str:
    if cfg.layout not in LAYOUTS:
        raise ValueError(f"layout={cfg.layout}: expected one of {', '.join(LAYOUTS)}")
    import torch
    import torch.nn.functional as F

    from facelearn.evaluate import load_checkpoint_module
    from facelearn.onnx_model import OnnxEmbedder, export_insightface_onnx, export_onnx
    warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
    module, run_cfg = load_checkpoint_module(cfg.ckpt_path, "cpu")
    size = int(cfg.image_size or run_cfg.data.image_size)
    out = cfg.output or os.path.splitext(cfg.ckpt_path)[0] + ".onnx"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    insightface = cfg.layout == "insightface"
    (export_insightface_onnx if insightface else export_onnx)(module, out, size)
    if cfg.check:
        images = torch.randint(0, 256, (5, 3, size, size), dtype=torch.uint8)
        if insightface:  # the file holds the network alone: compare with it, single pass, no flip
            with torch.no_grad():
                expected = F.normalize(module.embedding_network()(images.float() / 127.5 - 1.0), dim=1)
        else:
            expected = module.embed(images)
        diff = float((OnnxEmbedder(out).embed(images) - expected).abs().max())
        if diff > cfg.tolerance:
            raise RuntimeError(f"{out}: onnxruntime differs from PyTorch by {diff:.2e} (> {cfg.tolerance})")
        log.info("onnxruntime vs PyTorch on 5 random images: max |difference| %.2e", diff)
    what = ("insightface layout: RGB (x - 127.5) / 127.5 in, raw embedding out, opset 11" if insightface
            else "pixels 0-255")
    print(f"ONNX embedding model ({size}x{size} input, {what}) written to {out}", flush=True)
    return out


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
@one_line_errors("facelearn.export")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
