"""The proxy that compares candidate plans before any fine-tuning: how far a candidate's embeddings
move from the unpruned teacher's on fixed calibration images.

    proxy = EmbeddingProxy(teacher, batches)
    distance = proxy(candidate)      # mean (1 - cosine similarity), in [0, 2]; lower is better

Re-ID retrieval ranks by embedding distance, so the cosine between a candidate's and the
teacher's embedding of the same image is what distillation fine-tuning restores; it needs no
labels, no test split and one eval forward pass per candidate. Whether it ranks plans as their
mAP after fine-tuning does is measured by benchmarks/budget_proxy.py (Spearman over >= 6 plans).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidprune.errors import CompressionError


@torch.no_grad()
def embeddings(
    model: nn.Module, batches: Sequence[dict[str, Any]], device: torch.device | None = None
) -> Tensor:
    """(n_images, D) float32 eval-mode embeddings of every image in `batches`; modes are restored."""
    from reidprune.models.forward import embedding_of, forward_model, model_device

    device = device or model_device(model)
    was_training = model.training
    model.eval()
    try:
        out = [
            embedding_of(forward_model(model, b["image"].to(device).float(), b.get("camid"))).float().cpu()
            for b in batches
        ]
    finally:
        model.train(was_training)
    if not out:
        raise CompressionError("the proxy needs at least one calibration batch")
    return torch.cat(out)


class EmbeddingProxy:
    """Mean cosine distance between a candidate's and the teacher's embeddings (teacher run once)."""

    name = "embedding cosine distance to the teacher"

    def __init__(self, teacher: nn.Module, batches: Sequence[dict[str, Any]]) -> None:
        self.batches = list(batches)
        self.reference = embeddings(teacher, self.batches)

    @property
    def images(self) -> int:
        return int(self.reference.shape[0])

    def __call__(self, candidate: nn.Module) -> float:
        mine = embeddings(candidate, self.batches)
        if mine.shape != self.reference.shape:
            raise CompressionError(
                f"proxy: the candidate's embeddings have shape {tuple(mine.shape)}, the teacher's "
                f"{tuple(self.reference.shape)}"
            )
        return float((1.0 - F.cosine_similarity(mine.double(), self.reference.double(), dim=1)).mean())
