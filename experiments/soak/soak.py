"""Soak run: thousands of training steps of SST + doppelganger mining on streamed files (tiny images), with the
memory and open file handles of the training process and its DataLoader workers sampled from /proc while it runs.

    python experiments/soak/soak.py OUT_DIR [--epochs 60] [--workers 2] [--every 2.0]

Writes OUT_DIR/faces (a folder of 400 synthetic identities x 4 PNG images, 32 px) and OUT_DIR/bench (60 other
identities: the per-epoch identification benchmark), trains
``+experiment=sst_shallow data=folder data.stream=true`` with the mining callback and the per-epoch benchmark
callback on, and writes ``samples.csv`` (seconds, RSS of the trainer, RSS of its workers, open fds of the trainer,
of its workers) and ``summary.json`` (steps; RSS and fds at 10 % and at the end of the training phase, i.e. while
the workers are alive; the slope of the trainer's RSS over the second half of it in MiB per 1,000 steps). Flat: no leak in the streaming workers, the SST queue,
the doppelganger list or the benchmark callback over the run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time

import numpy as np


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the DataLoader workers), from /proc/<n>/stat."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            m = re.search(r"VmRSS:\s+(\d+) kB", fh.read())
        return int(m.group(1)) / 1024 if m else 0.0
    except OSError:
        return 0.0


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def write_faces(root: str, identities: int = 400, per: int = 4, seed: int = 3, prefix: str = "id") -> None:
    from PIL import Image

    from facelearn.data.synthetic import SyntheticFaces
    faces = SyntheticFaces(num_identities=identities, images_per_identity=per, seed=seed).load(32)
    for k, image in enumerate(faces.images):
        folder = os.path.join(root, f"{prefix}{k // per:04d}")
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(image.transpose(1, 2, 0)).save(os.path.join(folder, f"{k % per}.png"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    args = ap.parse_args()
    faces, bench = os.path.join(args.out, "faces"), os.path.join(args.out, "bench")
    if not os.path.isdir(faces):
        write_faces(faces)
        write_faces(bench, identities=60, per=3, seed=11, prefix="other")  # the benchmark: other people
    cmd = [sys.executable, "-m", "facelearn.train", "+experiment=sst_shallow", "data=folder",
           f"data.train.root={faces}", "data.image_size=32", "data.stream=true", f"data.num_workers={args.workers}",
           "data.batch_size=32", "data/split=shallow", "data.split.images_per_identity=2",
           "backbone.widths=[8,16,32,64]", "backbone.embedding_size=64", "method.queue_size=128",
           "+callbacks.doppelganger._target_=facelearn.callbacks.DoppelgangerCallback",
           "benchmark=identification", f"benchmark.identification.root={bench}", "monitor=null",
           "trainer.log_every_n_steps=50",
           f"trainer.max_epochs={args.epochs}", f"paths.log_dir={os.path.join(args.out, 'logs')}"]
    log = open(os.path.join(args.out, "train.log"), "w")
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    rows = []
    while proc.poll() is None:
        kids = children(proc.pid)
        rows.append((time.time() - start, rss_mib(proc.pid), sum(rss_mib(c) for c in kids), fds(proc.pid),
                     sum(fds(c) for c in kids), len(kids)))
        time.sleep(args.every)
    log.close()
    with open(os.path.join(args.out, "samples.csv"), "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["seconds", "trainer_rss_mib", "workers_rss_mib", "trainer_fds", "workers_fds", "workers"])
        w.writerows([[f"{r[0]:.1f}", f"{r[1]:.1f}", f"{r[2]:.1f}", r[3], r[4], r[5]] for r in rows])
    text = open(os.path.join(args.out, "train.log")).read()
    steps = max((int(s) for s in re.findall(r"step (\d+)/\d+", text)), default=0)
    # the training phase: the samples taken while the DataLoader workers were alive (not start-up or shutdown)
    train = [r for r in rows if r[5] > 0]
    if len(train) < 10:
        raise SystemExit(f"only {len(train)} samples while training: run longer (--epochs) or sample more often")
    t, rss = np.array([r[0] for r in train]), np.array([r[1] for r in train])
    half = t >= t[0] + (t[-1] - t[0]) / 2
    seconds_per_step = (t[-1] - t[0]) / max(steps, 1)
    slope = float(np.polyfit(t[half], rss[half], 1)[0]) * seconds_per_step * 1000  # MiB/s x s/step x 1000
    first, last = train[len(train) // 10], train[-1]
    summary = {"returncode": proc.returncode, "seconds": round(rows[-1][0], 1), "steps": steps,
               "training_samples": len(train),
               "trainer_rss_mib": [round(first[1], 1), round(last[1], 1)],
               "workers_rss_mib": [round(first[2], 1), round(last[2], 1)],
               "trainer_fds": [first[3], last[3]], "workers_fds": [first[4], last[4]],
               "trainer_rss_slope_mib_per_1000_steps_second_half": round(slope, 3),
               "note": "pairs are [at 10 % of the training phase, at its end]", "command": cmd[1:]}
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    print(json.dumps({k: v for k, v in summary.items() if k != "command"}, indent=2))


if __name__ == "__main__":
    main()
