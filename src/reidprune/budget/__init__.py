"""Compress to a budget: search per-block token, head and filter counts under a cost target.

    small, plan = reidprune.compress.to_budget(model, calib_loader, target_gmacs=2.5)
    predict_latency(model, runtime="onnxruntime", batch=1, threads=2)["predicted_ms"]
    measure_latency(model, runtime="onnxruntime", batch=1, threads=2)["median_ms"]

Modules: `sketch` (what a plan changes, the cost model's input), `cost` (the `CostModel`
protocol, the GMACs cost model and the runtime latency cost model), `candidates` (the search
space: units and their importance, and applying a plan to a model), `search` (the greedy search),
`proxy` (the distillation proxy that compares plans), `api` (`to_budget`); the latency model:
`probes` (isolated pieces timed on a runtime), `grid` (monotone interpolation), `cache`
(per-setting JSON tables), `runtimes`, `latency`, `calibration` (fitting its block costs to whole
measurements), `latency_cost` (its tables as the search's cost model); `verify` (the result measured against the
original and the target, and `search_with_replan`: one re-plan from a measurement before fine-tuning).
docs/budget_search.md describes the algorithm.

`budget` sits above models / measure / export / compress (it imports them; nothing below imports it).
"""

from reidprune.budget.cache import LatencyCache, Setting, default_cache_dir
from reidprune.budget.latency import (
    Grid,
    LatencyModel,
    measure_latency,
    measure_side_by_side,
    predict_latency,
    vit_geometry,
)
from reidprune.budget.latency_cost import LatencyCostModel
from reidprune.budget.runtimes import RUNTIMES
from reidprune.budget.verify import search_with_replan, verify_budget

__all__ = [
    "RUNTIMES",
    "Grid",
    "LatencyCache",
    "LatencyCostModel",
    "LatencyModel",
    "Setting",
    "default_cache_dir",
    "measure_latency",
    "measure_side_by_side",
    "predict_latency",
    "search_with_replan",
    "verify_budget",
    "vit_geometry",
]
