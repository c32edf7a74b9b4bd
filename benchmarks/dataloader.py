"""Training-batch loading: per-sample ``__getitem__`` + default collate (the baseline) vs the batched
``__getitems__`` path the DataModule uses, measured in the same run on the same decoded uint8 data.

    python benchmarks/dataloader.py [--images 20000] [--size 112] [--batch 256]
"""

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from facelearn.data.datamodule import FaceImageDataset, batch_passthrough


class PerSample(Dataset):
    def __init__(self, ds: FaceImageDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        return self.ds[i]


def epoch_time(loader: DataLoader) -> float:
    t0 = time.perf_counter()
    n = 0
    for images, _ in loader:
        n += len(images)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    ds = FaceImageDataset(rng.integers(0, 255, (args.images, 3, args.size, args.size), dtype=np.uint8),
                          rng.integers(0, 1000, args.images), [str(i) for i in range(1000)])
    g = torch.Generator().manual_seed(0)
    base = DataLoader(PerSample(ds), batch_size=args.batch, shuffle=True, drop_last=True, generator=g)
    fast = DataLoader(ds, batch_size=args.batch, shuffle=True, drop_last=True, generator=g,
                      collate_fn=batch_passthrough)
    epoch_time(fast)  # warm-up
    t_base, t_fast = min(epoch_time(base) for _ in range(2)), min(epoch_time(fast) for _ in range(2))
    print(f"{args.images} images {args.size}px, batch {args.batch}: per-sample + collate {args.images / t_base:,.0f} "
          f"img/s, batched __getitems__ {args.images / t_fast:,.0f} img/s, speed-up {t_base / t_fast:.1f}x")


if __name__ == "__main__":
    main()
