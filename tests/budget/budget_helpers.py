"""Tiny models and calibration batches for the budget-search tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reidprune.models import create

# vit_tiny_reid at 64 x 32 with 8 px patches: 32 patches, 3 blocks of 2 heads of width 8 (D 32)
VIT = {
    "depth": 3,
    "img_size": [64, 32],
    "patch_size": 8,
    "embed_dim": 32,
    "head_dim": 8,
    "num_heads": [2, 2, 2],
    "mlp_hidden": [64, 64, 64],
    "num_classes": 2,
}


def tiny_vit(heads: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return create("vit_tiny_reid", **{**VIT, "num_heads": [heads] * 3}).eval()


def tiny_resnet(name: str = "resnet50_reid") -> nn.Module:
    """Stage widths 8/8/16/16 at 32 x 16."""
    torch.manual_seed(0)
    return create(name, img_size=[32, 16], stage_planes=[8, 8, 16, 16], num_classes=4).eval()


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
