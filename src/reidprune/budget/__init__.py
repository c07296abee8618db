"""Compression to a budget. Part 1: a latency model measured on the deployment runtime.

    predict_latency(model, runtime="onnxruntime", batch=1, threads=2)["predicted_ms"]
    measure_latency(model, runtime="onnxruntime", batch=1, threads=2)["median_ms"]

`budget` sits above models / measure / export (it imports them; nothing below imports it).
"""

from reidprune.budget.cache import LatencyCache, Setting, default_cache_dir
from reidprune.budget.latency import Grid, LatencyModel, measure_latency, predict_latency, vit_geometry
from reidprune.budget.runtimes import RUNTIMES

__all__ = [
    "RUNTIMES",
    "Grid",
    "LatencyCache",
    "LatencyModel",
    "Setting",
    "default_cache_dir",
    "measure_latency",
    "predict_latency",
    "vit_geometry",
]
