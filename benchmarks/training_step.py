"""facelearn's training loop against a plain PyTorch loop with the same modules, data and optimiser, in one run.

For each method (``conventional_shallow``: AM-softmax; ``sst_shallow``: Semi-Siamese Training), both arms are built
from the same composed config and seed: the same DataModule batches (sampler, augmentation on the batch), the same
backbone / head / objective, SGD and schedule.

* facelearn: ``facelearn.train.train(cfg)`` as ``python -m facelearn.train`` runs it (Lightning Trainer, loggers,
  progress, diagnostics, checkpoint callbacks), benchmarks off; images/s from the module's own measure
  (``train/images_per_sec``: first batch to last batch end of the last epoch).
* plain: ``for batch in loader: augment -> forward -> objective -> backward -> step -> schedule`` (SST adds the
  gallery forward, the momentum update and the queue write, calling the module's own methods), timed the same way.

Prints images/s of both and the ratio facelearn / plain per method (1.0: no overhead). Run twice and compare: the
machine's run-to-run spread is part of the answer.

``--compile``: instead, the backbones' forward + backward + SGD step alone, eager against ``compile=backbone``
(``nn.Module.compile``, Inductor) on the same weights and batch: images/s, the compile time, the first step's loss
of both (equal within float tolerance), and the achieved GFLOP/s (``torch.utils.flop_counter``: forward + backward)
next to this machine's fp32 matmul rate measured in the same run (2048 x 2048), so the efficiency is a number.

    python benchmarks/training_step.py [--epochs 2] [--methods conventional_shallow sst_shallow] [--threads 2]
    python benchmarks/training_step.py --compile [--nets small:64 mobilefacenet:112] [--batch 128] [--threads 2]
    python benchmarks/training_step.py --compile --channels-last ...   # + both arms in channels_last memory format

``--channels-last`` adds eager and compiled arms with the network's weights and the batch in channels_last memory
format (NHWC), each against the same-run eager baseline.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from facelearn.build import build_module
from facelearn.train import train


def config(experiment: str, epochs: int, out: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_module("facelearn.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"+experiment={experiment}", f"trainer.max_epochs={epochs}",
                                          f"threads={torch.get_num_threads()}",
                                          "benchmark=none", "monitor=null", "logger=csv",
                                          f"paths.log_dir={out / 'logs'}", "trainer.enable_progress_bar=false"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out / "run")
        cfg.paths.cache_dir = str(out / "cache")
    return cfg


def facelearn_rate(cfg: DictConfig) -> float:
    return train(cfg)["train/images_per_sec"]


def plain_rate(cfg: DictConfig) -> float:
    """The same math without Lightning: images/s of the last epoch."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate

    pl.seed_everything(cfg.seed, workers=True)
    dm = instantiate(cfg.data, _recursive_=True)
    dm.setup("fit")
    module = build_module(cfg, dm.num_classes)
    module.train()
    opt = module.optimizer_factory(module.trainable_parameters())
    loader = dm.train_dataloader()
    total = cfg.trainer.max_epochs * len(loader)
    sched = module.scheduler_factory(opt, total_steps=total, steps_per_epoch=len(loader))
    sst = hasattr(module, "queue")
    step = 0
    for epoch in range(cfg.trainer.max_epochs):
        if hasattr(loader.batch_sampler, "set_epoch"):
            loader.batch_sampler.set_epoch(epoch)
        images_seen, start = 0, time.perf_counter()
        for images, labels in loader:
            images = dm.augment(images)
            if sst:
                loss = sst_step(module, images, labels, step)
            else:
                loss = module.objective(module.backbone(images), labels).total
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if sst and module.variant == "momentum":
                module.momentum_update()
            images_seen += len(labels)
            step += 1
        rate = images_seen / (time.perf_counter() - start)
    return rate


def sst_step(module, images: torch.Tensor, labels: torch.Tensor, step: int) -> torch.Tensor:
    x1, x2, ids = images[0::2], images[1::2], labels[0::2]
    p1, p2 = module.backbone(x1), module.backbone(x2)
    with torch.no_grad():
        gnet = module.gallery_net()
        g1, g2 = F.normalize(gnet(x1).float(), dim=1), F.normalize(gnet(x2).float(), dim=1)
    out_a, _ = module.direction_loss(p1, ids, g2, ids, 0)
    out_b, _ = module.direction_loss(p2, ids, g1, ids, 0)
    if module.use_queue:
        module.queue.enqueue(g2.detach(), ids, step)
    return 0.5 * (out_a.total + out_b.total)


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0) / 1e9


def backbone(name: str, size: int) -> torch.nn.Module:
    from hydra.utils import instantiate
    GlobalHydra.instance().clear()
    with initialize_config_module("facelearn.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"backbone={name}", f"data.image_size={size}"])
    return instantiate(cfg.backbone)


def train_rate(net: torch.nn.Module, x: torch.Tensor, steps: int) -> tuple[float, float, float]:
    """(first step's seconds, its loss, images/s of the next ``steps``) of forward + backward + SGD."""
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    target = torch.zeros(len(x), dtype=torch.long)

    def step() -> float:
        loss = F.cross_entropy(net(x)[:, :10], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    t0 = time.perf_counter()
    first = step()
    first_time = time.perf_counter() - t0
    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return first_time, first, steps * len(x) / (time.perf_counter() - t0)


class Holder(torch.nn.Module):
    """What compile=backbone finds on a method module: ``.backbone``."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone


def channels_last(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor]:
    return net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)


def compile_table(nets: list[str], batch: int, steps: int, threads: int, with_channels_last: bool = False) -> None:
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    from facelearn.nn.compile import Compile
    peak = matmul_gflops()
    print(f"\ntorch {torch.__version__}, {threads} threads, batch {batch}, {steps} timed steps; fp32 matmul "
          f"(2048^2) on this machine: {peak:.0f} GFLOP/s\n")
    print("| backbone | GFLOP / image (fwd+bwd) | eager img/s | compiled img/s | speed-up | compile s | "
          "eager GFLOP/s (% of matmul) | compiled GFLOP/s (% of matmul) | first loss eager / compiled |")
    print("|---|---|---|---|---|---|---|---|---|")
    extra = []
    for spec in nets:
        name, size = spec.split(":")
        torch.manual_seed(0)
        net = backbone(name, int(size)).train()
        twin = copy.deepcopy(net)
        net_copy = copy.deepcopy(net)  # initial weights for the channels_last arms
        x = torch.randn(batch, 3, int(size), int(size))
        with FlopCounterMode(display=False) as counter:
            net(x).sum().backward()
        per_image = counter.get_total_flops() / batch / 1e9
        net.zero_grad()
        _, eager_loss, eager = train_rate(net, x, steps)

        Compile().apply(Holder(twin))
        compile_s, compiled_loss, compiled = train_rate(twin, x, steps)
        print(f"| {name} {size} px | {per_image:.2f} | {eager:.0f} | {compiled:.0f} | {compiled / eager:.2f}x | "
              f"{compile_s:.0f} | {eager * per_image:.0f} ({100 * eager * per_image / peak:.0f} %) | "
              f"{compiled * per_image:.0f} ({100 * compiled * per_image / peak:.0f} %) | "
              f"{eager_loss:.6f} / {compiled_loss:.6f} |", flush=True)
        if with_channels_last:
            extra.append((name, size, eager, eager_loss, *cl_arms(net_copy, x, steps)))
    if with_channels_last:
        print("\n| backbone | eager img/s | eager channels_last img/s (/ eager) | compiled channels_last img/s "
              "(/ eager) | first loss eager / eager CL / compiled CL |")
        print("|---|---|---|---|---|")
        for name, size, eager, eager_loss, cl, cl_loss, ccl, ccl_loss in extra:
            print(f"| {name} {size} px | {eager:.0f} | {cl:.0f} ({cl / eager:.2f}x) | {ccl:.0f} ({ccl / eager:.2f}x) | "
                  f"{eager_loss:.6f} / {cl_loss:.6f} / {ccl_loss:.6f} |", flush=True)


def cl_arms(net: torch.nn.Module, x: torch.Tensor, steps: int) -> tuple[float, float, float, float]:
    """(eager channels_last img/s, its first loss, compiled channels_last img/s, its first loss) from ``net``'s
    initial weights."""
    import copy

    from facelearn.nn.compile import Compile

    eager_net, xe = channels_last(copy.deepcopy(net), x)
    _, eager_loss, eager = train_rate(eager_net, xe, steps)
    twin, xc = channels_last(copy.deepcopy(net), x)
    Compile().apply(Holder(twin))
    _, compiled_loss, compiled = train_rate(twin, xc, steps)
    return eager, eager_loss, compiled, compiled_loss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", nargs="+", default=["conventional_shallow", "sst_shallow"])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="backbones alone: eager vs compiled, GFLOP/s")
    ap.add_argument("--nets", nargs="+", default=["small:64", "mobilefacenet:112"], help="backbone:image size")
    ap.add_argument("--channels-last", action="store_true", help="with --compile: channels_last arms too")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.compile:
        compile_table(args.nets, args.batch, args.steps, args.threads, args.channels_last)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            cfg = config(method, args.epochs, Path(tmp) / method)
            plain = plain_rate(cfg)
            ours = facelearn_rate(cfg)
            rows.append((method, ours, plain))
    print(f"\ntorch {torch.__version__}, {args.threads} threads, {args.epochs} epochs; images/s of the last epoch\n")
    print("| experiment | facelearn (images/s) | plain loop (images/s) | facelearn / plain |")
    print("|---|---|---|---|")
    for method, ours, plain in rows:
        print(f"| {method} | {ours:.0f} | {plain:.0f} | {ours / plain:.3f} |")


if __name__ == "__main__":
    main()
