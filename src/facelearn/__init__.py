"""facelearn: face representation learning on PyTorch Lightning + Hydra."""

from facelearn.runtime.paths import register_resolvers

# The configs' default paths use these resolvers; registering on import makes them available to every entry
# point, to DDP ranks re-launched by Lightning and to tests that compose configs.
register_resolvers()

import logging as _logging

# faiss (imported by pytorch-metric-learning and IDA) logs each instruction-set build it tries at INFO, including a
# ModuleNotFoundError for builds this CPU does not use: six lines per run that nobody can act on.
_logging.getLogger("faiss").setLevel(_logging.WARNING)


def load_model(path, device: str = "cpu"):
    """A trained model (facelearn ``.ckpt`` or ``.onnx``) as a ``facelearn.embed.FaceEmbedder``:
    ``facelearn.load_model(p).embed_files(["a.jpg", "b.jpg"])`` -> (2, D) L2-normalised embeddings."""
    from facelearn.embed import load_model as _load_model  # torch only when used
    return _load_model(path, device)
