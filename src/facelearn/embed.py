"""Embed face images with a trained model: ``python -m facelearn.embed MODEL INPUT OUT [options]``.

MODEL is a facelearn checkpoint (``.ckpt``) or an ONNX model (``.onnx``: ``facelearn.export``'s, whose graph holds
its own normalisation). INPUT is a folder (every image below it, recursively, sorted), a text file of image paths
relative to ``--root`` (one per line; anything after the path is ignored, so a ``facelearn`` list file works), or an
insightface ``.rec``. Writes ``OUT.npy`` (float32, one L2-normalised embedding per row) and ``OUT.txt`` (the image
of each row), and with ``--faiss`` ``OUT.faiss`` (an inner-product FAISS index: its scores are cosines).

In Python: ``facelearn.load_model(path)`` returns the same ``FaceEmbedder`` (``embed_files``, ``embed``).
Images are decoded like training images: resized to the model's input size, after ``--center-crop N`` when given
(faces not yet aligned: align them first with ``facelearn.align``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("facelearn.embed")


class FaceEmbedder:
    """A model that turns face images into L2-normalised embeddings, whatever file it came from."""

    def __init__(self, model: Any, image_size: int, source: str) -> None:
        self.model, self.image_size, self.source = model, int(image_size), source

    def embed(self, images: Any) -> "np.ndarray":
        """uint8 (N, 3, S, S) RGB images (S = ``image_size``; array or tensor) -> float32 (N, D) embeddings."""
        import torch
        x = torch.as_tensor(np.asarray(images))
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"{self.source}: expected uint8 images (N, 3, {self.image_size}, {self.image_size}), "
                             f"got {tuple(x.shape)}")
        with torch.no_grad():
            return self.model.embed(x).float().cpu().numpy()

    def embed_files(self, paths: list[str], center_crop: int | None = None, batch_size: int | None = None,
                    progress: bool = False) -> "np.ndarray":
        """Image files (or ``.rec`` records) -> (N, D) embeddings, decoded and embedded ``batch_size`` at a time."""
        from facelearn.data.images import FaceCrop, decode_images
        from facelearn.eval.embedding import default_batch_size
        batch = batch_size or default_batch_size(getattr(self.model, "device", "cpu"))
        crop, out, t0 = FaceCrop(self.image_size, center_crop), [], time.perf_counter()
        for start in range(0, len(paths), batch):
            out.append(self.embed(decode_images(paths[start:start + batch], crop)))
            done = min(start + batch, len(paths))
            if progress and (done == len(paths) or (start // batch) % 20 == 19):
                rate = done / max(time.perf_counter() - t0, 1e-9)
                log.info("embedded %d / %d images (%.0f images/s)", done, len(paths), rate)
        if not out:
            raise ValueError(f"{self.source}: no images to embed")
        return np.concatenate(out).astype(np.float32)


def load_model(path: str | os.PathLike, device: str = "cpu") -> FaceEmbedder:
    """A facelearn checkpoint (``.ckpt``, loaded with the restricted unpickler) or an ONNX model (``.onnx``) as a
    ``FaceEmbedder``; the input size comes from the run's config or the ONNX graph."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model {path} does not exist (a facelearn .ckpt or an .onnx)")
    if path.endswith(".onnx"):
        from facelearn.onnx_model import OnnxEmbedder
        model = OnnxEmbedder(path)
        if not model.image_size:
            raise ValueError(f"{path}: its input size is dynamic; facelearn.export writes a fixed one")
        return FaceEmbedder(model, model.image_size, path)
    from facelearn.evaluate import load_checkpoint_module
    module, cfg = load_checkpoint_module(path, device)
    return FaceEmbedder(module, int(cfg.data.image_size), path)


def input_paths(source: str, root: str | None = None) -> tuple[list[str], list[str]]:
    """(paths to decode, the name written for each row) of a folder, a list file or a ``.rec``."""
    src = Path(source)
    if src.is_dir():
        from facelearn.data.records import image_files
        paths = image_files(source, "INPUT")
        return paths, [os.path.relpath(p, source) for p in paths]
    if not src.is_file():
        raise FileNotFoundError(f"INPUT {source} does not exist (a folder, a list of images or a .rec)")
    if src.suffix == ".rec":
        from facelearn.data.recordio import RecordIOSource
        rec = RecordIOSource(source).load(0)
        return list(rec.paths), [f"{ident}/{p.rsplit('#', 1)[-1]}" for ident, p in zip(rec.identities, rec.paths)]
    base = Path(root or src.parent).resolve()
    paths, names = [], []
    for n, line in enumerate(src.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        rel = line.split()[0]
        full = (base / rel).resolve()
        if Path(rel).is_absolute() or base not in full.parents:  # nothing read from outside the given root
            raise ValueError(f"{source}:{n}: {rel!r} is not a path inside {base} (give --root)")
        if not full.is_file():
            raise FileNotFoundError(f"{source}:{n}: image {full} does not exist")
        paths.append(str(full))
        names.append(rel)
    if not paths:
        raise ValueError(f"{source}: lists no images")
    return paths, names


def write_outputs(out: str, embeddings: np.ndarray, names: list[str], faiss_index: bool) -> list[str]:
    stem = out[:-4] if out.endswith(".npy") else out
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    np.save(f"{stem}.npy", embeddings)
    Path(f"{stem}.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    written = [f"{stem}.npy", f"{stem}.txt"]
    if faiss_index:
        try:
            import faiss
        except ImportError as e:
            raise ImportError("--faiss needs faiss: pip install 'facelearn[faiss]'") from e
        index = faiss.IndexFlatIP(embeddings.shape[1])
        index.add(np.ascontiguousarray(embeddings))
        faiss.write_index(index, f"{stem}.faiss")
        written.append(f"{stem}.faiss")
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="facelearn.embed", description=__doc__.split("\n")[0],
                                 epilog="Writes OUT.npy (N x D float32), OUT.txt (row -> image) [, OUT.faiss].")
    ap.add_argument("model", help="a facelearn checkpoint (.ckpt) or an ONNX model (.onnx)")
    ap.add_argument("input", help="a folder of images, a text file of image paths, or a .rec")
    ap.add_argument("out", help="output path without extension (OUT.npy, OUT.txt)")
    ap.add_argument("--root", default=None, help="folder the list file's paths are relative to (default: its own)")
    ap.add_argument("--center-crop", type=int, default=None, help="crop the central N x N pixels before resizing")
    ap.add_argument("--batch-size", type=int, default=None, help="images per forward (default: 16 CPU, 256 GPU)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:i] (checkpoints; ONNX runs on the CPU)")
    ap.add_argument("--faiss", action="store_true", help="also write OUT.faiss, an inner-product index")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    try:
        if args.batch_size is not None and args.batch_size < 1:
            raise ValueError(f"--batch-size={args.batch_size}: expected an integer >= 1")
        paths, names = input_paths(args.input, args.root)  # the input is checked before the model is loaded
        model = load_model(args.model, args.device)
        log.info("embedding %d images from %s with %s (%d px)", len(paths), args.input, args.model,
                 model.image_size)
        embeddings = model.embed_files(paths, args.center_crop, args.batch_size, progress=True)
        written = write_outputs(args.out, embeddings, names, args.faiss)
    except (ValueError, FileNotFoundError, ImportError) as e:
        sys.exit(f"facelearn.embed: error: {e}")
    print(f"{embeddings.shape[0]} embeddings of dimension {embeddings.shape[1]}: {', '.join(written)}")


if __name__ == "__main__":
    main()
