"""Copy finished DM-vs-random runs into a results folder (metrics, overrides, mining statistics) and print where.

    python experiments/dm_real/collect.py --out experiments/results/dm_lfw_5seeds/runs logs/multiruns/<time> ...

Each job dir holding ``benchmark_metrics.json`` becomes ``OUT/nr<N_r>__seed<k>/`` with ``benchmark_metrics.json``,
``overrides.yaml`` and ``mining.json`` (last logged ``dm/assigned``, ``dm/short_classes``, the epoch's
``dm/changes``, and the final training loss/accuracy). Tables: ``facelearn-report OUT --reference ...``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import yaml

KEYS = ("dm/assigned", "dm/short_classes", "dm/changes_epoch", "train/loss_epoch", "train/acc_epoch")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    for root in args.runs:
        for metrics in sorted(root.rglob("benchmark_metrics.json")):
            job = metrics.parent
            ov = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
            get = lambda key: next(o.split("=", 1)[1] for o in ov if o.startswith(key + "="))  # noqa: E731
            dest = args.out / f"nr{get('data.sampler.num_random')}__seed{get('seed')}"
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(metrics, dest / "benchmark_metrics.json")
            shutil.copy(job / ".hydra" / "overrides.yaml", dest / "overrides.yaml")
            rows = list(csv.DictReader((job / "csv" / "metrics.csv").read_text().splitlines()))
            last = {k: float(r[k]) for r in rows for k in KEYS if r.get(k)}
            (dest / "mining.json").write_text(json.dumps(last, indent=1))
            print(dest)


if __name__ == "__main__":
    main()
