"""Training: losses, the engine (`fit`), optimisers and per-step schedules, exact-resume checkpoints.

    from reidprune.train import fit
    result = fit(model, loaders, cfg.train, "runs/x", teacher=teacher, resume=True)

Iterative pruning schedules call `fit` once per round on the new (pruned) model: `fit` builds a
fresh optimiser (`make_optimizer`) and a fresh per-step schedule for it (`make_scheduler`), so
every round gets its own warm-up and decay.

The engine is imported lazily, so that `reidprune.config` (which imports `train.config`) stays
free of torch.
"""

from __future__ import annotations

from reidprune._lazy import lazy_exports
from reidprune.train.config import TrainConfig

_LAZY = {
    "BaseCallback": "reidprune.train.callbacks",
    "Callback": "reidprune.train.callbacks",
    "Engine": "reidprune.train.engine",
    "FitResult": "reidprune.train.engine",
    "fit": "reidprune.train.engine",
    "freeze_teacher": "reidprune.train.teacher",
    "make_optimizer": "reidprune.train.optim",
    "make_scheduler": "reidprune.train.optim",
    "param_groups": "reidprune.train.optim",
}

__all__ = ["TrainConfig", *sorted(_LAZY)]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
