"""2-rank CPU (gloo) doppelganger-mining run: after every step all ranks must hold the same list; each rank saves
its list and the classes of its batches to OUT/rank<r>.pt."""

import sys

import lightning.pytorch as pl
import torch

from facelearn.callbacks import DoppelgangerCallback, ResumeStateCallback
from facelearn.data.datamodule import FaceDataModule
from facelearn.data.doppelganger import DoppelgangerSampler
from facelearn.data.splits import Deep
from facelearn.data.synthetic import SyntheticFaces
from facelearn.methods.conventional import ConventionalModule
from facelearn.nn.backbones import SmallFaceNet
from facelearn.nn.heads import NormFace
from facelearn.nn.pair_losses import MarginLoss
from facelearn.runtime.distributed import shutdown_process_group


class ListCheck(pl.Callback):
    def __init__(self, out, dm_cb):
        self.out, self.dm_cb, self.steps, self.classes = out, dm_cb, 0, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        lst = self.dm_cb.list.doppelganger
        gathered = trainer.strategy.all_gather(lst)
        assert torch.equal(gathered[0], gathered[1]), f"lists differ after step {trainer.global_step}"
        self.steps += 1
        self.classes.append(sorted(set(batch[1].tolist())))

    def on_train_end(self, trainer, pl_module):
        torch.save({"list": self.dm_cb.list.doppelganger, "steps": self.steps, "classes": self.classes},
                   f"{self.out}/rank{trainer.global_rank}.pt")


def main(out):
    pl.seed_everything(0)
    dm = FaceDataModule(train=SyntheticFaces(num_identities=60, images_per_identity=[3, 5], seed=0), split=Deep(),
                        benchmarks={}, image_size=16, batch_size=12,
                        sampler=lambda **kw: DoppelgangerSampler(images_per_class=3, num_random=2, **kw))
    net = SmallFaceNet(embedding_size=8, image_size=16, widths=(4, 4, 4, 4))
    dm.setup("fit")
    module = ConventionalModule(net, NormFace(8, dm.num_classes, scale=16.0, learnable_scale=True),
                                optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                                losses={"margin": (1.0, MarginLoss())})
    dm_cb = DoppelgangerCallback()
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=6, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False, callbacks=[dm_cb, ResumeStateCallback(), ListCheck(out, dm_cb)])
    trainer.fit(module, datamodule=dm)
    shutdown_process_group()  # both ranks tear gloo down together (facelearn.runtime.distributed)


if __name__ == "__main__":
    main(sys.argv[1])
