"""Token reducers on globally average-pooled ViTs (MAE fine-tunes: mean of the patches + fc_norm).

The pooled feature is the mean over the restored grid: every original patch position counts once,
a merged position with its merged token's features, a dropped one with its features when dropped.
"""

from __future__ import annotations

import pytest
import torch
from tokens_helpers import batches

import reidprune
from reidprune.compress.tokens import prune_tokens
from reidprune.models import create

METHODS = [
    ("amg", {"mode": "kv"}),
    ("amg", {"mode": "skip"}),
    ("topk", {"fuse": True}),
    ("pm", {}),
    ("tome", {}),
]
IMG = (32, 16)  # patch 8: a 4 x 2 grid


def pooled_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    size = {"embed_dim": 32, "num_heads": [2, 2, 2], "mlp_hidden": [64] * 3, "head_dim": 8, "num_classes": 3}
    model = create("mae_base_patch16_224", img_size=list(IMG), patch_size=8, depth=3, **size)
    torch.nn.init.normal_(model.backbone.fc_norm.weight, 1.0, 0.3)  # away from LayerNorm's identity init
    torch.nn.init.normal_(model.backbone.fc_norm.bias, 0.0, 0.3)
    return model.eval()


def _identity_blocks(model: torch.nn.Module) -> None:
    """Zero every block's residual branches: tokens then leave each block as they entered."""
    for block in model.backbone.blocks:
        for layer in (block.attn.proj, block.mlp.fc2):
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_reducers_pool_over_every_patch_position_once(method: str, options: dict) -> None:
    model = pooled_vit()
    reduced, _ = prune_tokens(model, method, 0.5, batches((4, 3), img=IMG), **options)
    images = torch.randn(3, 3, *IMG)
    with torch.no_grad():
        assert not torch.allclose(reduced(images).embedding, model(images).embedding)
        _identity_blocks(model)
        _identity_blocks(reduced)
        # the mean over only the tokens a dropping / merging reducer keeps would differ here
        torch.testing.assert_close(reduced(images).embedding, model(images).embedding, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("method", "options"), METHODS[::3])
def test_a_token_reduced_pooled_model_saves_and_loads_exactly(tmp_path, method: str, options: dict) -> None:
    reduced, _ = prune_tokens(pooled_vit(), method, 0.4, batches((4, 3), img=IMG), **options)
    loaded = reidprune.load(reidprune.save(reduced, tmp_path / "m"))
    assert (loaded.arch.global_pool, loaded.arch.fc_norm, loaded.arch.tokens) == (
        "avg",
        True,
        reduced.arch.tokens,
    )
    images = torch.randn(2, 3, *IMG)
    torch.testing.assert_close(loaded(images).logits[0], reduced(images).logits[0], rtol=0, atol=0)
