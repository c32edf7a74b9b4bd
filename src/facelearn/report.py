"""Tables and ROC plots from finished runs: ``facelearn-report DIR [DIR ...] [--benchmark NAME] [--metrics ...]``.

Every run directory below the given paths that holds ``benchmark_metrics.json`` (training) or ``evaluation.json``
(``facelearn.evaluate``) is one job; its label is its Hydra overrides (``.hydra/overrides.yaml``) without ``seed=``
and the ``paths.*`` keys, and only the overrides that differ between the runs, so runs that differ only by seed are
one row with mean ± std over seeds (the count is shown); an evaluation of a checkpoint is labelled ``evaluation: ...``.
Prints one Markdown table per benchmark (rows = runs, columns = metrics, in % except thresholds; ``--benchmark``:
that one only); ``--csv`` writes the numbers (mean and std in separate columns), ``--roc`` a PNG with the
ROC curve of every run (from the runs' ``roc.json``), ``--markdown`` the table to a file.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from facelearn.tables import ROC_FILE, markdown

DEFAULT_METRICS = ("accuracy", "auc", "tar@far=0.1", "tar@far=0.01")
_IGNORED_PREFIXES = ("seed=", "paths.", "hydra.", "trainer.enable_progress_bar", "ckpt_path=")
_RESULT_FILES = ("benchmark_metrics.json", "evaluation.json")


class ReportError(Exception):
    """A problem with the report's input, said in one line (no traceback)."""


def find_runs(roots: list[str]) -> list[Path]:
    runs = []
    for root in roots:
        p = Path(root)
        if not p.exists():
            raise ReportError(f"{p} does not exist (give run or sweep directories, e.g. logs/multiruns/<time>)")
        found = {f.parent for name in _RESULT_FILES for f in p.rglob(name)}
        # natural order, so multirun jobs 0, 1, 2, ..., 10 keep their launch order
        runs += sorted(found, key=lambda r: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(r))])
    return runs


def runs_without_results(roots: list[str]) -> list[Path]:
    """Job directories (they hold ``.hydra/``) with no metrics file: failed or unfinished jobs of a sweep."""
    out = []
    for root in roots:
        for hydra_dir in Path(root).rglob(".hydra"):
            job = hydra_dir.parent
            if not any((job / n).is_file() for n in _RESULT_FILES):
                out.append(job)
    return sorted(out)


@functools.lru_cache(maxsize=None)  # read once per run: for its label and again for its seed
def _all_overrides(run: Path) -> tuple[str, ...]:
    """The run's Hydra overrides; for a ``facelearn.evaluate`` run, those of the training run whose checkpoint it
    evaluated come first (so evaluations of a sweep's checkpoints are grouped like the sweep)."""
    def read(d: Path) -> list[str]:
        for f in (d / ".hydra" / "overrides.yaml", d / "overrides.yaml"):  # copied results keep it beside
            if f.is_file():
                return list(yaml.safe_load(f.read_text()) or [])
        return []

    own = read(run)
    evaluation = run / "evaluation.json"
    if evaluation.is_file():
        ckpt = json.loads(evaluation.read_text()).get("ckpt_path")
        if ckpt:
            own = read(Path(ckpt).parent.parent) + own  # <run dir>/checkpoints/<file>
    return tuple(own)


def run_overrides(run: Path) -> list[str]:
    """The run's Hydra overrides without seed and paths (what distinguishes it from its neighbours)."""
    return [o for o in _all_overrides(run) if not o.startswith(_IGNORED_PREFIXES)]


def run_seed(run: Path) -> str:
    return next((o.split("=", 1)[1] for o in _all_overrides(run) if o.startswith("seed=")), "")


def load_metrics(run: Path) -> dict[str, dict[str, float]]:
    file = next(run / n for n in _RESULT_FILES if (run / n).is_file())
    try:
        data = json.loads(file.read_text())["metrics"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ReportError(f"{file}: not a facelearn metrics file ({e})") from e
    return {b: {k: (math.nan if v is None else float(v)) for k, v in m.items()} for b, m in data.items()}


def labels(runs: list[Path]) -> tuple[list[str], list[str]]:
    """Each run's row label (the overrides that differ between runs) and the overrides common to all."""
    overrides = [run_overrides(r) for r in runs]
    common = [o for o in overrides[0] if all(o in ov for ov in overrides[1:])] if len(runs) > 1 else []
    out = []
    for run, ov in zip(runs, overrides):
        label = (" ".join(o for o in ov if o not in common) or "(the common overrides only)") if ov else run.name
        # an evaluation of a checkpoint is not the training run it came from, even with the same overrides
        out.append(f"evaluation: {label}" if (run / "evaluation.json").is_file() else label)
    return out, common


def benchmarks_of(runs: list[Path]) -> list[str]:
    """Every benchmark any run reports, in the order they first appear."""
    return list(dict.fromkeys(name for run in runs for name in load_metrics(run)))


def collect(runs: list[Path], benchmark: str | None) -> tuple[dict[str, list[dict[str, float]]], list[str]]:
    """Rows of one benchmark, keyed by the overrides that differ between runs (each item carries its seed under
    ``"_seed"``); also returns the overrides shared by all. ``benchmark`` None: each run's first benchmark."""
    names, common = labels(runs)
    rows: dict[str, list[dict[str, float]]] = defaultdict(list)
    for run, label in zip(runs, names):
        data = load_metrics(run)
        name = benchmark or next(iter(data))
        if name not in data:
            raise ReportError(f"{run}: no benchmark {name!r} (it has {sorted(data)}); choose with --benchmark")
        rows[label].append({**data[name], "_seed": run_seed(run)})
    return rows, common


def collect_by_benchmark(runs: list[Path], benchmark: str | None) -> dict[str, dict[str, list[dict[str, float]]]]:
    """benchmark -> its rows (``collect``), over the runs that report it: one table per benchmark, so rows of
    different benchmarks are never side by side. ``benchmark`` given: that one only (every run must have it)."""
    if benchmark is not None:
        return {benchmark: collect(runs, benchmark)[0]}
    names, _ = labels(runs)
    by_label = dict(zip(runs, names))
    out: dict[str, dict[str, list[dict[str, float]]]] = {}
    for name in benchmarks_of(runs):
        rows: dict[str, list[dict[str, float]]] = defaultdict(list)
        for run in runs:
            data = load_metrics(run)
            if name in data:
                rows[by_label[run]].append({**data[name], "_seed": run_seed(run)})
        out[name] = rows
    return out


def paired(rows: dict[str, list[dict[str, float]]], reference: str, metric: str) -> dict[str, list[float]]:
    """Per row: the differences row − reference of ``metric`` over the seeds both have (same seed = same data
    and initialisation, so the difference removes the seed-to-seed spread the two arms share)."""
    if reference not in rows:
        raise ReportError(f"--reference {reference!r} is not a row; rows: {' | '.join(rows)}")
    ref = {i["_seed"]: i.get(metric, math.nan) for i in rows[reference] if i["_seed"]}
    out = {}
    for label, items in rows.items():
        if label != reference:
            out[label] = [i.get(metric, math.nan) - ref[i["_seed"]] for i in items if i["_seed"] in ref]
    return out


def metric_name(metric: str) -> str:
    """A metric as results name it: ``tar@far=1e-3`` and ``tar@far=0.001`` are both ``tar@far=0.001`` (the rate
    written as Python's ``{:g}``, as the benchmarks write it); the same for ``tpir@fpir=`` (IJB 1:N)."""
    for key in ("tar@far=", "tpir@fpir="):
        head, sep, rate = metric.rpartition(key)
        if sep:
            try:
                return f"{head}{key}{float(rate):g}"
            except ValueError:
                return metric
    return metric


def _available(rows: dict[str, list[dict[str, float]]]) -> set[str]:
    return {k for items in rows.values() for i in items for k in i if not k.startswith("_")}


def check_metrics(rows: dict[str, list[dict[str, float]]], metrics: list[str]) -> None:
    available = sorted(_available(rows))
    unknown = [m for m in metrics if m not in available]
    if unknown:
        raise ReportError(f"--metrics {unknown} not in the runs' results; available: {' '.join(available)}")


def is_percent(metric: str) -> bool:
    """Rates are shown in %; a threshold is a similarity score and stays as it is."""
    return not metric.split("/")[-1].startswith("threshold")


def mean_std(values: list[float]) -> tuple[float, float, int]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan, math.nan, 0
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else math.nan
    return mean, std, len(vals)


def summarize(values: list[float], percent: bool = True) -> str:
    mean, std, n = mean_std(values)
    if n == 0:
        return "n/a"
    f = 100.0 if percent else 1.0
    digits = 2 if percent else 4
    return f"{f * mean:.{digits}f}" if n == 1 else f"{f * mean:.{digits}f} ± {f * std:.{digits}f}"


def table(rows: dict[str, list[dict[str, float]]], metrics: tuple[str, ...],
          reference: str | None = None) -> list[list[str]]:
    out = [["run", "n"] + [f"{m} (%)" if is_percent(m) else m for m in metrics]
           + ([f"Δ {m} vs reference, paired (n)" for m in metrics] if reference else [])]
    diffs = {m: paired(rows, reference, m) for m in metrics} if reference else {}
    for label, items in rows.items():
        row = [label, str(len(items))] + [summarize([i.get(m, math.nan) for i in items], is_percent(m))
                                          for m in metrics]
        for m in metrics if reference else ():
            d = diffs[m].get(label)
            row.append("reference" if label == reference else
                       f"{summarize(d, is_percent(m))} ({len(d)})" if d else "no shared seed")
        out.append(row)
    return out


def numeric_rows(rows: dict[str, list[dict[str, float]]], metrics: tuple[str, ...],
                 reference: str | None = None) -> list[list[object]]:
    """CSV: one row per label, ``<metric>_mean`` / ``<metric>_std`` as numbers (% for rates), seeds counted; with a
    reference also ``<metric>_paired_diff_mean`` / ``_std`` / ``_n``."""
    def num(v: float, f: float) -> object:
        return "" if math.isnan(v) else round(f * v, 6)

    header: list[object] = ["run", "n"]
    for m in metrics:
        unit = "_pct" if is_percent(m) else ""
        header += [f"{m}_mean{unit}", f"{m}_std{unit}"]
        if reference:
            header += [f"{m}_paired_diff_mean{unit}", f"{m}_paired_diff_std{unit}", f"{m}_paired_n"]
    diffs = {m: paired(rows, reference, m) for m in metrics} if reference else {}
    out = [header]
    for label, items in rows.items():
        row: list[object] = [label, len(items)]
        for m in metrics:
            f = 100.0 if is_percent(m) else 1.0
            mean, std, _ = mean_std([i.get(m, math.nan) for i in items])
            row += [num(mean, f), num(std, f)]
            if reference:
                dm, ds, dn = mean_std(diffs[m].get(label, []))
                row += [num(dm, f), num(ds, f), dn]
        out.append(row)
    return out


def plot_roc(runs: list[Path], benchmark: str | None, out: Path) -> int:
    """One PNG with the ROC curve (cosine scores) of every run that saved one; returns how many were drawn."""
    from facelearn.plots import roc_figure
    names, _ = labels(runs)
    curves, groups = {}, {}
    for run, label in zip(runs, names):
        file = run / ROC_FILE
        if not file.is_file():
            continue
        roc = json.loads(file.read_text())["roc"]
        name = benchmark or next(iter(roc), None)
        if name in roc and "cosine" in roc[name]:
            seed = run_seed(run)
            key = f"{label} (seed {seed})" if seed else label
            curves[key], groups[key] = roc[name]["cosine"], label
    if not curves:
        return 0
    fig = roc_figure(curves, f"ROC {benchmark or ''}".strip(), groups)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return len(curves)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="facelearn-report", description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", help="run or sweep directories")
    ap.add_argument("--benchmark", default=None, help="benchmark name (default: the first in each run)")
    ap.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    ap.add_argument("--csv", default=None, help="write the numbers (mean and std columns) to this CSV file")
    ap.add_argument("--markdown", default=None, help="also write the Markdown table to this file")
    ap.add_argument("--roc", default=None, help="write the runs' ROC curves to this PNG")
    ap.add_argument("--reference", default=None,
                    help="a row label (as printed): adds each row's difference to it, paired by seed")
    args = ap.parse_args(argv)
    try:
        runs = find_runs(args.dirs)
        if not runs:
            raise ReportError(f"no {' or '.join(_RESULT_FILES)} under {' '.join(args.dirs)}")
        tables = collect_by_benchmark(runs, args.benchmark)
        _, common = labels(runs)
        args.metrics = [metric_name(m) for m in args.metrics]
        if args.benchmark is not None or len(tables) == 1:
            for rows in tables.values():
                check_metrics(rows, args.metrics)
        else:  # every benchmark of the runs: one without any of the metrics (e.g. identification) is named, not shown
            for name in [n for n, rows in tables.items() if not set(args.metrics) & _available(rows)]:
                has = " ".join(sorted(_available(tables.pop(name))))
                print(f"benchmark {name}: none of --metrics {' '.join(args.metrics)} (it has {has}); see it with "
                      f"--benchmark {name} --metrics ...", file=sys.stderr)
            if not tables:
                raise ReportError(f"no benchmark of these runs has any of --metrics {' '.join(args.metrics)}")
        text = "\n\n".join(f"benchmark: {name}\n\n" + markdown(table(rows, tuple(args.metrics), args.reference))
                           for name, rows in tables.items())
    except ReportError as e:
        sys.exit(f"facelearn-report: {e}")
    print(text)
    if common:
        print(f"\ncommon to all runs: {' '.join(common)}")
    missing = runs_without_results(args.dirs)
    if missing:
        print(f"\n{len(missing)} job(s) without results (failed or unfinished), not in the table:", file=sys.stderr)
        for job in missing:
            print(f"  {job}: {' '.join(run_overrides(job))}", file=sys.stderr)
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.writer(fh)
            for i, (name, rows) in enumerate(tables.items()):  # one header, a benchmark column
                numbers = numeric_rows(rows, tuple(args.metrics), args.reference)
                writer.writerows(([["benchmark", *numbers[0]]] if i == 0 else [])
                                 + [[name, *row] for row in numbers[1:]])
    if args.markdown:
        Path(args.markdown).write_text(text + (f"\n\ncommon to all runs: {' '.join(common)}\n" if common else "\n"))
    if args.roc:
        drawn = plot_roc(runs, args.benchmark, Path(args.roc))
        print(f"\nROC: {drawn} run(s) in {args.roc}" if drawn else
              f"\nROC: no run under {' '.join(args.dirs)} saved {ROC_FILE} (runs before ROC saving, or "
              "identification-only benchmarks); no PNG written", file=sys.stderr if not drawn else sys.stdout)


if __name__ == "__main__":
    main()
