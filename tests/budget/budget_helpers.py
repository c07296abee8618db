"""Tiny models (tiny_models: `tiny_vit(heads=...)` from seed 0) and calibration batches for the budget-search
tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

import tiny_models
from tiny_models import tiny_vit

__all__ = ["ScaledCost", "batches", "tiny_resnet", "tiny_vit"]


def tiny_resnet(name: str = "resnet50_reid") -> nn.Module:
    """tiny_models.tiny_resnet (stage widths 8/8/16/16 at 32 x 16) from seed 0, in eval mode."""
    return tiny_models.tiny_resnet(name, seed=0).eval()


def batches(size: tuple[int, int] = (64, 32), count: int = 3, classes: int = 2) -> list[dict[str, Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        {
            "image": torch.randn(4, 3, *size, generator=gen),
            "label": torch.randint(0, classes, (4,), generator=gen),
        }
        for _ in range(count)
    ]


class ScaledCost:
    """A stand-in latency model: milliseconds = 1000 x GMACs (unit "ms")."""

    unit = "ms"

    def __init__(self, gmacs_model) -> None:  # type: ignore[no-untyped-def]
        self.inner = gmacs_model

    def predict(self, sketch) -> float:  # type: ignore[no-untyped-def]
        return 1000.0 * self.inner.predict(sketch)

    def describe(self) -> dict:
        return {"kind": "scaled gmacs", "unit": "ms"}
