"""The HTML report: configuration, metrics table, accuracy-vs-cost plots, ranked retrieval lists and
kept-token maps of one or more runs, in one self-contained page.

    build_report(["runs/dense", "runs/amg40"], "report.html")          # or `reidprune report ...`
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_report": "reidprune.report.build",
    "load_run": "reidprune.report.runs",
    "Run": "reidprune.report.runs",
    "Entry": "reidprune.report.runs",
    "token_states": "reidprune.report.tokens",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'reidprune.report' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
