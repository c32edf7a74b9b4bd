"""Copy the aligned-recipes runs into a results folder: metrics, overrides, and the last training numbers and
representation diagnostics of each run (from csv/metrics.csv).

    python experiments/aligned_recipes/collect.py logs/multiruns --out experiments/results/aligned_recipes/runs

Each job becomes ``OUT/<experiment>_<alignment>__seed<k>/``; ``table.py OUT`` prints the tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import yaml

LAST = ("train/loss_epoch", "train/acc_epoch", "train/images_per_sec", "diag/effective_rank",
        "diag/negative_cosine", "diag/probe_gallery_cosine")


def last_values(metrics_csv: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            for k in LAST:
                if row.get(k):
                    out[k] = float(row[k])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    for root in args.runs:
        for metrics in sorted(root.rglob("benchmark_metrics.json")):
            job = metrics.parent
            overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
            values = dict(o.lstrip("+").split("=", 1) for o in overrides)
            dest = args.out / f"{values['experiment']}_{values.get('alignment', 'none')}__seed{values['seed']}"
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(metrics, dest / "benchmark_metrics.json")
            shutil.copy(job / ".hydra" / "overrides.yaml", dest / "overrides.yaml")
            (dest / "training.json").write_text(json.dumps(last_values(job / "csv" / "metrics.csv"), indent=2))
            print(dest)


if __name__ == "__main__":
    main()
