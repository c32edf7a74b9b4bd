"""Result tables and JSON shared by training (benchmark callback), ``facelearn.evaluate`` and ``facelearn.report``."""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

from facelearn.eval.verification import DEFAULT_FARS

ROC_FILE = "roc.json"  # ROC points beside benchmark_metrics.json / evaluation.json (read by facelearn.report)


def markdown(rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table with padded columns; ``rows[0]`` is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows[1:]])


def json_safe(results: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """NaN (an undefined metric, e.g. TAR at a FAR below 1 / negatives) as JSON null."""
    return {b: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}
            for b, m in results.items()}


def write_json(path: str, payload: dict[str, Any]) -> None:
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2)


def format_identification_table(results: dict[str, dict[str, float]]) -> str:
    rows = [[b] + [f"{k}={100 * v:.2f}" for k, v in sorted(m.items())] for b, m in results.items()
            if any("coverage" in k for k in m)]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def format_table(results: dict[str, dict[str, float]], fars: tuple[float, ...] = DEFAULT_FARS) -> str:
    """Plain-text table of the verification results. One scorer (cosine): one row per benchmark with accuracy ±
    std, AUC and TAR@FAR columns. Several scorers: per benchmark, one row per metric and the scorers as columns."""
    verif = {b: m for b, m in results.items() if "accuracy" in m}
    scorers = ["cosine"] + sorted({k.split("/")[0] for m in verif.values() for k in m
                                   if k.endswith("/accuracy")})
    if len(scorers) == 1:
        header = ["benchmark", "accuracy (%)", "AUC (%)"] + [f"TAR@FAR={f:g} (%)" for f in fars]
        rows = [[b, f"{_fmt(m['accuracy'])} ± {_fmt(m['accuracy_std'])}", _fmt(m["auc"])]
                + [_fmt(m.get(f"tar@far={f:g}")) for f in fars] for b, m in verif.items()]
    else:
        header = ["benchmark", "metric (%)"] + scorers
        rows = []
        for b, m in verif.items():
            def get(scorer: str, key: str) -> float | None:
                return m.get(key if scorer == "cosine" else f"{scorer}/{key}")
            rows.append([b, "accuracy"] + [f"{_fmt(get(s, 'accuracy'))} ± {_fmt(get(s, 'accuracy_std'))}"
                                           for s in scorers])
            rows.append([b, "AUC"] + [_fmt(get(s, "auc")) for s in scorers])
            rows += [[b, f"TAR@FAR={f:g}"] + [_fmt(get(s, f"tar@far={f:g}")) for s in scorers] for f in fars]
    text = markdown([header] + rows) if rows else ""
    templates = format_template_table(results)
    return "\n\n".join(t for t in (text, templates) if t)


def format_template_table(results: dict[str, dict[str, float]]) -> str:
    """Template benchmarks (IJB-B / IJB-C: no k-fold accuracy): a row per benchmark and scorer, AUC and TAR at the
    FARs the set reports."""
    sets = {b: m for b, m in results.items() if "auc" in m and "accuracy" not in m}
    if not sets:
        return ""
    fars = sorted({float(k.split("=")[1]) for m in sets.values() for k in m if k.startswith("tar@far=")})
    header = ["template benchmark", "scorer", "AUC (%)"] + [f"TAR@FAR={f:g} (%)" for f in fars]
    rows = []
    for b, m in sets.items():
        for scorer in ["cosine"] + sorted({k.split("/")[0] for k in m if k.endswith("/auc")}):
            pre = "" if scorer == "cosine" else f"{scorer}/"
            rows.append([b, scorer, _fmt(m.get(pre + "auc"))] + [_fmt(m.get(f"{pre}tar@far={f:g}")) for f in fars])
    return "\n\n".join([markdown([header] + rows)] + [t for t in [format_search_table(sets)] if t])


def format_search_table(results: dict[str, dict[str, float]]) -> str:
    """IJB 1:N identification: a row per benchmark and gallery (and their mean), rank-k and TPIR at each FPIR."""
    sets = {b: m for b, m in results.items() if "rank1" in m}
    if not sets:
        return ""
    keys = sorted({k for m in sets.values() for k in m if k.startswith("rank")}, key=lambda k: int(k[4:]))
    keys += sorted({k for m in sets.values() for k in m if k.startswith("tpir@fpir=")},
                   key=lambda k: float(k.split("=")[1]))
    header = ["1:N benchmark", "gallery"] + [k.replace("rank", "rank-") if k.startswith("rank") else
                                             k.replace("tpir@fpir", "TPIR@FPIR") for k in keys]
    header = header[:2] + [h + " (%)" for h in header[2:]]
    rows = []
    for b, m in sets.items():
        galleries = sorted({k.split("/")[0] for k in m if k.endswith("/rank1")})
        for g in galleries + ["mean"]:
            pre = "" if g == "mean" else f"{g}/"
            rows.append([b, g] + [_fmt(m.get(pre + k)) for k in keys])
    return markdown([header] + rows)
