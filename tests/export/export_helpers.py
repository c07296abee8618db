"""Tiny models of every family and compression method, for the export tests (milliseconds per pass)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from reidprune.compress.filters import prune_filters
from reidprune.compress.heads import prune_heads
from reidprune.compress.tokens import prune_tokens
from reidprune.models import create
from tiny_models import tiny_resnet, tiny_vit, vit_arch

# vit_tiny_reid's structure at 32 x 16 with 4 px patches (an 8 x 4 grid), 5 classes
GRID = {"img_size": (32, 16), "patch_size": 4, "num_classes": 5}
TINY_VIT = vit_arch(**GRID)


def vit_bnneck() -> nn.Module:
    """vit_tiny_reid's structure: 8 x 4 patches of 4 px, D 32, 3 blocks x 2 heads, CLS + BNNeck."""
    return tiny_vit(**GRID)


def vit_linear() -> nn.Module:
    """A DeiT-style classifier (eval mode returns logits too): 4 x 4 patches of 8 px, 2 blocks."""
    return tiny_vit("deit_tiny_patch16_224", depth=2, img_size=(32, 32), num_classes=5)


def vit_la() -> nn.Module:
    """LA-Transformer head (one stripe per grid row) on the tiny backbone."""
    return tiny_vit("la_tiny_reid", **GRID, head_options={"bottleneck": 16})


def transreid_cameras() -> nn.Module:
    """TransReID-small structure with SIE for 3 cameras, overlapping stride 6, JPM (2 local branches)."""
    torch.manual_seed(0)
    return create(
        "transreid_small",
        depth=3,
        img_size=[32, 16],
        patch_size=8,
        stride=6,
        num_cameras=3,
        num_classes=5,
        embed_dim=32,
        head_dim=8,
        num_heads=[2, 2],
        mlp_hidden=[64, 64],
        jpm_num_heads=[2, 2],
        head_options={"num_local": 2},
    ).eval()


def resnet() -> nn.Module:
    """A narrow ResNet-18 re-ID model (stage widths 8/8/16/16) at 32 x 16."""
    return tiny_resnet(seed=0).eval()


def calibration(model: nn.Module, batches: int = 2, size: int = 4) -> list[dict[str, torch.Tensor]]:
    """Random calibration batches shaped as the loaders yield them."""
    gen = torch.Generator().manual_seed(1)
    h, w = model.arch.img_size
    return [
        {
            "image": torch.randn(size, 3, h, w, generator=gen),
            "label": torch.randint(0, model.arch.num_classes, (size,), generator=gen),
            "camid": torch.zeros(size, dtype=torch.long),
        }
        for _ in range(batches)
    ]


def amg_kv() -> nn.Module:
    base = vit_bnneck()
    return prune_tokens(base, "amg", 0.4, calibration(base), mode="kv")[0].eval()


def amg_skip() -> nn.Module:
    base = vit_bnneck()
    return prune_tokens(base, "amg", 0.4, mode="skip", selection="random")[0].eval()


def topk() -> nn.Module:
    return prune_tokens(vit_bnneck(), "topk", 0.4, fuse=True)[0].eval()


def pm() -> nn.Module:
    base = vit_bnneck()
    return prune_tokens(base, "pm", 0.4, calibration(base))[0].eval()


def pm_projection() -> nn.Module:
    """The paper's pseudo-inverse restore (the form released PM-ViT checkpoints use)."""
    base = vit_bnneck()
    return prune_tokens(base, "pm", 0.4, calibration(base), restore="projection")[0].eval()


def tome() -> nn.Module:
    return prune_tokens(vit_bnneck(), "tome", 0.4)[0].eval()


def heads() -> nn.Module:
    return prune_heads(vit_bnneck(), "magnitude", rate=0.5)[0].eval()


def filters() -> nn.Module:
    return prune_filters(resnet(), "hfp", 0.5)[0].eval()


def la_amg_skip() -> nn.Module:
    """AMG skip on an LA model: the part stripes need the restored token grid."""
    base = vit_la()
    return prune_tokens(base, "amg", 0.4, mode="skip", selection="random")[0].eval()


def transreid_topk() -> nn.Module:
    """Dynamic per-image top-k on a camera-aware JPM model."""
    return prune_tokens(transreid_cameras(), "topk", 0.4)[0].eval()


FAMILIES: dict[str, Callable[[], nn.Module]] = {
    "vit-linear": vit_linear,
    "vit-bnneck": vit_bnneck,
    "vit-la": vit_la,
    "transreid-cameras": transreid_cameras,
    "resnet": resnet,
}
COMPRESSED: dict[str, Callable[[], nn.Module]] = {
    "amg-kv": amg_kv,
    "amg-skip": amg_skip,
    "topk": topk,
    "pm": pm,
    "pm-projection": pm_projection,
    "tome": tome,
    "heads": heads,
    "filters": filters,
    "la-amg-skip": la_amg_skip,
    "transreid-topk": transreid_topk,
}


def inputs(model: nn.Module, batch: int, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed)
    h, w = model.arch.img_size
    images = torch.randn(batch, 3, h, w, generator=gen)
    cameras = int(getattr(model.arch, "num_cameras", 0))
    return images, (torch.randint(0, cameras, (batch,), generator=gen) if cameras else None)


def outputs_of(model: nn.Module, images: torch.Tensor, camids: Any) -> Any:
    with torch.inference_mode():
        return model(images, camids) if camids is not None else model(images)
