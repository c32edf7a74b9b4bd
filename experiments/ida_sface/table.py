"""Markdown tables of experiments/ida_sface/sweep.py outputs: per benchmark, cosine and every IDA-R / IDA-L setting
(accuracy over the protocol's 10 folds, TAR@FAR, and the per-fold paired accuracy difference to cosine).

    python experiments/ida_sface/table.py SWEEP.json [SWEEP.json ...] > table.md
"""

from __future__ import annotations

import json
import sys


def pct(v) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.2f}"


def row(label: str, m: dict, fars: list[str]) -> str:
    diff = m.get("paired_accuracy_diff")
    paired = "—" if diff is None else f"{100 * diff:+.2f} ± {100 * m['paired_accuracy_diff_std']:.2f}"
    return (f"| {label} | {pct(m['accuracy'])} ± {pct(m['accuracy_std'])} | {paired} | "
            + " | ".join(pct(m.get(f)) for f in fars) + " |")


def main(paths: list[str]) -> None:
    for path in paths:
        out = json.load(open(path))
        print(f"## {path}\n\n{len(out['anchors']) if isinstance(out['anchors'], list) else out['anchors']} anchors "
              f"({out['anchor_source']}); overrides: `{' '.join(out['overrides'])}`\n")
        for name, res in out["benchmarks"].items():
            fars = [k for k in res["cosine"] if k.startswith("tar@far=")]
            print(f"### {name}: {res['pairs']} pairs, {res['negatives']} negatives (TAR@FAR below 1/negatives is "
                  "n/a)\n")
            print("| scorer | accuracy % (± fold std) | paired diff to cosine (points, ± fold std) | "
                  + " | ".join(f.replace("tar@far=", "TAR@FAR=") for f in fars) + " |")
            print("|---" * (3 + len(fars)) + "|")
            print(row("cosine", res["cosine"], fars))
            for scorer in ("ida_r", "ida_l"):
                if scorer not in res:
                    continue
                tag = "IDA-R" if scorer == "ida_r" else "IDA-L"
                for k, m in res[scorer]["k"].items():
                    print(row(f"{tag} k={k}, τ=1", m, fars))
                for t, m in res[scorer]["tau"].items():
                    print(row(f"{tag} k=10, τ={t}", m, fars))
                for n, m in res[scorer]["size"].items():
                    print(row(f"{tag} k=10, τ=1, {n} anchors", m, fars))
            print()


if __name__ == "__main__":
    main(sys.argv[1:])
