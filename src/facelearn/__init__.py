"""facelearn: face representation learning on PyTorch Lightning + Hydra."""

from facelearn.paths import register_resolvers

# The configs' default paths use these resolvers; registering on import makes them available to every entry
# point, to DDP ranks re-launched by Lightning and to tests that compose configs.
register_resolvers()
