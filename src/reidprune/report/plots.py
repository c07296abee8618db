"""Accuracy-versus-cost plots (matplotlib, Agg backend, no display), returned as PNG bytes.

Each run is one colour; a prune run is drawn as an arrow from its unpruned to its pruned model,
so the cost saved and the accuracy kept read off at a glance.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: never try to open a window (CI, servers, report builds)

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from reidprune.report.runs import Run

METRIC_LABELS = {
    "mAP": "mAP (%)",
    "rank1": "rank-1 (%)",
    "top1": "top-1 (%)",
    "top5": "top-5 (%)",
}


def figure_png(fig: Any, dpi: int = 110, tight: bool = True) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return buffer.getvalue()


def accuracy_metrics(runs: Sequence[Run]) -> list[str]:
    """The accuracy metrics every plotted entry can have: mAP and rank-1 (re-ID) or top-1 (classification)."""
    names: list[str] = []
    for run in runs:
        for entry in run.entries:
            for key in entry.test or {}:
                if key in METRIC_LABELS and key not in names:
                    names.append(key)
    order = list(METRIC_LABELS)
    return sorted(names, key=order.index)[:2]


def accuracy_vs_cost(runs: Sequence[Run], cost: str, xlabel: str, scale: float = 1.0) -> bytes | None:
    """One panel per accuracy metric: accuracy (y) against `cost` (x) for every entry that has both.

    cost: "gmacs" (from the entry's cost) or "latency_ms" (measured for the report), times `scale`
    (e.g. 1000 to plot GMACs as MMACs).
    Returns PNG bytes, or None when no entry has both numbers.
    """
    metrics = accuracy_metrics(runs)
    points = [
        (run_index, entry)
        for run_index, run in enumerate(runs)
        for entry in run.entries
        if entry.test and _x(entry, cost, scale) is not None and any(m in entry.test for m in metrics)
    ]
    if not metrics or not points:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, metric in zip(axes[0], metrics, strict=True):
        for run_index, run in enumerate(runs):
            colour = colours(run_index % 10)
            drawn = [
                (e, _x(e, cost, scale), e.test[metric])
                for e in run.entries
                if e.test and metric in e.test and _x(e, cost, scale) is not None
            ]
            for entry, x, y in drawn:
                marker = "o" if entry.variant in ("unpruned", "final", "model") else "s"
                ax.scatter([x], [y], color=colour, marker=marker, s=46, zorder=3)
                ax.annotate(
                    entry.variant, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7, color=colour
                )
            if run.kind == "prune" and len(drawn) == 2:
                (_, x0, y0), (_, x1, y1) = drawn
                ax.annotate(
                    "",
                    xy=(x1, y1),
                    xytext=(x0, y0),
                    arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.2},
                )
            ax.plot([], [], color=colour, marker="o", linestyle="-", label=run.name)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 4), useOffset=False)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(f"accuracy vs {xlabel}", fontsize=10)
    return figure_png(fig)


def _x(entry: Any, cost: str, scale: float = 1.0) -> float | None:
    value = entry.latency_ms if cost == "latency_ms" else entry.cost.get(cost)
    return float(value) * scale if value is not None else None
