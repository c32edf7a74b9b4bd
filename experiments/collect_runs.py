"""Copy finished runs into a results folder: metrics, overrides and the last training numbers of each run.

    python experiments/collect_runs.py RUN_OR_SWEEP_DIR ... --out experiments/results/partial_fc/runs \
        --keys classifier.sample_rate trainer

Each run dir holding ``benchmark_metrics.json`` becomes ``OUT/<key values>__seed<k>/`` (``--keys``: the overrides
whose values name the arm; a key the run does not set reads ``default``) with ``benchmark_metrics.json``,
``overrides.yaml`` and ``training.json`` (last epoch's loss, head accuracy and images/s and the last representation diagnostics, from
``csv/metrics.csv``).
Tables: ``facelearn-report OUT [--reference LABEL]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import yaml

KEYS = ("train/loss_epoch", "train/acc_epoch", "train/images_per_sec", "epoch", "diag/effective_rank",
        "diag/negative_cosine", "diag/probe_gallery_cosine")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--keys", nargs="+", default=[])
    args = ap.parse_args()
    for root in args.runs:
        for metrics in sorted(root.rglob("benchmark_metrics.json")):
            job = metrics.parent
            overrides = job / ".hydra" / "overrides.yaml"
            values = dict(o.lstrip("+").split("=", 1) for o in yaml.safe_load(overrides.read_text()) or [])
            name = "_".join(values.get(k, "default").replace("/", "-") for k in args.keys) or "run"
            dest = args.out / f"{name}__seed{values.get('seed', 'default')}"
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(metrics, dest / "benchmark_metrics.json")
            shutil.copy(overrides, dest / "overrides.yaml")
            rows = list(csv.DictReader((job / "csv" / "metrics.csv").read_text().splitlines()))
            last = {k: float(r[k]) for r in rows for k in KEYS if r.get(k)}
            (dest / "training.json").write_text(json.dumps(last, indent=1) + "\n")
            print(dest)


if __name__ == "__main__":
    main()
