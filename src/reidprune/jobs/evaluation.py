"""The test evaluation that train and prune jobs report (never used to select a model)."""

from __future__ import annotations

from typing import Any

from torch import nn

from reidprune.config import ExperimentConfig
from reidprune.train.validation import validate_classification, validate_reid


def evaluate_test(model: nn.Module, loaders: Any, cfg: ExperimentConfig) -> dict[str, float] | None:
    """Re-ID metrics on query/gallery, else top-k on a classification set's val/ split (percent);
    None when the data has neither."""
    if loaders.query is not None and loaders.gallery is not None:
        metrics = validate_reid(model.eval(), loaders.query, loaders.gallery, cfg.eval)
    elif loaders.val is not None:  # classification sets: their val/ split is the reported one
        metrics = validate_classification(model.eval(), loaders.val)
    else:
        return None
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}
