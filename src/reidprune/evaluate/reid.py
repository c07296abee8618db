"""Re-ID evaluation entry points: from a model, from features, or from a distance matrix.

All three end in the same blocked ranking (`ranking.rank_block`), so the numbers are the same
whichever door is used. Results are in percent; `num_skipped_queries` counts the queries that had
no valid match and were left out of every mean.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from reidprune.errors import ConfigError, DataError
from reidprune.evaluate.config import EvalConfig
from reidprune.evaluate.distance import METRICS, DistanceBlocks
from reidprune.evaluate.features import Features, extract_features
from reidprune.evaluate.ranking import GalleryIndex, QueryStats, rank_block, summarize
from reidprune.models.forward import model_device

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _as_long(values: Any, name: str) -> Tensor:
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, Tensor) else values)
    if tensor.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array, got shape {tuple(tensor.shape)}")
    if tensor.numel() and (tensor.is_floating_point() or tensor.is_complex()):
        raise DataError(f"{name}: expected integer ids, got {tensor.dtype}")
    return tensor.long()


def _rank_all(
    blocks: Iterable[tuple[int, Tensor]],
    query_pids: Tensor,
    query_camids: Tensor,
    gallery: GalleryIndex,
) -> QueryStats:
    parts = []
    for start, block in blocks:
        stop = start + block.shape[0]
        parts.append(rank_block(block, query_pids[start:stop], query_camids[start:stop], gallery))
    return QueryStats.cat(parts)


def check_config(cfg: EvalConfig) -> None:
    """Raise ConfigError naming the eval.* key that cannot work."""
    if cfg.metric not in METRICS:
        raise ConfigError(f"eval.metric='{cfg.metric}': expected one of {', '.join(METRICS)}")
    if cfg.max_rank < 1:
        raise ConfigError(f"eval.max_rank={cfg.max_rank}: expected >= 1")
    bad = [k for k in cfg.ranks if not 1 <= k <= cfg.max_rank]
    if bad:
        raise ConfigError(f"eval.ranks={list(cfg.ranks)}: ranks {bad} are outside 1..max_rank={cfg.max_rank}")
    if cfg.query_chunk < 1:
        raise ConfigError(f"eval.query_chunk={cfg.query_chunk}: expected >= 1")
    if cfg.rerank and (cfg.rerank_k1 < 1 or cfg.rerank_k2 < 1 or not 0.0 <= cfg.rerank_lambda <= 1.0):
        raise ConfigError(
            f"eval.rerank_k1={cfg.rerank_k1}, rerank_k2={cfg.rerank_k2}, rerank_lambda={cfg.rerank_lambda}: "
            "expected k1 >= 1, k2 >= 1 and lambda in [0, 1]"
        )


def _finish(stats: QueryStats, num_gallery: int, cfg: EvalConfig, with_cmc: bool) -> dict[str, Any]:
    try:
        result = summarize(stats, num_gallery, list(cfg.ranks), cfg.max_rank)
    except ValueError as err:
        raise DataError(str(err)) from None
    if result["num_skipped_queries"]:
        log.warning(
            "%d of %d queries have no valid match in the gallery and were skipped",
            result["num_skipped_queries"],
            result["num_queries"],
        )
    if not with_cmc:
        result.pop("cmc")
    return result


def distmat_metrics(
    distmat: Tensor | np.ndarray,
    query_pids: Any,
    gallery_pids: Any,
    query_camids: Any,
    gallery_camids: Any,
    cfg: EvalConfig | None = None,
    with_cmc: bool = False,
) -> dict[str, Any]:
    """Protocol metrics (percent) of a precomputed (Q, G) distance matrix (smaller = more similar).

    The matrix is not modified; it is read in blocks of `cfg.query_chunk` rows on its own device.
    Equals torchreid's ``eval_market1501`` on the same matrix (with a stable sort on ties).
    """
    cfg = cfg or EvalConfig()
    check_config(cfg)
    dist = torch.as_tensor(distmat)
    q_pids, g_pids = _as_long(query_pids, "query pids"), _as_long(gallery_pids, "gallery pids")
    q_cams, g_cams = _as_long(query_camids, "query camids"), _as_long(gallery_camids, "gallery camids")
    if dist.ndim != 2 or dist.shape != (len(q_pids), len(g_pids)):
        raise DataError(
            f"distance matrix of shape {tuple(dist.shape)} does not fit {len(q_pids)} query and "
            f"{len(g_pids)} gallery ids; expected (num_query, num_gallery)"
        )
    if len(q_cams) != len(q_pids) or len(g_cams) != len(g_pids):
        raise DataError(
            f"{len(q_cams)} query / {len(g_cams)} gallery camids for {len(q_pids)} / {len(g_pids)} pids"
        )
    if dist.numel() == 0:
        raise DataError(f"empty evaluation: {dist.shape[0]} queries x {dist.shape[1]} gallery items")
    device = dist.device
    gallery = GalleryIndex.build(g_pids.to(device), g_cams.to(device))
    q_pids, q_cams = q_pids.to(device), q_cams.to(device)

    def blocks() -> Iterator[tuple[int, Tensor]]:
        for start in range(0, dist.shape[0], cfg.query_chunk):
            rows = dist[start : start + cfg.query_chunk]
            block = rows.to(torch.float64 if rows.dtype == torch.float64 else torch.float32, copy=True)
            if not torch.isfinite(block).all():
                raise DataError(f"distance matrix rows {start}.. contain NaN or inf")
            yield start, block

    return _finish(_rank_all(blocks(), q_pids, q_cams, gallery), len(g_pids), cfg, with_cmc)


def reid_metrics(
    query: Features,
    gallery: Features,
    cfg: EvalConfig | None = None,
    device: str | torch.device | None = None,
    with_cmc: bool = False,
) -> dict[str, Any]:
    """Protocol metrics (percent) from query and gallery features.

    Distances (`cfg.metric`) are computed in blocks of `cfg.query_chunk` query rows on `device`
    (default: CUDA when present) and ranked block by block, so memory stays bounded at MSMT17
    scale; with `cfg.rerank` the k-reciprocal distances are ranked instead. Features are ranked
    as given: flip averaging and L2 normalisation belong to `extract_features`.
    Keys: mAP, mINP, rank{k} for k in cfg.ranks, num_queries, num_skipped_queries (+ cmc).
    """
    cfg = cfg or EvalConfig()
    check_config(cfg)
    query.check("query")
    gallery.check("gallery")
    if query.features.shape[1] != gallery.features.shape[1]:
        raise DataError(
            f"query features have {query.features.shape[1]} dimensions, gallery features "
            f"{gallery.features.shape[1]}; they must come from the same model"
        )
    device = torch.device(device) if device is not None else default_device()
    q_feat, g_feat = query.features.to(device), gallery.features.to(device)
    index = GalleryIndex.build(gallery.pids.to(device), gallery.camids.to(device))
    q_pids, q_cams = query.pids.to(device), query.camids.to(device)
    if cfg.rerank:
        from reidprune.evaluate.rerank import RerankBlocks

        blocks: Iterable[tuple[int, Tensor]] = RerankBlocks(
            q_feat,
            g_feat,
            k1=cfg.rerank_k1,
            k2=cfg.rerank_k2,
            lambda_value=cfg.rerank_lambda,
            metric=cfg.metric,
            chunk=cfg.query_chunk,
            max_memory_gb=cfg.rerank_max_memory_gb,
        )
    else:
        blocks = DistanceBlocks(q_feat, g_feat, cfg.metric, cfg.query_chunk)
    return _finish(_rank_all(blocks, q_pids, q_cams, index), len(gallery), cfg, with_cmc)


def evaluate_reid(
    model: nn.Module,
    query_loader: Iterable[Any],
    gallery_loader: Iterable[Any],
    cfg: EvalConfig | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Extract query and gallery features with `model` (cfg.flip, cfg.normalize) and evaluate them.

    device: where the model runs and distances are computed; None = the model's current device.
    """
    cfg = cfg or EvalConfig()
    check_config(cfg)
    query = extract_features(model, query_loader, flip=cfg.flip, normalize=cfg.normalize, device=device)
    gallery = extract_features(model, gallery_loader, flip=cfg.flip, normalize=cfg.normalize, device=device)
    return reid_metrics(query, gallery, cfg, device=model_device(model))
