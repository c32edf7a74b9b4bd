"""End-to-end runs in-process: the composed config handed to ``train(cfg)`` (faster than a subprocess and with a
Python traceback on failure). DDP, signals and the CLI's own behaviour (exit codes, multirun, paths from the working
directory) stay subprocess tests elsewhere."""

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from facelearn.train import train


def compose_run(tmp_path, overrides, tiny=True):
    """The config `python -m facelearn.train <overrides>` would run, writing under tmp_path."""
    GlobalHydra.instance().clear()
    # tiny: the tiny synthetic run; False: a narrow SmallFaceNet on the given data; None: sizes as given
    size = ["+debug=tiny_synthetic"] if tiny else [] if tiny is None else ["backbone.widths=[8,16,32,64]",
                                                                           "backbone.embedding_size=32"]
    with initialize_config_module("facelearn.conf", version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, *size, f"paths.log_dir={tmp_path / 'logs'}"])
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


@pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")
def test_streaming_decoding_trains_like_the_cached_array(tmp_path):
    """data.stream=true decodes in the DataLoader workers: same pixels, so the same run, also from a .rec."""
    import numpy as np
    from PIL import Image

    from facelearn.data.recordio import pack
    from facelearn.data.records import IdentityFolder

    rng = np.random.default_rng(0)
    for p in range(24):
        for i in range(3):
            (tmp_path / "faces" / f"p{p}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(tmp_path / "faces" / f"p{p}" / f"{i}.jpg")
    pack(IdentityFolder(str(tmp_path / "faces")).load(0), tmp_path / "faces.rec")
    base = ["data=folder", f"data.train.root={tmp_path / 'faces'}", "data.train.center_crop=32", "data.batch_size=16",
            "benchmark=none", "monitor=null", "trainer.max_epochs=2", "data.image_size=32"]
    rec = ["data=rec", f"data.train.path={tmp_path / 'faces.rec'}", "data.train.center_crop=32", "data.batch_size=16",
           "benchmark=none", "monitor=null", "trainer.max_epochs=2", "data.image_size=32"]
    runs = {name: train(compose_run(tmp_path / name, overrides, tiny=False)) for name, overrides in {
        "cached": base, "stream0": [*base, "data.stream=true"],
        "stream2": [*base, "data.stream=true", "data.num_workers=2"],
        "rec_cached": [*rec, "data.stream=false"], "rec_stream": [*rec, "data.num_workers=2"]}.items()}
    losses = {name: m["train/loss_epoch"] for name, m in runs.items()}
    # exactly equal within a source (data=folder and data=rec differ in their default augmentation)
    assert losses["cached"] == losses["stream0"] == losses["stream2"], losses
    assert losses["rec_cached"] == losses["rec_stream"], losses


@pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")
def test_init_from_starts_every_method_from_the_checkpoints_backbone(tmp_path):
    """Pretrain (tiny conventional run), then build fine-tuning runs with init_from: the backbone (and SST's gallery
    net) start as the checkpoint's; the head starts afresh; a different backbone is refused before any data."""
    import torch

    from facelearn.build import build_module
    from facelearn.cli.validate import validate_train_config

    train(compose_run(tmp_path / "pre", ["+experiment=conventional_shallow"]))
    ckpt = next((tmp_path / "pre").rglob("last.ckpt"))
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    for experiment in ("conventional_shallow", "sst_shallow"):
        cfg = compose_run(tmp_path / experiment, [f"+experiment={experiment}", f"init_from={ckpt}"])
        validate_train_config(cfg)
        module = build_module(cfg, 1000)
        nets = [module.backbone] + ([module.gallery] if experiment == "sst_shallow" else [])
        for net in nets:
            for key, value in net.state_dict().items():
                assert torch.equal(value, state[f"backbone.{key}"]), (experiment, key)
    cfg = compose_run(tmp_path / "other", ["+experiment=conventional_shallow", f"init_from={ckpt}",
                                           "backbone.embedding_size=32"])
    with pytest.raises(ValueError, match=r"init_from=.*embedding_size \(64 there, 32 here\)"):
        validate_train_config(cfg)
    cfg = compose_run(tmp_path / "none", ["+experiment=conventional_shallow", f"init_from={tmp_path / 'no.ckpt'}"])
    with pytest.raises(FileNotFoundError, match="init_from: checkpoint .*no.ckpt does not exist"):
        validate_train_config(cfg)
