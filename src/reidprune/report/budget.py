"""What a report shows of budget searches (`prune.method: budget`, `reidprune compress`): the frontier
of accuracy against measured latency, searched plans next to the uniform single-method ones (token-*,
head-*, filter-* runs) and the unpruned models, and the per-block allocation of each searched plan
(kept tokens and heads per ViT block, kept widths per ResNet conv), read from the runs' plan.json and
verify.json.

The frontier's latency is measured for the report on the deployment the searches targeted (runtime,
batch, threads of their plan.json, every model timed in the same interleaved rounds:
`budget.latency.measure_side_by_side`) when they all name the same one; otherwise it is the
report's PyTorch batch-1 latency.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reidprune.report.plots import figure_png, plt
from reidprune.report.runs import Entry, Run

PLAN_JSON = "plan.json"
VERIFY_JSON = "verify.json"
SEARCHED = "searched (budget)"
UNPRUNED = "unpruned"


def read_budget(path: Path) -> dict[str, Any] | None:
    """The budget plan in `path` (plan.json, with verify.json under "verify" when the plan lacks it);
    None when the folder holds no budget plan."""
    file = path / PLAN_JSON
    if not file.is_file():
        return None
    try:
        plan = json.loads(file.read_text())
    except ValueError:
        return None
    if not isinstance(plan, dict) or "target" not in plan or "blocks" not in plan:
        return None
    verify = path / VERIFY_JSON
    if "verify" not in plan and verify.is_file():
        with contextlib.suppress(ValueError):  # a broken verify.json: the plan without a measurement
            plan["verify"] = json.loads(verify.read_text())
    return plan


def shared_deployment(runs: Sequence[Run]) -> dict[str, Any] | None:
    """The (runtime, batch, threads) every searched run was planned for, when they agree and it is a
    latency runtime (not "gmacs"); None otherwise."""
    found = {
        json.dumps(run.budget["deployment"], sort_keys=True)
        for run in runs
        if run.budget is not None and run.budget.get("deployment")
    }
    if len(found) != 1:
        return None
    deployment = json.loads(found.pop())
    return deployment if deployment.get("runtime") not in (None, "gmacs") else None


def measure_deployment(
    models: dict[Any, tuple[list[Entry], Any]], deployment: dict[str, Any], min_time: float
) -> str:
    """Time every model on the deployment runtime side by side; sets each entry's deploy_ms and
    returns the note the page shows."""
    from reidprune.budget.latency import measure_side_by_side

    names = {f"m{i}": key for i, key in enumerate(models)}
    measured = measure_side_by_side(
        {name: models[key][1] for name, key in names.items()},
        deployment["runtime"],
        int(deployment.get("batch") or 1),
        deployment.get("threads"),
        min_time=min_time,
    )
    for name, key in names.items():
        for entry in models[key][0]:
            entry.deploy_ms = float(measured[name]["median_ms"])
    setting = measured["setting"]
    rounds = next(iter(measured[n]["rounds"] for n in names))
    return (
        f"{setting['runtime']} {setting['version']}, batch {setting['batch']}, {setting['threads']} threads "
        f"(the searched runs' deployment): median of {rounds} interleaved rounds, measured while this report was built"
    )


def category(entry: Entry, run: Run) -> str:
    """Which curve of the frontier an entry belongs to: searched, a uniform method, or unpruned."""
    if entry is run.main and run.budget is not None:
        return SEARCHED
    if entry.variant in ("unpruned", "final", "best") or (entry.variant == "model" and not run.plan):
        return UNPRUNED
    return run.method or "compressed"


def frontier_figure(runs: Sequence[Run], metric: str, xlabel: str) -> bytes | None:
    """Accuracy (`metric`) against latency (deploy_ms when measured, else latency_ms): one curve per
    category (searched, each uniform method, unpruned), points joined in latency order. None when
    fewer than two points have both numbers or no run is a searched one."""
    if not any(run.budget is not None for run in runs):
        return None
    curves: dict[str, list[tuple[float, float, str]]] = {}
    seen: set[tuple[Any, ...]] = set()
    for run in runs:
        for entry in run.entries:
            x = entry.deploy_ms if entry.deploy_ms is not None else entry.latency_ms
            if x is None or not entry.test or metric not in entry.test:
                continue
            key = (str(entry.model_dir), round(entry.test[metric], 6)) if entry.model_dir else (id(entry),)
            if key in seen:  # a baseline shared by several prune runs is one point
                continue
            seen.add(key)
            label = run.name if entry is run.main or entry.variant != "unpruned" else f"{run.name} (unpruned)"
            curves.setdefault(category(entry, run), []).append((float(x), float(entry.test[metric]), label))
    if sum(len(points) for points in curves.values()) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = plt.get_cmap("tab10")
    order = sorted(curves, key=lambda c: (c != SEARCHED, c != UNPRUNED, c))
    for index, name in enumerate(order):
        points = sorted(curves[name])
        style = {"linewidth": 2.2, "marker": "*", "markersize": 11} if name == SEARCHED else {"marker": "o"}
        colour = "black" if name == UNPRUNED else colours(index % 10)
        ax.plot([p[0] for p in points], [p[1] for p in points], color=colour, label=name, **style)
        for x, y, label in points:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=6, color=colour)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("frontier: searched plans vs uniform single-method plans", fontsize=10)
    return figure_png(fig)


def allocation_figure(plan: dict[str, Any]) -> bytes | None:
    """Per block the fraction of tokens and heads kept (ViT) or of each conv's width (ResNet), with the
    counts written on the bars; None for a plan without blocks."""
    blocks = plan.get("blocks") or []
    if not blocks:
        return None
    if "widths" in blocks[0]:
        series = _width_series(blocks)
        ylabel = "fraction of the conv's filters kept"
    else:
        series = {
            "tokens kept": [(b["kept_tokens"], b["tokens"]) for b in blocks],
            "heads kept": [(b["heads"], _dense_heads(b)) for b in blocks],
        }
        ylabel = "fraction kept"
    fig, ax = plt.subplots(figsize=(max(4.8, 0.7 * len(blocks) * len(series)), 3.4))
    width = 0.8 / len(series)
    positions = np.arange(len(blocks))
    for index, (name, pairs) in enumerate(series.items()):
        xs = positions + (index - (len(series) - 1) / 2) * width
        fractions = [kept / total if total else 0.0 for kept, total in pairs]
        bars = ax.bar(xs, fractions, width, label=name)
        for bar, (kept, total) in zip(bars, pairs, strict=True):
            ax.annotate(
                f"{kept}/{total}" if total else "-",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                textcoords="offset points",
                xytext=(0, 2),
                ha="center",
                fontsize=6,
            )
    ax.set_xticks(positions, [str(b["block"]) for b in blocks])
    ax.set_xlabel("block")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.15)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(_title(plan), fontsize=9)
    return figure_png(fig)


def _dense_heads(block: dict[str, Any]) -> int:
    """The block's head count before the search (plans written before "dense_heads" existed: one more
    than the largest kept head index, a lower bound)."""
    if block.get("dense_heads"):
        return int(block["dense_heads"])
    return max(block.get("kept_heads") or [block["heads"] - 1]) + 1


def _width_series(blocks: list[dict[str, Any]]) -> dict[str, list[tuple[int, int]]]:
    convs = max(len(b["widths"]) for b in blocks)
    return {
        f"conv {i + 1}": [
            (b["widths"][i], b["dense_widths"][i]) if i < len(b["widths"]) else (0, 0) for b in blocks
        ]
        for i in range(convs)
    }


def _title(plan: dict[str, Any]) -> str:
    target = plan["target"]
    deployment = plan.get("deployment") or {}
    what = f"x{target['value']:g}" if target["kind"] == "speedup" else f"{target['value']:g} {target['unit']}"
    where = f"{deployment.get('runtime')}, batch {deployment.get('batch')}"
    text = f"searched for {what} ({where}); predicted x{plan.get('predicted_speedup') or 0:.2f}"
    measured = (plan.get("verify") or {}).get("measured") or {}
    if measured.get("speedup"):
        text += f", measured x{measured['speedup']:.2f}"
    return text


def budget_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per searched run: target, predicted and measured speed-up, shortfall and verdict."""
    rows = []
    for run in runs:
        plan = run.budget
        if plan is None:
            continue
        verify = plan.get("verify") or {}
        deployment = plan.get("deployment") or {}
        rows.append(
            {
                "run": run.name,
                "target": f"{plan['target']['kind']} {plan['target']['value']:g}",
                "deployment": f"{deployment.get('runtime')} b{deployment.get('batch')} t{deployment.get('threads') or '-'}",
                "predicted_speedup": plan.get("predicted_speedup"),
                "measured_speedup": (verify.get("measured") or {}).get("speedup"),
                "shortfall": verify.get("shortfall"),
                "verdict": _verdict(verify),
            }
        )
    return rows


def _verdict(verify: dict[str, Any]) -> str:
    if not verify:
        return "-"
    if verify.get("missed"):
        return "missed"
    return "exceeded" if verify.get("overshot") else "met"
