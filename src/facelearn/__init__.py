"""facelearn: face representation learning on PyTorch Lightning + Hydra."""

from facelearn.paths import register_resolvers

# The configs' default paths use these resolvers; registering on import makes them available to every entry
# point, to DDP ranks re-launched by Lightning and to tests that compose configs.
register_resolvers()

import logging as _logging

# faiss (imported by pytorch-metric-learning and IDA) logs each instruction-set build it tries at INFO, including a
# ModuleNotFoundError for builds this CPU does not use: six lines per run that nobody can act on.
_logging.getLogger("faiss").setLevel(_logging.WARNING)
