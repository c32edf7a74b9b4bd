"""Tables from finished runs: ``python -m facelearn.report DIR [DIR ...] [--benchmark NAME] [--metrics ...]``.

Every run directory below the given paths that holds ``benchmark_metrics.json`` (training) or ``evaluation.json``
(``facelearn.evaluate``) is one job; its label is its
Hydra overrides (``.hydra/overrides.yaml``) without ``seed=`` and the ``paths.*`` keys, so runs that differ only by
seed are one row with mean ± std over seeds (the count is shown). Prints a Markdown table; ``--csv`` writes one too.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

import yaml

DEFAULT_METRICS = ("accuracy", "auc", "tar@far=0.1", "tar@far=0.01")
_IGNORED_PREFIXES = ("seed=", "paths.", "hydra.", "trainer.enable_progress_bar", "ckpt_path=")


def find_runs(roots: list[str]) -> list[Path]:
    runs = []
    for root in roots:
        p = Path(root)
        if not p.exists():
            raise FileNotFoundError(f"report: {p} does not exist")
        # training runs write benchmark_metrics.json, evaluations evaluation.json
        found = {f.parent for name in ("benchmark_metrics.json", "evaluation.json") for f in p.rglob(name)}
        # natural order, so multirun jobs 0, 1, 2, ..., 10 keep their launch order
        runs += sorted(found, key=lambda r: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(r))])
    return runs


def runs_without_results(roots: list[str]) -> list[Path]:
    """Job directories (they hold ``.hydra/``) with no metrics file: failed or unfinished jobs of a sweep."""
    out = []
    for root in roots:
        for hydra_dir in Path(root).rglob(".hydra"):
            job = hydra_dir.parent
            if not any((job / n).is_file() for n in ("benchmark_metrics.json", "evaluation.json")):
                out.append(job)
    return sorted(out)


def run_overrides(run: Path) -> list[str]:
    """The run's Hydra overrides without seed and paths (what distinguishes it from its neighbours)."""
    ov_file = run / ".hydra" / "overrides.yaml"
    if not ov_file.is_file():  # results copied out of a run dir keep it beside the metrics
        ov_file = run / "overrides.yaml"
    overrides = yaml.safe_load(ov_file.read_text()) if ov_file.is_file() else []
    return [o for o in overrides if not o.startswith(_IGNORED_PREFIXES)]


def collect(runs: list[Path], benchmark: str | None) -> tuple[dict[str, list[dict[str, float]]], list[str]]:
    """Rows keyed by the overrides that differ between runs; also returns the overrides shared by all."""
    overrides = [run_overrides(r) for r in runs]
    common = [o for o in overrides[0] if all(o in ov for ov in overrides[1:])] if len(runs) > 1 else []
    rows: dict[str, list[dict[str, float]]] = defaultdict(list)
    for run, ov in zip(runs, overrides):
        file = run / "benchmark_metrics.json"
        data = json.loads((file if file.is_file() else run / "evaluation.json").read_text())["metrics"]
        name = benchmark or next(iter(data))
        if name not in data:
            raise KeyError(f"{run}: no benchmark {name!r} (has {sorted(data)})")
        # runs that differ only by seed share a label (and are averaged)
        label = " ".join(o for o in ov if o not in common) or "(common overrides)" if ov else run.name
        rows[label].append({k: (math.nan if v is None else v) for k, v in data[name].items()})
    return rows, common


def summarize(values: list[float]) -> str:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "n/a"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{100 * mean:.2f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def table(rows: dict[str, list[dict[str, float]]], metrics: tuple[str, ...]) -> list[list[str]]:
    out = [["run", "n"] + [f"{m} (%)" for m in metrics]]
    for label, items in rows.items():
        out.append([label, str(len(items))] + [summarize([i.get(m, math.nan) for i in items]) for m in metrics])
    return out


def to_markdown(t: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in t) for i in range(len(t[0]))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(t[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(r) for r in t[1:]])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", help="run or sweep directories")
    ap.add_argument("--benchmark", default=None, help="benchmark name (default: the first in each run)")
    ap.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    ap.add_argument("--csv", default=None, help="also write the table to this CSV file")
    args = ap.parse_args(argv)
    runs = find_runs(args.dirs)
    if not runs:
        sys.exit(f"report: no benchmark_metrics.json or evaluation.json under {args.dirs}")
    rows, common = collect(runs, args.benchmark)
    t = table(rows, tuple(args.metrics))
    print(to_markdown(t))
    if common:
        print(f"\ncommon to all runs: {' '.join(common)}")
    missing = runs_without_results(args.dirs)
    if missing:
        print(f"\n{len(missing)} job(s) without results (failed or unfinished), not in the table:", file=sys.stderr)
        for job in missing:
            print(f"  {job}: {' '.join(run_overrides(job))}", file=sys.stderr)
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            csv.writer(fh).writerows(t)


if __name__ == "__main__":
    main()
