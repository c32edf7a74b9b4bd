"""A training step with the bottom of the backbone frozen (``freeze=<module>``) against the whole backbone
training, in one run: forward + backward + SGD step of the backbone alone on random 112 px images, images/s of
both and the ratio frozen / full.

    python benchmarks/freeze_step.py [--backbone sface] [--freeze body.22] [--batch 32] [--steps 4] [--threads 1]

SFace's network without its weights (the speed does not depend on them). Run twice: the machine's run-to-run
spread is part of the answer.
"""

import argparse
import time

import torch

from facelearn.nn.backbones import SFaceNet, SmallFaceNet
from facelearn.nn.freeze import freeze_through, keep_frozen_in_eval

BACKBONES = {"sface": lambda: SFaceNet(image_size=112), "small": lambda: SmallFaceNet(image_size=112)}


def images_per_second(freeze: str | None, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    net = BACKBONES[args.backbone]()
    freeze_through(net, freeze)
    net.train()
    keep_frozen_in_eval(net)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 3, 112, 112)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
        opt.step()

    step()  # warm-up (allocations, kernels)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    return args.steps * args.batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="sface", choices=sorted(BACKBONES))
    ap.add_argument("--freeze", default="body.22")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    full = images_per_second(None, args)
    frozen = images_per_second(args.freeze, args)
    print(f"{args.backbone}, batch {args.batch}, {args.threads} thread(s)\n")
    print("| backbone | whole net trains (img/s) | frozen through " + args.freeze + " (img/s) | ratio |")
    print("|---|---|---|---|")
    print(f"| {args.backbone} | {full:.1f} | {frozen:.1f} | {frozen / full:.2f} |")


if __name__ == "__main__":
    main()
