"""Validation during training: re-ID metrics on held-out training identities, or classification top-1.

Never the test split: the best checkpoint is chosen on these numbers. Under DDP, when the
validation loaders are sharded (their sampler has a `world_size` > 1, like reidprune's
`ShardSampler`), every rank embeds its shard, the features are gathered and put back in dataset
order on rank 0, which ranks them; otherwise rank 0 evaluates the whole split alone. Either way
every rank receives the same metrics. Metrics are in percent.

`validate(model, loaders, cfg, eval_cfg)` picks the kind from the loaders (`val_query` +
`val_gallery`: re-ID; `val`: classification) and checks that `train.select_metric` is among the results.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from reidprune.errors import TrainingError
from reidprune.train.config import TrainConfig
from reidprune.train.distributed import all_gather_objects, broadcast_object, dist_info


def loader_of(loaders: Any, name: str) -> Any:
    """loaders.name or loaders[name]; None when absent."""
    if isinstance(loaders, Mapping):
        return loaders.get(name)
    return getattr(loaders, name, None)


def validation_kind(loaders: Any) -> str | None:
    """ "reid", "classification", or None without validation loaders."""
    if loader_of(loaders, "val_query") is not None and loader_of(loaders, "val_gallery") is not None:
        return "reid"
    if loader_of(loaders, "val") is not None:
        return "classification"
    return None


def metric_name(loaders: Any, cfg: TrainConfig) -> str | None:
    """The metric that selects the best epoch: train.select_metric, or mAP / top1 for "auto"."""
    kind = validation_kind(loaders)
    if kind is None:
        return None
    if cfg.select_metric != "auto":
        return cfg.select_metric
    return "mAP" if kind == "reid" else "top1"


def validate(model: nn.Module, loaders: Any, cfg: TrainConfig, eval_cfg: Any = None) -> dict[str, float]:
    """Numeric metrics on the held-out validation split (percent); {} without one. Same on every rank.

    The model is evaluated in eval mode and left in the mode it came in.
    """
    kind = validation_kind(loaders)
    if kind is None:
        return {}
    was_training = model.training
    model.eval()
    try:
        if kind == "reid":
            from reidprune.evaluate.config import EvalConfig

            metrics = validate_reid(
                model,
                loader_of(loaders, "val_query"),
                loader_of(loaders, "val_gallery"),
                eval_cfg or EvalConfig(),
            )
        else:
            metrics = validate_classification(model, loader_of(loaders, "val"))
    finally:
        model.train(was_training)
    name = metric_name(loaders, cfg)
    if name not in metrics:
        raise TrainingError(
            f"train.select_metric='{name}' is not among the validation metrics {sorted(metrics)}"
        )
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}


def is_sharded(loader: Any) -> bool:
    sampler = getattr(loader, "sampler", None)
    return getattr(sampler, "world_size", 1) > 1


def _sampler_indices(loader: Any, count: int) -> torch.Tensor:
    """Dataset indices this rank's loader visits, in order (for re-assembling gathered features)."""
    indices = [int(i) for i in iter(loader.sampler)]
    if len(indices) != count:
        raise RuntimeError(f"sharded validation: {count} features for {len(indices)} sampled indices")
    return torch.tensor(indices, dtype=torch.long)


def _gather_features(model: nn.Module, loader: Any, eval_cfg: Any) -> Any:
    """Features of the whole split on rank 0 (None elsewhere), extracted shard by shard."""
    from reidprune.evaluate import extract_features
    from reidprune.evaluate.features import Features

    local = extract_features(model, loader, flip=eval_cfg.flip, normalize=eval_cfg.normalize)
    index = _sampler_indices(loader, len(local))
    parts = all_gather_objects((local.features, local.pids, local.camids, index))
    if not dist_info().is_main:
        return None
    order = torch.cat([p[3] for p in parts]).argsort()
    return Features(*(torch.cat([p[i] for p in parts])[order] for i in range(3)))


def validate_reid(model: nn.Module, query: Any, gallery: Any, eval_cfg: Any) -> dict[str, float]:
    from reidprune.evaluate import evaluate_reid, reid_metrics

    info = dist_info()
    metrics = None
    if info.enabled and is_sharded(query) and is_sharded(gallery):
        q = _gather_features(model, query, eval_cfg)
        g = _gather_features(model, gallery, eval_cfg)
        if info.is_main:
            device = next(model.parameters()).device
            metrics = reid_metrics(q, g, eval_cfg, device=device)
    elif info.is_main:
        metrics = evaluate_reid(model, query, gallery, eval_cfg)
    return broadcast_object(metrics)


def validate_classification(model: nn.Module, loader: Any) -> dict[str, float]:
    from reidprune.evaluate import evaluate_classification

    info = dist_info()
    if info.enabled and is_sharded(loader):
        local = evaluate_classification(model, loader)
        parts = all_gather_objects(local)
        total = sum(p["num_images"] for p in parts)
        return {
            "top1": sum(p["top1"] * p["num_images"] for p in parts) / total,
            "top5": sum(p["top5"] * p["num_images"] for p in parts) / total,
            "num_images": total,
        }
    metrics = evaluate_classification(model, loader) if info.is_main else None
    return broadcast_object(metrics)
