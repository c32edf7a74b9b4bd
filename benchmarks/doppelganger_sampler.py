"""Per-step cost of doppelganger mining against random sampling, measured in the same run on LFW-sized labels
(default: 4,586 classes, 9,700 images, batches of 81 = 27 classes x 3): batch construction with N_r = 9
(doppelganger chains) vs N_r = 27 (random), plus the list update from a batch of head scores.

    python benchmarks/doppelganger_sampler.py [--classes 4586] [--images 9700] [--batch 81] [--steps 2000]
"""

import argparse
import time

import numpy as np
import torch

from facelearn.data.doppelganger import DoppelgangerList, DoppelgangerSampler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", type=int, default=4586)
    ap.add_argument("--images", type=int, default=9700)
    ap.add_argument("--batch", type=int, default=81)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    labels = np.sort(np.r_[np.arange(args.classes), rng.integers(0, args.classes, args.images - args.classes)])
    dl = DoppelgangerList(args.classes)
    dl.doppelganger.copy_(torch.from_numpy(rng.integers(0, args.classes, args.classes)))  # a full list
    times = {}
    for name, n_r in (("random (N_r=27)", 27), ("doppelganger (N_r=9)", 9)):
        s = DoppelgangerSampler(labels, args.batch, images_per_class=3, num_random=n_r, doppelgangers=dl)
        t0 = time.perf_counter()
        for i in range(args.steps):
            s.build_batch(0, i)
        times[name] = (time.perf_counter() - t0) / args.steps
    scores = torch.randn(args.batch, args.classes)
    y = torch.from_numpy(labels[:args.batch])
    t0 = time.perf_counter()
    for _ in range(args.steps):
        cand, val = DoppelgangerList.batch_candidates(scores, y)
        dl.update(y, cand, val)
    update = (time.perf_counter() - t0) / args.steps
    base = times["random (N_r=27)"]
    for name, t in times.items():
        print(f"{name:24s} batch construction {1e3 * t:7.3f} ms/step  ({t / base:.2f}x random)")
    print(f"{'list update':24s} {1e3 * update:7.3f} ms/step (argmax over {args.classes} classes + scatter)")
    print(f"doppelganger overhead vs random sampling: {1e3 * (times['doppelganger (N_r=9)'] - base + update):.3f} "
          "ms per step")


if __name__ == "__main__":
    main()
