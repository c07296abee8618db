"""Jobs: what `reidprune train` and `reidprune prune` run, combining data, models, compress, train and
evaluate. Above both compress and train (which do not import each other), below the CLI and demo.

    summary = reidprune.jobs.train_experiment(cfg)                 # output_dir/final/, metrics.json
    summary = reidprune.jobs.prune_experiment(cfg)                 # output_dir/model/, metrics.json
    result = reidprune.jobs.run_schedule(model, cfg, loaders, "runs/x")   # prune rounds + fine-tuning
"""

from __future__ import annotations

from reidprune._lazy import lazy_exports

_LAZY = {
    "evaluate_test": "reidprune.jobs.evaluation",
    "job_model": "reidprune.jobs.loading",
    "model_cost": "reidprune.jobs.prune",
    "prune_experiment": "reidprune.jobs.prune",
    "ScheduleResult": "reidprune.jobs.schedule",
    "run_schedule": "reidprune.jobs.schedule",
    "train_experiment": "reidprune.jobs.train",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
