"""Training-batch throughput of streaming decoding (``data.stream=true``: JPEG decoding in DataLoader workers, from
files or a ``.rec``) against the decoded in-memory array (the cached path), measured in the same run on the same
images; prints images/s and the ratio to the cached path, and the memory each path holds.

    python benchmarks/streaming.py --folder ../shared/data/lfw/lfw-deepfunneled --rec lfw.rec [--images 3000]
"""

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from facelearn.data.datamodule import FaceImageDataset, StreamingFaceDataset, batch_passthrough
from facelearn.data.images import FaceCrop
from facelearn.data.recordio import RecordIOSource
from facelearn.data.records import IdentityFolder


def rate(ds, workers: int, batch: int) -> float:
    sampler = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(range(len(ds))), batch, False)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=batch_passthrough)
    t0, n = time.perf_counter(), 0
    for images, _ in loader:
        n += len(images)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", required=True)
    ap.add_argument("--rec", default=None, help="the same images packed with facelearn.pack")
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--center-crop", type=int, default=150)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(1)
    crop = FaceCrop(args.size, args.center_crop)
    sources = {"folder": IdentityFolder(args.folder).load(args.size)}
    if args.rec:
        sources["rec"] = RecordIOSource(args.rec).load(args.size)
    n = min(args.images, len(sources["folder"]))
    labels = np.zeros(n, dtype=np.int64)
    t0 = time.perf_counter()
    cached = FaceImageDataset(sources["folder"].subset(np.arange(n)).decode(crop), labels, ["x"])
    decode_s = time.perf_counter() - t0
    base = rate(cached, 0, args.batch)
    print(f"{n} images at {args.size} px, batch {args.batch}, 1 torch thread per process")
    print(f"cached array: {base:10.0f} images/s (ratio 1.00; decoding it first took {decode_s:.1f} s, "
          f"holds {cached.images.numel() / 2**20:.0f} MiB)")
    for name, records in sources.items():
        ds = StreamingFaceDataset(records.paths[:n], crop, labels, ["x"])
        for workers in (0, 1, 2):
            r = rate(ds, workers, args.batch)
            print(f"stream {name:6s} {workers} worker(s): {r:6.0f} images/s (ratio {r / base:.4f}; holds the paths only)")


if __name__ == "__main__":
    main()
