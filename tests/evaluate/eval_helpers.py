"""Shared pieces of the evaluation tests: a plain per-query reference of the protocol, random
re-ID layouts, and tiny models / loaders."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch import Tensor, nn

from reidprune.models.output import ModelOutput


def reference_protocol(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
) -> dict:
    """torchreid's eval_market1501, one query at a time, with a stable sort (ties by gallery index)."""
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    cmcs, aps, inps = [], [], []
    for i in range(num_q):
        order = np.argsort(distmat[i], kind="stable")
        junk = (g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])
        match = (g_pids[order] == q_pids[i])[~junk].astype(np.int64)
        if not match.any():
            continue
        hit = np.minimum(np.cumsum(match), 1)
        curve = np.ones(max_rank)
        curve[: min(max_rank, len(hit))] = hit[:max_rank]
        cmcs.append(curve)
        precision = np.cumsum(match) / np.arange(1, len(match) + 1)
        aps.append((precision * match).sum() / match.sum())
        inps.append(match.sum() / (np.flatnonzero(match).max() + 1))
    return {
        "cmc": np.mean(cmcs, axis=0) if cmcs else None,
        "mAP": float(np.mean(aps)) if aps else None,
        "mINP": float(np.mean(inps)) if inps else None,
        "num_valid": len(aps),
    }


def random_layout(rng: np.random.Generator, num_q: int, num_g: int, num_ids: int, num_cams: int) -> tuple:
    """Query/gallery ids like a re-ID test split: several cameras per identity, gallery
    distractors (pid 0), and some query identities absent from the gallery."""
    q_pids = rng.integers(1, num_ids + 1, num_q)
    g_pids = rng.integers(0, num_ids + 1, num_g)  # pid 0 = distractor
    g_pids[g_pids == num_ids] = 0  # identity num_ids only ever appears as a query: no match
    return q_pids, g_pids, rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)


class TinyEmbedder(nn.Module):
    """(B, 3, H, W) -> ModelOutput with a linear embedding; not flip-invariant; records camids."""

    def __init__(self, size: int = 4, dim: int = 5, num_cameras: int = 0) -> None:
        super().__init__()
        self.lin = nn.Linear(3 * size * size, dim)
        self.arch = SimpleNamespace(num_cameras=num_cameras, img_size=[size, size])
        self.seen_camids: list[Tensor | None] = []
        self.modes: list[bool] = []

    def forward(self, images: Tensor, camids: Tensor | None = None) -> ModelOutput:
        self.seen_camids.append(camids)
        self.modes.append(self.training)
        emb = self.lin(images.flatten(1))
        if camids is not None:
            emb = emb + camids.unsqueeze(1).float()
        return ModelOutput(embedding=emb)


def batches(images: Tensor, pids: Tensor, camids: Tensor, size: int = 3) -> list[dict[str, Tensor]]:
    """A loader stand-in: dict batches as reidprune loaders yield them."""
    out = []
    for s in range(0, len(images), size):
        out.append(
            {
                "image": images[s : s + size],
                "pid": pids[s : s + size],
                "label": pids[s : s + size],
                "camid": camids[s : s + size],
                "index": torch.arange(s, min(s + size, len(images))),
            }
        )
    return out


def clustered_features(
    rng: np.random.Generator, pids: np.ndarray, dim: int = 8, noise: float = 0.5
) -> np.ndarray:
    """Features near one centre per identity (float32)."""
    centres = rng.standard_normal((int(pids.max()) + 1, dim))
    return (centres[pids] + noise * rng.standard_normal((len(pids), dim))).astype(np.float32)
