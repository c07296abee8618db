"""Tiny ViTs and ResNets shared by the tests (milliseconds per forward pass).

Importable from every test folder as `from tiny_models import ...` (tests/ is on sys.path through
tests/conftest.py). The sizes below are the ones most tests use; a test that needs another shape
passes it, so that what a test changes is written next to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from reidprune.models import create


def vit_arch(
    depth: int = 3,
    heads: int = 2,
    img_size: Sequence[int] = (64, 32),
    patch_size: int = 8,
    embed_dim: int = 32,
    head_dim: int = 8,
    mlp: int = 64,
    num_classes: int = 2,
    **extra: Any,
) -> dict[str, Any]:
    """The keyword arguments of a small ViT: `depth` blocks of `heads` heads of width `head_dim`,
    MLP width `mlp`; `extra` adds or overrides keys (head, drop_path, stride, ...).

    The default is vit_tiny_reid's structure at 64 x 32 with 8 px patches (an 8 x 4 grid), 3 blocks
    of 2 heads of width 8 (D 32), 2 classes (the synthetic set's training identities)."""
    return {
        "depth": depth,
        "img_size": list(img_size),
        "patch_size": patch_size,
        "embed_dim": embed_dim,
        "head_dim": head_dim,
        "num_heads": [heads] * depth,
        "mlp_hidden": [mlp] * depth,
        "num_classes": num_classes,
        **extra,
    }


TINY_VIT = vit_arch()


def tiny_vit(name: str = "vit_tiny_reid", seed: int | None = 0, **arch: Any) -> nn.Module:
    """`create(name, **vit_arch(**arch))` in eval mode, from torch.manual_seed(seed) (None: the
    current generator state)."""
    if seed is not None:
        torch.manual_seed(seed)
    return create(name, **vit_arch(**arch)).eval()


def resnet_arch(**extra: Any) -> dict[str, Any]:
    """A narrow ResNet (stage widths 8/8/16/16) at 32 x 16 with 4 classes; `extra` overrides."""
    return {"img_size": [32, 16], "stage_planes": [8, 8, 16, 16], "num_classes": 4, **extra}


def tiny_resnet(name: str = "resnet18_reid", seed: int | None = None, **arch: Any) -> nn.Module:
    """`create(name, **resnet_arch(**arch))` in train mode (as `create` returns it), from
    torch.manual_seed(seed) when seed is given."""
    if seed is not None:
        torch.manual_seed(seed)
    return create(name, **resnet_arch(**arch))
