"""Figures (matplotlib, headless): ROC curves for the TensorBoard logger and ``facelearn.report``."""

from __future__ import annotations

from typing import Any, Mapping


def roc_figure(curves: Mapping[str, Mapping[str, Any]], title: str = "ROC",
               groups: Mapping[str, str] | None = None) -> Any:
    """One axis with a TAR-vs-FAR curve per entry (``{label: {"far": [...], "tar": [...]}}``), FAR on a log scale
    as face-verification papers plot it (FAR = 0 points are left out of the log axis). ``groups``: label -> arm;
    the curves of one arm (e.g. its seeds) share a colour and differ in line style."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 5.4), dpi=100)
    arms = list(dict.fromkeys((groups or {}).get(label, label) for label in curves))
    styles, seen = ["-", "--", ":", "-."], {}
    for label, c in curves.items():
        arm = (groups or {}).get(label, label)
        k = seen[arm] = seen.get(arm, -1) + 1
        pts = [(f, t) for f, t in zip(c["far"], c["tar"]) if f > 0]
        if pts:
            far, tar = zip(*pts)
            ax.plot(far, tar, label=label, linewidth=1.4, color=f"C{arms.index(arm) % 10}",
                    linestyle=styles[k % len(styles)])
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("true accept rate (TAR)")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    if curves:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
