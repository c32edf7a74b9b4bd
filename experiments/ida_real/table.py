"""IDA vs cosine table from ``facelearn.evaluate`` runs of training checkpoints (experiments/ida_real).

    python experiments/ida_real/table.py logs/evaluate/runs > table.md

Rows: (training arm, benchmark, anchors); columns: cosine, IDA-R, IDA-L — mean ± std over the arm's seeds, and
in brackets the paired difference scorer − cosine on the same checkpoint (mean ± std over seeds). In %.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from facelearn.report import _all_overrides

METRICS = ("accuracy", "tar@far=0.01", "tar@far=0.001")
SKIP = ("seed=", "benchmark=", "paths.", "hydra.", "ckpt_path=", "fars=", "ida=", "output_file=", "ida.")


def fmt(vals: list[float], signed: bool = False) -> str:
    if not vals:
        return "n/a"
    m = f"{statistics.fmean(vals):{'+' if signed else ''}.2f}"
    return m if len(vals) == 1 else f"{m} ± {statistics.stdev(vals):.2f}"


def main(roots: list[str]) -> None:
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for f in sorted(p for r in roots for p in Path(r).rglob("evaluation.json")):
        run = f.parent
        ov = _all_overrides(run)
        arm = " ".join(o for o in ov if not o.startswith(SKIP))
        anchors = next((o.split("=", 1)[1] for o in ov if o.startswith("ida.ida_r.anchors=")), "real-db")
        for bench, m in json.loads(f.read_text())["metrics"].items():
            cells[(arm, bench, anchors)].append(m)
    print("| training arm | benchmark | anchors | metric | n | cosine | IDA-R (Δ paired) | IDA-L (Δ paired) |")
    print("|---|---|---|---|---|---|---|---|")
    for (arm, bench, anchors), runs in sorted(cells.items()):
        for metric in METRICS:
            cos = [100 * r[metric] for r in runs if r.get(metric) is not None]
            if not cos:
                continue
            row = [arm, bench, anchors, metric, str(len(runs)), fmt(cos)]
            for scorer in ("ida_r", "ida_l"):
                pairs = [(100 * r[f"{scorer}/{metric}"], 100 * r[metric]) for r in runs
                         if r.get(f"{scorer}/{metric}") is not None and r.get(metric) is not None]
                row.append(f"{fmt([a for a, _ in pairs])} ({fmt([a - b for a, b in pairs], True)})" if pairs else "—")
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
