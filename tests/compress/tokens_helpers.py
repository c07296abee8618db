"""Tiny ViTs and calibration batches for the token-reduction and calibration tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reidprune.models.output import ModelOutput
from reidprune.models.vit import VisionTransformer

IMG = (16, 8)  # with patch 4: a 4 x 2 grid, 8 patches, 9 tokens
CLASSES = 3


def tiny_vit(
    heads: tuple[int, ...] = (2, 2, 2, 2), dim: int = 16, patch: int = 4, img=IMG
) -> VisionTransformer:
    """Core ViT classifier: 4 x 2 patches, `len(heads)` blocks, head dim 8, eval mode."""
    torch.manual_seed(0)
    return VisionTransformer(
        img_size=img, patch_size=patch, embed_dim=dim, num_heads=heads, head_dim=8, num_classes=CLASSES
    ).eval()


class TinyReID(nn.Module):
    """ViT backbone + BN + dropout classifier returning ModelOutput (logits only in training mode)."""

    def __init__(self, drop_path: float = 0.1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = VisionTransformer(
            img_size=IMG, patch_size=4, embed_dim=16, num_heads=(2, 2, 2), head_dim=8, drop_path=drop_path
        )
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, CLASSES)

    def forward(self, images: Tensor, camids: Tensor | None = None) -> ModelOutput:
        feature = self.backbone(images, camids)
        if not self.training:
            return ModelOutput(embedding=feature)
        return ModelOutput(
            embedding=feature, logits=[self.fc(self.drop(self.bn(feature)))], features=[feature]
        )


def batches(sizes: tuple[int, ...] = (4, 4, 3), img=IMG, seed: int = 1) -> list[dict[str, Tensor]]:
    """Calibration batches (dicts as the loaders yield them); the last one may be ragged."""
    gen = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.randn(n, 3, *img, generator=gen),
            "label": torch.randint(0, CLASSES, (n,), generator=gen),
            "camid": torch.zeros(n, dtype=torch.long),
        }
        for n in sizes
    ]
