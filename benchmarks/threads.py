"""Thread settings of a CPU training run, side by side: the CLI as a user types it (``facelearn.train
+experiment=sst_shallow``, benchmarks off), once per setting, images/s of the last epoch (all processes), and each
setting's ratio to the planned default (``threads=null``: facelearn.runtime.threads decides).

    python benchmarks/threads.py [--experiment sst_shallow] [--epochs 2] [--repeats 1]
    python benchmarks/threads.py --stream [--experiment conventional_lfw]   # decoding LFW JPEGs in the workers

Settings: the plan; torch 1 thread; torch 2 threads; 2 DataLoader workers; 2 DDP ranks (gloo). With ``--stream``
(real files, ``data.stream=true``: images decoded in the DataLoader workers every epoch, the case where the plan
takes one core per worker from torch): 0, 1 and 2 workers as planned, and 1 and 2 workers with torch's threads
forced to 2. Run it on an idle machine: other load changes which setting wins (with two other busy processes, 2
threads measured 3x slower than 1).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

SETTINGS = {
    "planned (threads=null)": [],
    "threads=1": ["threads=1"],
    "threads=2": ["threads=2"],
    "2 DataLoader workers": ["data.num_workers=2"],
    "2 DDP ranks (gloo)": ["trainer=ddp", "trainer.devices=2"],
}
STREAM_SETTINGS = {
    "planned (threads=null), 0 workers": ["data.stream=true", "data.num_workers=0"],
    "planned, 1 worker": ["data.stream=true", "data.num_workers=1"],
    "planned, 2 workers": ["data.stream=true", "data.num_workers=2"],
    "threads=2, 1 worker": ["data.stream=true", "data.num_workers=1", "threads=2"],
    "threads=2, 2 workers": ["data.stream=true", "data.num_workers=2", "threads=2"],
}
RATE = re.compile(r"epoch (\d+)/\d+: .*?, (\d+) images/s")


def run(experiment: str, epochs: int, extra: list[str], log_dir: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the plan decides unless told
    cmd = [sys.executable, "-m", "facelearn.train", f"+experiment={experiment}", f"trainer.max_epochs={epochs}",
           "benchmark=none", "monitor=null", f"paths.log_dir={log_dir}",
           *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{text[-3000:]}")
    rates = [(int(e), float(r)) for e, r in RATE.findall(text)]
    plan = next((line.split("INFO] - ")[-1] for line in text.splitlines() if "threads: " in line), "")
    return max(rates)[1], plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default=None, help="default: sst_shallow, with --stream conventional_lfw")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--stream", action="store_true", help="streamed JPEGs: worker counts (default experiment "
                                                          "conventional_lfw, which needs ../shared/data/lfw)")
    args = ap.parse_args()
    settings = STREAM_SETTINGS if args.stream else SETTINGS
    args.experiment = args.experiment or ("conventional_lfw" if args.stream else "sst_shallow")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for label, extra in settings.items():
                rate, plan = run(args.experiment, args.epochs, extra, os.path.join(tmp, str(r)))
                rows.setdefault(label, []).append(rate)
                print(f"{label}: {rate:.0f} images/s  [{plan}]", flush=True)
    base = sum(next(iter(rows.values()))) / args.repeats
    print(f"\n{args.experiment}, last of {args.epochs} epochs, {os.cpu_count()} CPUs, {args.repeats} repeat(s)\n")
    print("| setting | images/s | / planned |")
    print("|---|---|---|")
    for label, rates in rows.items():
        mean = sum(rates) / len(rates)
        print(f"| {label} | {' / '.join(f'{x:.0f}' for x in rates)} | {mean / base:.2f} |")


if __name__ == "__main__":
    main()
