"""Ranked retrieval lists: a few queries with their top-k gallery images, correct ones framed green.

The ranking is the evaluation protocol's (`reidprune.evaluate`): features from `extract_features`
with the run's eval settings (flip, normalisation, metric), and gallery images of the query's
identity taken by the query's own camera left out, as they are when mAP and CMC are computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from reidprune.data.records import ImageRecord
from reidprune.report.mosaic import Mosaic

CORRECT = "#1a9641"
WRONG = "#d7191c"
QUERY = "#2b5797"


@dataclass
class RankedList:
    """One query and its `top` highest-ranked gallery items: (record, correct?, distance)."""

    query: ImageRecord
    results: list[tuple[ImageRecord, bool, float]]


def pick_queries(records: list[ImageRecord], count: int) -> list[int]:
    """Indices of `count` queries of distinct identities, spread evenly over the sorted identities
    (deterministic, so two runs on the same data show the same queries)."""
    first: dict[int, int] = {}
    for index, record in enumerate(records):
        first.setdefault(record.pid, index)
    pids = sorted(first)
    if count >= len(pids):
        return [first[p] for p in pids]
    step = len(pids) / count
    return [first[pids[int(i * step)]] for i in range(count)]


def ranked_lists(
    model: nn.Module, splits: Any, loaders: Any, eval_cfg: Any, num_queries: int = 4, top: int = 10
) -> list[RankedList]:
    """Top-`top` gallery lists of `num_queries` queries (see `pick_queries`) under `eval_cfg`'s protocol."""
    from reidprune.evaluate import extract_features
    from reidprune.evaluate.distance import DistanceBlocks

    query = extract_features(
        model, loaders.query, flip=eval_cfg.flip, normalize=eval_cfg.normalize, device="cpu"
    )
    gallery = extract_features(
        model, loaders.gallery, flip=eval_cfg.flip, normalize=eval_cfg.normalize, device="cpu"
    )
    chosen = pick_queries(splits.query, num_queries)
    rows = torch.tensor(chosen, dtype=torch.long)
    distances = (
        DistanceBlocks(query.features[rows], gallery.features, eval_cfg.metric).block(0, len(chosen)).clone()
    )
    lists = []
    for row, index in enumerate(chosen):
        pid, camid = int(query.pids[index]), int(query.camids[index])
        # the protocol's junk: same identity seen by the same camera
        valid = ~((gallery.pids == pid) & (gallery.camids == camid))
        candidates = torch.nonzero(valid).flatten()
        order = torch.argsort(distances[row, candidates], stable=True)[:top]
        results = [
            (splits.gallery[int(g)], int(gallery.pids[g]) == pid, float(distances[row, g]))
            for g in candidates[order]
        ]
        lists.append(RankedList(splits.query[index], results))
    return lists


def thumbnail(path: str, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 image at `size` (H, W)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR))


def retrieval_figure(lists: list[RankedList], size: tuple[int, int] = (128, 64)) -> bytes:
    """One row per query: the query (blue frame), then its ranked gallery images framed green
    (same identity) or red (another identity), with rank, identity and camera above each. PNG bytes.

    size: (H, W) each image is shown at.
    """
    top = max(len(r.results) for r in lists)
    mosaic = Mosaic(len(lists), top + 1, size[0], size[1], gap=8)
    for row, ranked in enumerate(lists):
        query = ranked.query
        mosaic.place(row, 0, thumbnail(query.path, size), QUERY)
        mosaic.title(row, 0, f"query\nid {query.pid} c{query.camid + 1}", QUERY)
        for rank, (record, correct, _) in enumerate(ranked.results, start=1):
            colour = CORRECT if correct else WRONG
            mosaic.place(row, rank, thumbnail(record.path, size), colour)
            mosaic.title(row, rank, f"{rank}: id {record.pid}\nc{record.camid + 1}", colour)
    return mosaic.png()
