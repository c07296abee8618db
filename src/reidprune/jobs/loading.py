"""The model a train or prune job starts from: `load_model` with the job's config, and the rule that
its classifier fits the training data (`check_classifier`), so both jobs accept or refuse alike."""

from __future__ import annotations

from torch import nn

from reidprune.config import ExperimentConfig
from reidprune.models.loading import load_model
from reidprune.train.classes import check_classifier


def job_model(cfg: ExperimentConfig, weights: str, num_classes: int) -> nn.Module:
    """Registry entry `cfg.model.name` built for the configured input size and `num_classes`, with
    `weights` (a foreign checkpoint it is shaped to first, or a reidprune model / run directory,
    rebuilt from its own model.json) or random weights when `weights` is empty. In eval mode.
    A saved foreign model built by a user's own factory loads only with `cfg.model.allow_import`."""
    model = load_model(
        cfg.model.name,
        weights or None,
        model_cfg=cfg.model,
        data_cfg=cfg.data,
        num_classes=num_classes,
        allow_import=cfg.model.allow_import,
    )
    check_classifier(model, num_classes, weights, cfg.data.root)
    return model
