"""Validation during training: re-ID metrics on held-out training identities, or classification top-1.

Never the test split: the best checkpoint is chosen on these numbers. Under DDP, when the
validation loaders are sharded (their sampler has a `world_size` > 1, like reidprune's
`ShardSampler`), every rank embeds its shard, the features are gathered and put back in dataset
order on rank 0, which ranks them; otherwise rank 0 evaluates the whole split alone. Either way
every rank receives the same metrics. Metrics are in percent.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from reidprune.train.distributed import all_gather_objects, broadcast_object, dist_info


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
