"""Copy finished runs' results into experiments/results/sst_real/ and write its tables.

    python experiments/sst_real/collect.py --out experiments/results/sst_real/grid logs/multiruns/<time> ...

For every job directory below the given paths (one holding ``benchmark_metrics.json``): its overrides, final
benchmark metrics and a summary of the representation diagnostics (``diag/*`` from ``csv/metrics.csv``) go to
``OUT/<arm>__seed<k>/``. Then ``OUT/table.md`` gets one row per arm (the overrides without ``seed``): mean ± std
over seeds of pairsDevTest and CFP-FP accuracy and TAR@FAR=1e-2, the diagnostics at the end of training, and,
for arms that share seeds with the reference arm (``--reference``), the paired difference per seed (mean ± std).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

import yaml

BENCH = (("lfw_devtest", "accuracy"), ("lfw_devtest", "tar@far=0.01"), ("cfp_fp", "accuracy"),
         ("cfp_fp", "tar@far=0.01"), ("cfp_ff", "accuracy"))


def arm_and_seed(overrides: list[str]) -> tuple[str, int]:
    seed = next((int(o.split("=", 1)[1]) for o in overrides if o.startswith("seed=")), 42)
    arm = " ".join(o for o in overrides if not o.startswith(("seed=", "paths.", "hydra.")))
    return arm, seed


def diagnostics(metrics_csv: Path) -> dict[str, float]:
    rows = [r for r in csv.DictReader(metrics_csv.open()) if r.get("diag/effective_rank")]
    if not rows:
        return {}
    tail = rows[-5:]
    out = {}
    for key in ("diag/effective_rank", "diag/negative_cosine", "diag/probe_gallery_cosine"):
        vals = [float(r[key]) for r in tail if r.get(key)]
        if vals:
            out[key.split("/")[1] + "_end"] = statistics.fmean(vals)
    out["effective_rank_min"] = min(float(r["diag/effective_rank"]) for r in rows)
    early = [float(r["diag/probe_gallery_cosine"]) for r in rows[1:4] if r.get("diag/probe_gallery_cosine")]
    if early:
        out["probe_gallery_cosine_early"] = statistics.fmean(early)
    return out


def copy_runs(roots: list[Path], out: Path) -> None:
    for root in roots:
        for metrics in sorted(root.rglob("benchmark_metrics.json")):
            job = metrics.parent
            overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
            arm, seed = arm_and_seed(overrides)
            name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", arm.replace("+experiment=", "")).strip("_")
            dest = out / f"{name}__seed{seed}"
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(metrics, dest / "benchmark_metrics.json")
            shutil.copy(job / ".hydra" / "overrides.yaml", dest / "overrides.yaml")
            ff = job / "cfp_ff" / "evaluation.json"  # experiments/sst_real/evaluate_cfp_ff.sh
            if ff.is_file():
                shutil.copy(ff, dest / "cfp_ff_evaluation.json")
            if (job / "csv" / "metrics.csv").is_file():
                (dest / "diagnostics.json").write_text(json.dumps(diagnostics(job / "csv" / "metrics.csv"), indent=1))


def mean_std(vals: list[float]) -> str:
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.fmean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def table(out: Path, reference: str | None) -> str:
    arms: dict[str, dict[int, dict]] = defaultdict(dict)
    for d in sorted(out.glob("*__seed*")):
        overrides = yaml.safe_load((d / "overrides.yaml").read_text())
        arm, seed = arm_and_seed(overrides)
        m = json.loads((d / "benchmark_metrics.json").read_text())["metrics"]
        if (d / "cfp_ff_evaluation.json").is_file():
            m.update(json.loads((d / "cfp_ff_evaluation.json").read_text())["metrics"])
        diag = json.loads((d / "diagnostics.json").read_text()) if (d / "diagnostics.json").is_file() else {}
        arms[arm][seed] = {"m": m, "diag": diag}
    ref = arms.get(reference or "", {})
    head = ["arm", "seeds", *(f"{b} {k}" for b, k in BENCH), "Δ LFW acc vs ref (paired)", "Δ CFP-FP acc vs ref (paired)", "Δ CFP-FF acc vs ref (paired)",
            "eff. rank end (min)", "neg. cos end", "probe-gallery cos early → end"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, runs in sorted(arms.items()):
        seeds = sorted(runs)
        cells = [arm, ",".join(map(str, seeds))]
        for b, k in BENCH:
            cells.append(mean_std([100 * runs[s]["m"][b][k] for s in seeds if b in runs[s]["m"]]))
        for b in ("lfw_devtest", "cfp_fp", "cfp_ff"):
            shared = [s for s in seeds if s in ref and arm != reference and b in runs[s]["m"] and b in ref[s]["m"]]
            diffs = [100 * (runs[s]["m"][b]["accuracy"] - ref[s]["m"][b]["accuracy"]) for s in shared]
            cells.append(mean_std(diffs) + (f" (n={len(diffs)})" if diffs else ""))
        d = [runs[s]["diag"] for s in seeds]
        er = [x["effective_rank_end"] for x in d if "effective_rank_end" in x]
        ermin = [x["effective_rank_min"] for x in d if "effective_rank_min" in x]
        nc = [x["negative_cosine_end"] for x in d if "negative_cosine_end" in x]
        pe = [x["probe_gallery_cosine_early"] for x in d if "probe_gallery_cosine_early" in x]
        pn = [x["probe_gallery_cosine_end"] for x in d if "probe_gallery_cosine_end" in x]
        cells.append(f"{statistics.fmean(er):.1f} ({min(ermin):.1f})" if er else "n/a")
        cells.append(f"{statistics.fmean(nc):.2f}" if nc else "n/a")
        cells.append(f"{statistics.fmean(pe):.2f} → {statistics.fmean(pn):.2f}" if pe and pn else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", type=Path, help="multirun or run directories to copy from")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reference", default="+experiment=conventional_lfw_shallow",
                    help="arm the paired differences are taken against")
    args = ap.parse_args()
    for r in args.runs:
        if not r.exists():
            raise SystemExit(f"collect: {r} does not exist")
    args.out.mkdir(parents=True, exist_ok=True)
    copy_runs(args.runs, args.out)
    text = table(args.out, args.reference)
    (args.out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
