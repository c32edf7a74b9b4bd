"""A run resumed from a mid-epoch checkpoint continues exactly like the uninterrupted run (SST: queue, sampler
position, RNG of the augmentation)."""

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
import pytest
import torch

from facelearn.callbacks import ResumeStateCallback
from facelearn.data.datamodule import FaceDataModule
from facelearn.data.samplers import IdentityPairSampler
from facelearn.data.splits import Shallow
from facelearn.data.synthetic import SyntheticFaces
from facelearn.methods.sst import SSTModule
from facelearn.nn.backbones import SmallFaceNet
from facelearn.nn.heads import CosFace


class LossRecorder(pl.Callback):
    def __init__(self):
        self.losses = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = (float(outputs["loss"]), batch[1].tolist())


def tiny_data(batch_size=16, pairs=True):
    """64 synthetic identities x 2 images at 16 px, identity-pair batches (or, pairs=False, no facelearn sampler)."""
    return FaceDataModule(train=SyntheticFaces(num_identities=64, images_per_identity=2, seed=0), split=Shallow(2),
                          benchmarks={}, image_size=16, batch_size=batch_size,
                          sampler=(lambda **kw: IdentityPairSampler(**kw)) if pairs else None)


def tiny_net():
    return SmallFaceNet(embedding_size=8, image_size=16, widths=(4, 4, 4, 4))


def tiny_sst(queue_size=24):
    return SSTModule(tiny_net(), optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), head=CosFace(8, 0),
                     queue_size=queue_size, embedding_size=8, momentum=0.5, num_classes=64)


def fit(tmp_path, max_steps, ckpt=None, every_n_steps=None):
    pl.seed_everything(0)
    dm, module = tiny_data(), tiny_sst()
    rec = LossRecorder()
    callbacks = [ResumeStateCallback(), rec]
    if every_n_steps:
        callbacks.append(ModelCheckpoint(dirpath=tmp_path, filename="{step}", every_n_train_steps=every_n_steps,
                                         save_top_k=-1, monitor=None))
    trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False, callbacks=callbacks,
                         default_root_dir=str(tmp_path), enable_checkpointing=bool(every_n_steps))
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    return module, rec.losses


@pytest.mark.filterwarnings("ignore:.*resuming from a checkpoint that ended before the epoch ended")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mid_epoch_resume_matches_uninterrupted(tmp_path):
    # 64 identities / 8 per batch = 8 steps per epoch; the run checkpoints at step 5 (mid-epoch 0), then the
    # resumed run goes on to step 11 (into epoch 1), like the uninterrupted one.
    full, full_losses = fit(tmp_path / "a", 11, every_n_steps=5)
    ckpt = tmp_path / "a" / "step=5.ckpt"
    assert ckpt.is_file()
    resumed, rest = fit(tmp_path / "c", 11, ckpt=str(ckpt))
    assert sorted(rest) == list(range(6, 12))
    for step in range(6, 12):
        assert rest[step][1] == full_losses[step][1], f"step {step}: different batch"
        assert rest[step][0] == pytest.approx(full_losses[step][0], rel=1e-5, abs=1e-6), f"step {step}"
    assert torch.equal(resumed.queue.labels, full.queue.labels)
    assert torch.allclose(resumed.queue.features, full.queue.features, atol=1e-5)
    for a, b in zip(resumed.gallery.parameters(), full.gallery.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.filterwarnings("ignore:.*resuming from a checkpoint that ended before the epoch ended")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_epoch_averages_of_a_mid_epoch_resume_cover_the_whole_epoch(tmp_path):
    """train/loss_epoch of the epoch a run resumes in equals the uninterrupted run's (the sums before the
    checkpoint are saved and merged)."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    def run(root, ckpt=None, every=None):
        pl.seed_everything(0)
        dm, module = tiny_data(), tiny_sst()
        callbacks = [ResumeStateCallback()]
        if every:
            callbacks.append(ModelCheckpoint(dirpath=root, filename="{step}", every_n_train_steps=every,
                                             save_top_k=-1, monitor=None))
        trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=CSVLogger(root, name="csv", version=""),
                             enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                             callbacks=callbacks, enable_checkpointing=bool(every), log_every_n_steps=1)
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
        with open(root / "csv" / "metrics.csv") as fh:
            return {int(r["epoch"]): float(r["train/loss_epoch"]) for r in csv.DictReader(fh)
                    if r.get("train/loss_epoch")}

    full = run(tmp_path / "a", every=5)  # 8 steps per epoch: step 5 is mid-epoch 0
    resumed = run(tmp_path / "b", ckpt=str(tmp_path / "a" / "step=5.ckpt"))
    assert resumed[0] == pytest.approx(full[0], rel=1e-5) and resumed[1] == pytest.approx(full[1], rel=1e-5)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_another_number_of_processes_is_refused_when_lightning_shards_the_data(tmp_path):
    """data.sampler=null: Lightning's DistributedSampler orders the data by the number of processes, so a
    checkpoint of 2 x 16 does not continue on 1 x 32 even though the global batch is kept."""
    from facelearn.methods.conventional import ConventionalModule
    dm = tiny_data(batch_size=32, pairs=False)
    module = ConventionalModule(tiny_net(), head=CosFace(8, 64), optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    callback = ResumeStateCallback()
    callback.load_state_dict({"epoch": 0, "start": 3, "layout": {"world_size": 2, "batch_size": 16}})
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[callback], enable_checkpointing=False,
                         default_root_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"data.sampler=null.*resume with 2 process\(es\)"):
        trainer.fit(module, datamodule=dm)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_batchnorm_net_resumed_on_another_split_says_what_differs(tmp_path, caplog):
    """A checkpoint of 2 x 16 whose BatchNorm layers took statistics over 16 images, resumed on 1 x 32: the run goes
    on and its first line says the statistics now cover 32 images (and how to keep them over the global batch)."""
    import logging

    pl.seed_everything(0)
    dm, module = tiny_data(batch_size=32), tiny_sst(queue_size=32)  # 16 pairs per step: a queue of 2 steps
    callback = ResumeStateCallback()
    callback.load_state_dict({"epoch": 0, "start": 1, "layout": {"world_size": 2, "batch_size": 16},
                              "batchnorm_images": 16})
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[callback], enable_checkpointing=False,
                         use_distributed_sampler=False, default_root_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="facelearn.callbacks.resume"):
        trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2
    (line,) = [r.getMessage() for r in caplog.records if "resuming a run" in r.getMessage()]
    assert "of 2 process(es) x data.batch_size=16 on 1 process(es) x data.batch_size=32" in line
    assert "differs with the split: BatchNorm statistics over 32 instead of 16 images" in line
    assert "trainer.sync_batchnorm=true" in line
