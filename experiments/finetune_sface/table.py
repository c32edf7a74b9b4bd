"""Tables of the SFace fine-tuning runs: every arm's mean ± std over seeds beside the pretrained model before
fine-tuning, each arm's change from it, and SST − conventional paired by seed.

    python experiments/finetune_sface/table.py RUNS PRETRAINED_EVALUATION_JSON > table.md

RUNS holds ``<arm>__seed<k>/benchmark_metrics.json`` (experiments/collect_runs.py ``--keys task_name``).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

# (benchmark key, metric); "lfw" is View-2 without the fine-tuning people: the key of lfw_view2 when these runs were
# made (5fe5d7b and earlier; today lfw_view2, benchmark.lfw_view2.exclude_people)
METRICS = (("lfw_devtest", "accuracy"), ("lfw", "accuracy"), ("lfw", "tar@far=0.01"), ("cfp_fp", "accuracy"),
           ("cfp_fp", "tar@far=0.01"), ("cfp_ff", "accuracy"), ("cfp_ff", "tar@far=0.001"))
LABELS = {"lfw_devtest": "pairsDevTest", "lfw": "View-2 unseen", "cfp_fp": "CFP-FP", "cfp_ff": "CFP-FF"}
ARMS = ("conventional_am", "sst_am", "conventional_arc", "sst_arc", "sst_am_queue0", "bn_stats_only_conventional_am")
PAIRS = (("sst_am", "conventional_am"), ("sst_arc", "conventional_arc"), ("sst_am_queue0", "sst_am"),
         ("sst_am_queue0", "conventional_am"))


def fmt(values: list[float], sign: bool = False) -> str:
    if not values:
        return "not run"
    v = 100 * np.asarray(values, dtype=float)
    mean = f"{v.mean():+.2f}" if sign else f"{v.mean():.2f}"
    return f"{mean} ± {v.std(ddof=1):.2f}" if len(v) > 1 else mean


def value(metrics: dict, bench: str, key: str) -> float | None:
    v = metrics.get(bench, {}).get(key)
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


def main(root: str, pretrained: str) -> None:
    runs: dict[str, dict[int, dict]] = defaultdict(dict)
    for f in sorted(Path(root).glob("*__seed*/benchmark_metrics.json")):
        arm, seed = f.parent.name.rsplit("__seed", 1)
        runs[arm][int(seed)] = json.loads(f.read_text())["metrics"]
    base = json.loads(Path(pretrained).read_text())["metrics"]
    head = [f"{LABELS[b]} {m.replace('accuracy', 'acc').replace('tar@far=', 'TAR@')}" for b, m in METRICS]
    arms = [a for a in ARMS if a in runs] + sorted(set(runs) - set(ARMS))
    print("Mean ± std over seeds (%):\n")
    print("| model | seeds | " + " | ".join(head) + " |")
    print("|---" * (2 + len(head)) + "|")
    cells = [fmt([value(base, b, m)] if value(base, b, m) is not None else []) for b, m in METRICS]
    print("| pretrained SFace, no fine-tuning | - | " + " | ".join(cells) + " |")
    for arm in arms:
        seeds = runs[arm]
        cells = [fmt([value(seeds[s], b, m) for s in seeds if value(seeds[s], b, m) is not None]) for b, m in METRICS]
        print(f"| {arm} | {len(seeds)} | " + " | ".join(cells) + " |")
    print("\nChange from the pretrained model (points; mean ± std over seeds):\n")
    print("| model | seeds | " + " | ".join(head) + " |")
    print("|---" * (2 + len(head)) + "|")
    for arm in arms:
        seeds = runs[arm]
        cells = [fmt([value(seeds[s], b, m) - value(base, b, m) for s in seeds
                      if value(seeds[s], b, m) is not None and value(base, b, m) is not None], sign=True)
                 for b, m in METRICS]
        print(f"| {arm} | {len(seeds)} | " + " | ".join(cells) + " |")
    print("\nPaired by seed (points; mean ± std over the shared seeds):\n")
    print("| difference | seeds | " + " | ".join(head) + " |")
    print("|---" * (2 + len(head)) + "|")
    for a, c in PAIRS:
        if a not in runs or c not in runs:
            continue
        shared = sorted(set(runs[a]) & set(runs[c]))
        cells = [fmt([value(runs[a][s], b, m) - value(runs[c][s], b, m) for s in shared
                      if value(runs[a][s], b, m) is not None and value(runs[c][s], b, m) is not None], sign=True)
                 for b, m in METRICS]
        print(f"| {a} − {c} | {len(shared)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
