"""Table of the aligned-vs-centre-crop recipes: mean ± std over seeds per (recipe, crop), and the paired difference
aligned - centre crop (same recipe and seed: same training people and images, same initialisation).

    python experiments/aligned_recipes/table.py experiments/results/aligned_recipes/runs > .../table.md

Reads ``<recipe>_<alignment>__seed<k>/benchmark_metrics.json`` (made by experiments/collect_runs.py with
``--keys experiment alignment``).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

METRICS = (("lfw_devtest", "accuracy"), ("lfw_devtest", "tar@far=0.01"), ("cfp_fp", "accuracy"),
           ("cfp_fp", "tar@far=0.01"))


def fmt(values: list[float]) -> str:
    if not values:
        return "not measured"
    v = 100 * np.asarray(values, dtype=float)
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"


def main(root: str) -> None:
    runs: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    for f in sorted(Path(root).glob("*__seed*/benchmark_metrics.json")):
        arm, seed = f.parent.name.rsplit("__seed", 1)
        recipe, crop = arm.rsplit("_", 1) if not arm.endswith("five_point") else (arm[:-len("_five_point")],
                                                                                   "five_point")
        runs[(recipe, crop)][int(seed)] = json.loads(f.read_text())["metrics"]
    head = [f"{b} {m}" for b, m in METRICS]
    print("| recipe | crop | seeds | " + " | ".join(head) + " |")
    print("|---" * (3 + len(head)) + "|")
    for (recipe, crop), seeds in sorted(runs.items()):
        cells = [fmt([seeds[s][b][m] for s in seeds if seeds[s].get(b, {}).get(m) is not None]) for b, m in METRICS]
        print(f"| {recipe} | {crop} | {len(seeds)} | " + " | ".join(cells) + " |")
    print("\nPaired difference, five-point aligned - centre crop (points; mean ± std over the shared seeds):\n")
    print("| recipe | seeds | " + " | ".join(head) + " |")
    print("|---" * (2 + len(head)) + "|")
    for recipe in sorted({r for r, _ in runs}):
        a, c = runs.get((recipe, "five_point"), {}), runs.get((recipe, "none"), {})
        shared = sorted(set(a) & set(c))
        if not shared:
            continue
        cells = [fmt([a[s][b][m] - c[s][b][m] for s in shared if b in a[s] and b in c[s]]) for b, m in METRICS]
        print(f"| {recipe} | {len(shared)} | " + " | ".join(cells) + " |")
    print("\nAt the end of training (mean over seeds): effective rank of the batch embeddings, mean cosine of "
          "different people in the batch, head accuracy on the training batches:\n")
    print("| recipe | crop | effective rank | negative cosine | train acc (%) |")
    print("|---|---|---|---|---|")
    for (recipe, crop), seeds in sorted(runs.items()):
        diag = [json.loads((Path(root) / f"{recipe}_{crop}__seed{s}" / "training.json").read_text())
                for s in seeds if (Path(root) / f"{recipe}_{crop}__seed{s}" / "training.json").is_file()]
        if diag:
            def mean(k):
                v = [d[k] for d in diag if k in d]
                return f"{np.mean(v):.3g}" if v else "n/a"
            acc = [d["train/acc_epoch"] for d in diag if "train/acc_epoch" in d]
            print(f"| {recipe} | {crop} | {mean('diag/effective_rank')} | {mean('diag/negative_cosine')} | "
                  f"{100 * np.mean(acc):.1f} |")


if __name__ == "__main__":
    main(sys.argv[1])
