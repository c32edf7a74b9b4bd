"""2-rank CPU (gloo) SST run; after every step each rank checks that all ranks hold the same queue, and at the end
writes its queue to OUT/rank<r>.pt. Run as a script (never strategy=ddp inside pytest: see STACK-NOTES)."""

import sys

import lightning.pytorch as pl
import torch

from facelearn.data.datamodule import FaceDataModule
from facelearn.data.samplers import IdentityPairSampler
from facelearn.data.splits import Shallow
from facelearn.data.synthetic import SyntheticFaces
from facelearn.methods.sst import SSTModule
from facelearn.nn.backbones import SmallFaceNet
from facelearn.nn.heads import CosFace
from facelearn.runtime.distributed import shutdown_process_group


class QueueCheck(pl.Callback):
    def __init__(self, out: str) -> None:
        self.out, self.steps, self.batch_ids = out, 0, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        q = pl_module.queue
        gathered = trainer.strategy.all_gather(torch.cat([q.features.flatten(), q.labels.float(),
                                                          q.pointer.float().view(1)]))
        assert torch.equal(gathered[0], gathered[1]), f"queues differ after step {trainer.global_step}"
        self.steps += 1
        self.batch_ids.append(batch[1][0::2].tolist())

    def on_train_end(self, trainer, pl_module):
        torch.save({"features": pl_module.queue.features, "labels": pl_module.queue.labels,
                    "pointer": pl_module.queue.pointer, "steps": self.steps, "batch_ids": self.batch_ids},
                   f"{self.out}/rank{trainer.global_rank}.pt")


def main(out: str) -> None:
    pl.seed_everything(0)
    dm = FaceDataModule(train=SyntheticFaces(num_identities=64, images_per_identity=2, seed=0),
                        split=Shallow(2), benchmarks={}, image_size=16, batch_size=8,
                        sampler=lambda **kw: IdentityPairSampler(**kw))
    net = SmallFaceNet(embedding_size=8, image_size=16, widths=(4, 4, 4, 4))
    module = SSTModule(net, optimizer=lambda p: torch.optim.SGD(p, lr=0.1), head=CosFace(8, 0), queue_size=24,
                       embedding_size=8, momentum=0.5, num_classes=64)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=5, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False, callbacks=[QueueCheck(out)])
    trainer.fit(module, datamodule=dm)
    shutdown_process_group()  # both ranks tear gloo down together (facelearn.runtime.distributed)


if __name__ == "__main__":
    main(sys.argv[1])
