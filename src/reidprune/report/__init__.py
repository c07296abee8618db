"""The HTML report: configuration, metrics table, accuracy-vs-cost plots, ranked retrieval lists and
kept-token maps of one or more runs, in one self-contained page.

    build_report(["runs/dense", "runs/amg40"], "report.html")          # or `reidprune report ...`
"""

from __future__ import annotations

from reidprune._lazy import lazy_exports

_EXPORTS = {
    "build_report": "reidprune.report.build",
    "load_run": "reidprune.report.runs",
    "Run": "reidprune.report.runs",
    "Entry": "reidprune.report.runs",
    "token_states": "reidprune.report.tokens",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
