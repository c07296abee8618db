"""Compression: token reduction, head pruning and filter pruning, each one call returning a new model.

    student, plan = reidprune.compress.prune_tokens(model, method="amg", rate=0.4, data=calib)
    student, plan = reidprune.compress.prune_heads(student, method="entropy", rate=0.25, data=calib)
    small, plan = reidprune.compress.prune_filters(resnet, method="hfp", rate=0.5)
    small, plan = reidprune.compress.to_budget(model, calib, target_gmacs=2.5)  # searched joint plan

Prune / fine-tune schedules and the prune job combine these with training: `reidprune.jobs`.
Entry points are imported lazily, so that `reidprune.config` (which imports `compress.config`)
stays free of torch.
"""

from __future__ import annotations

from reidprune._lazy import lazy_exports
from reidprune.compress.config import PruneConfig
from reidprune.models.plan import CompressionPlan

_LAZY = {
    "prune_tokens": "reidprune.compress.tokens",
    "attach_reducers": "reidprune.compress.tokens",
    "prune_heads": "reidprune.compress.heads",
    "split_rounds": "reidprune.compress.heads",
    "prune_filters": "reidprune.compress.filters",
    "filter_pruning_callback": "reidprune.compress.filters",
    "extract_pruned": "reidprune.compress.filters",
    "calibrate": "reidprune.compress.calibration",
    # deprecated (one release): moved to reidprune.jobs, above compress and train
    "run_schedule": "reidprune.jobs.schedule",
    "prune_experiment": "reidprune.jobs.prune",
    # the budget search (issue 15's entry point) lives above compress, in reidprune.budget
    "to_budget": "reidprune.budget.api",
}

__all__ = ["CompressionPlan", "PruneConfig", *sorted(_LAZY)]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
