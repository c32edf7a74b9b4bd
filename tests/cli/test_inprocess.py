"""End-to-end runs in-process: the composed config handed to ``train(cfg)`` (faster than a subprocess and with a
Python traceback on failure). DDP, signals and the CLI's own behaviour (exit codes, multirun, paths from the working
directory) stay subprocess tests elsewhere."""

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from facelearn.train import train


def compose_run(tmp_path, overrides):
    """The config `python -m facelearn.train <overrides>` would run, writing under tmp_path."""
    GlobalHydra.instance().clear()
    with initialize_config_module("facelearn.conf", version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "+debug=tiny", f"paths.log_dir={tmp_path / 'logs'}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")  # ${hydra:runtime.output_dir} needs a running Hydra app
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


# Lightning's hint that 6 batches per epoch are fewer than log_every_n_steps (printed, not raised, in a subprocess)
@pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")
@pytest.mark.parametrize("overrides,key,floor", [
    (["+experiment=conventional_shallow"], "bench/synthetic/accuracy", 0.6),
    (["+experiment=sst_shallow", "method.queue_size=48", "data.batch_size=16"], "bench/synthetic/accuracy", 0.6),
    (["+experiment=dm_joint", "data.batch_size=27", "data.sampler.num_random=3",
      "data.train.images_per_identity=[3,5]", "benchmark.oneshot.num_novel=20"], "bench/oneshot/novel/top1", 0.05),
])
def test_train_in_process(tmp_path, overrides, key, floor):
    metrics = train(compose_run(tmp_path, overrides))
    assert metrics[key] > floor, metrics
    assert (tmp_path / "run" / "benchmark_metrics.json").is_file()
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
