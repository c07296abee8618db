"""Evaluation: features -> distances -> CMC / mAP / mINP (re-ID), or top-k (classification).

    query = extract_features(model, loaders.query, flip=True)
    gallery = extract_features(model, loaders.gallery, flip=True)
    metrics = reid_metrics(query, gallery, EvalConfig(rerank=True))   # {"mAP": .., "rank1": ..} percent
    metrics = evaluate_reid(model, loaders.query, loaders.gallery, cfg.eval)   # both steps
    metrics = distmat_metrics(distmat, q_pids, g_pids, q_camids, g_camids)    # a precomputed matrix

Exports resolve lazily, so that `reidprune.config` (which imports `evaluate.config`) stays free
of torch.
"""

from __future__ import annotations

from reidprune._lazy import lazy_exports
from reidprune.evaluate.config import EvalConfig

_EXPORTS = {
    "DistanceBlocks": "reidprune.evaluate.distance",
    "pairwise_distance": "reidprune.evaluate.distance",
    "Features": "reidprune.evaluate.features",
    "extract_features": "reidprune.evaluate.features",
    "distmat_metrics": "reidprune.evaluate.reid",
    "evaluate_reid": "reidprune.evaluate.reid",
    "reid_metrics": "reidprune.evaluate.reid",
    "RerankBlocks": "reidprune.evaluate.rerank",
    "evaluate_classification": "reidprune.evaluate.classification",
}

__all__ = ["EvalConfig", *sorted(_EXPORTS)]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
