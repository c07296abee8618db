"""Verify a budget plan: measure the compressed model side by side with the original on the target
runtime and compare with the target and the prediction.

    report = verify_budget(original, small, plan, onnx_path=out / "model.onnx")
    report["measured"]["speedup"], report["missed"], report["correction"]

The compressed model is exported with `reidprune.export.export_onnx` (checked against PyTorch) to
`onnx_path`; on ONNX Runtime both graphs are timed in the same interleaved rounds
(`budget.latency.measure_side_by_side`, `measure.timing`), on PyTorch their deploy forms. GMACs
targets (and runtime "gmacs") are verified on the counted GMACs. `missed` is True when the measured
result falls short of the target by more than `tolerance` (relative); `overshot` when a measured
latency or speed-up beats it by more than `tolerance` (the plan gave up accuracy the budget did
not ask for: the cost model over-priced what it removed); `correction` (measured / predicted cost,
or of the speed-up's inverse) is what `to_budget(correction=)` re-plans with, in either case.
With a latency cost model the load meter of its tables is timed in the same rounds: `measured.load`
says how much busier the machine is than when the tables were timed, `measured.normalised_ms` the
two models' times at the tables' load (what the predicted milliseconds are comparable with).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from reidprune.errors import CompressionError

DEFAULT_TOLERANCE = 0.07


def verify_budget(
    original: nn.Module,
    small: nn.Module,
    plan: dict[str, Any],
    *,
    onnx_path: str | Path | None = None,
    min_time: float = 2.0,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """Target vs predicted vs measured for `small` (the plan's model) against `original`."""
    from reidprune.budget.api import GMACS_RUNTIME
    from reidprune.export.onnx import export_onnx
    from reidprune.measure.flops import count_gmacs

    if not 0 <= tolerance < 1:
        raise CompressionError(f"tolerance={tolerance!r}: expected a fraction in [0, 1)")
    target, deployment = plan["target"], plan["deployment"]
    runtime = deployment["runtime"]
    gmacs = {
        "original": float(count_gmacs(original)["gmacs"]),
        "compressed": float(count_gmacs(small)["gmacs"]),
    }
    report: dict[str, Any] = {
        "target": {k: target[k] for k in ("kind", "value", "unit")},
        "tolerance": tolerance,
        "predicted": {
            "original": plan["dense_cost"],
            "compressed": plan["predicted_cost"],
            "speedup": plan["predicted_speedup"],
            "unit": target["unit"],
        },
        "gmacs": gmacs,
    }
    if runtime == GMACS_RUNTIME or target["unit"] == "GMACs":
        if onnx_path is not None:
            export_onnx(small, onnx_path)
        measured = {"original": gmacs["original"], "compressed": gmacs["compressed"], "unit": "GMACs"}
    else:
        reference = plan.get("cost_model", {}).get("meter_reference_ms")
        times = _measure(original, small, deployment, onnx_path, min_time, reference)
        measured = {
            "original": times["original"]["median_ms"],
            "compressed": times["compressed"]["median_ms"],
            "unit": "ms",
            "p90_ms": {k: times[k]["p90_ms"] for k in ("original", "compressed")},
            "rounds": times["compressed"]["rounds"],
            "setting": times["setting"],
        }
        if "load" in times:  # the same figures at the load the latency tables are expressed in
            measured["load"] = times["load"]
            measured["normalised_ms"] = {k: times[k]["normalised_ms"] for k in ("original", "compressed")}
    measured["speedup"] = measured["original"] / measured["compressed"]
    report["measured"] = measured
    if onnx_path is not None:
        report["onnx"] = str(onnx_path)
    report |= _against_target(target, report["predicted"], measured, tolerance)
    return report


def _measure(
    original: nn.Module,
    small: nn.Module,
    deployment: dict[str, Any],
    onnx_path: str | Path | None,
    min_time: float,
    meter_reference_ms: float | None = None,
) -> dict[str, Any]:
    from reidprune.budget.latency import measure_side_by_side

    graphs = {"compressed": onnx_path} if onnx_path is not None else None
    try:
        return measure_side_by_side(
            {"original": original, "compressed": small},
            deployment["runtime"],
            deployment["batch"],
            deployment["threads"],
            min_time=min_time,
            graphs=graphs,
            meter_reference_ms=meter_reference_ms,
        )
    except ValueError as err:
        raise CompressionError(f"verifying on runtime '{deployment['runtime']}': {err}") from None


def _against_target(
    target: dict[str, Any], predicted: dict[str, Any], measured: dict[str, Any], tolerance: float
) -> dict[str, Any]:
    """shortfall (relative, > 0 = worse than the target), missed, and the re-planning correction."""
    kind, value = target["kind"], float(target["value"])
    if kind == "speedup":
        shortfall = 1.0 - measured["speedup"] / value
        # the cost model over-promised the ratio by this much: tighten the next target by it
        correction = predicted["speedup"] / measured["speedup"] if measured["speedup"] else 1.0
    elif kind == "latency_ms":
        shortfall = measured["compressed"] / value - 1.0
        correction = measured["compressed"] / predicted["compressed"] if predicted["compressed"] else 1.0
    else:  # gmacs: counted exactly, the prediction is the count
        shortfall = measured["compressed"] / value - 1.0 if measured["unit"] == "GMACs" else 0.0
        correction = 1.0
    return {
        "shortfall": shortfall,
        "missed": shortfall > tolerance,
        # a counted GMACs plan stops at the first step under the target: no overshoot to speak of
        "overshot": kind != "gmacs" and shortfall < -tolerance,
        "correction": min(max(correction, 0.1), 10.0),
    }


def summary_line(report: dict[str, Any]) -> str:
    """One line: target, predicted and measured, and whether the target was missed."""
    target, predicted, measured = report["target"], report["predicted"], report["measured"]
    if target["kind"] == "speedup":
        what = (
            f"target x{target['value']:g}, predicted x{predicted['speedup']:.3f}, "
            f"measured x{measured['speedup']:.3f}"
        )
    else:
        unit = measured["unit"]
        what = (
            f"target {target['value']:g} {target['unit']}, predicted {predicted['compressed']:.4g} "
            f"{predicted['unit']}, measured {measured['compressed']:.4g} {unit} (x{measured['speedup']:.3f})"
        )
    if report["missed"]:
        return (
            f"MISSED the target by {100 * report['shortfall']:.1f} % (tolerance "
            f"{100 * report['tolerance']:.0f} %): {what}"
        )
    if report.get("overshot"):
        return (
            f"target EXCEEDED by {-100 * report['shortfall']:.1f} % (tolerance "
            f"{100 * report['tolerance']:.0f} %; the plan removed more than the budget needed, "
            f"re-planning (--replan, prune.options.replan) aims closer): {what}"
        )
    return f"target met within {100 * report['tolerance']:.0f} %: {what}"


def keeps_replanned(first_missed: bool, second_missed: bool) -> bool:
    """Whether a re-planned model replaces the first one: unless it falls short of the target while
    the first did not (too fast beats too slow)."""
    return not (second_missed and not first_missed)


def search_with_replan(
    search: Callable[[float], tuple[nn.Module, dict[str, Any]]],
    measure: Callable[[nn.Module, dict[str, Any]], dict[str, Any]],
    log: Callable[[str], Any] = print,
) -> tuple[nn.Module, dict[str, Any]]:
    """Search, measure the searched model, and when it misses or exceeds the target by more than the
    tolerance, search once more aiming at target / correction; before any fine-tuning, since a
    model's speed does not depend on its weights (one fine-tuning whatever happens).

    search(correction) -> (model, plan); measure(model, plan) -> a `verify_budget` report. The
    re-planned model is kept unless it misses the target while the first one did not (too fast
    beats too slow). The kept plan gets "replan": both reports and which one was kept."""
    small, plan = search(1.0)
    first = measure(small, plan)
    log(f"searched model, before fine-tuning: {summary_line(first)}")
    if not (first["missed"] or first.get("overshot")):
        plan["replan"] = {"first": first, "replanned": False}
        return small, plan
    log(f"re-planning once with the measured correction x{first['correction']:.3f}")
    again, again_plan = search(first["correction"])
    second = measure(again, again_plan)
    log(f"re-planned model, before fine-tuning: {summary_line(second)}")
    keep_first = not keeps_replanned(first["missed"], second["missed"])
    if keep_first:
        log("the re-planned model misses the target: keeping the first one")
    else:
        small, plan = again, again_plan
    plan["replan"] = {
        "first": first,
        "second": second,
        "replanned": True,
        "kept": "first" if keep_first else "second",
    }
    return small, plan
