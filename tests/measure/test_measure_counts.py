"""Parameter and multiply-accumulate counts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

from reidprune.measure import count_gmacs, count_params, find_blocks
from reidprune.models.output import ModelOutput
from reidprune.models.vit import VisionTransformer


def _tiny_vit(**kw: object) -> VisionTransformer:
    # 32x32 input, 16x16 patches -> 4 patches + CLS; width 8, two blocks of 2 heads x 4 dims
    return VisionTransformer(
        img_size=(32, 32), embed_dim=8, num_heads=(2, 2), head_dim=4, mlp_hidden=(16, 16), num_classes=5, **kw
    )


def test_params_total_and_attention_only() -> None:
    # patch conv 3*16*16*8+8 = 6152, cls 8, pos 5*8 = 40, final norm 16, head 8*5+5 = 45;
    # per block: norms 2*16, qkv 8*24+24 = 216, proj 8*8+8 = 72, fc1 8*16+16 = 144, fc2 16*8+8 = 136
    per_block_attn = 216 + 72
    per_block = 32 + per_block_attn + 144 + 136
    assert count_params(_tiny_vit()) == {
        "params": 6152 + 8 + 40 + 16 + 45 + 2 * per_block,
        "attn_params": 2 * per_block_attn,
    }


def test_attention_buffers_and_shared_params_are_not_counted() -> None:
    model = _tiny_vit()
    model.blocks[0].attn.register_buffer("token_mask", torch.ones(5, dtype=torch.bool))
    model.blocks[1].attn.proj = model.blocks[0].attn.proj  # shared: counted once
    assert count_params(model) == {"params": 7461 - 72, "attn_params": 576 - 72}


def test_torch_multihead_attention_counts_as_attention() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.MultiheadAttention(6, 2))
    assert count_params(model) == {"params": 30 + 3 * 6 * 6 + 3 * 6 + 6 * 6 + 6, "attn_params": 168}


class LinearNet(nn.Module):
    """(B, 3, 4, 4) -> blocks of linears; exact MACs: 48*10 + 2 * (10*10) + 10*3."""

    def __init__(self, num_cameras: int = 0) -> None:
        super().__init__()
        self.stem = nn.Linear(48, 10)
        self.blocks = nn.ModuleList([nn.Linear(10, 10), nn.Linear(10, 10)])
        self.head = nn.Linear(10, 3)
        self.arch = SimpleNamespace(img_size=[4, 4], num_cameras=num_cameras)

    def forward(self, images: Tensor, camids: Tensor | None = None) -> ModelOutput:
        if self.arch.num_cameras and camids is None:
            raise ValueError("camids needed")
        x = self.stem(images.flatten(1))
        for block in self.blocks:
            x = block(x)
        return ModelOutput(embedding=self.head(x))


@pytest.mark.parametrize("num_cameras", [0, 2])
def test_gmacs_exact_on_linear_layers(num_cameras: int) -> None:
    result = count_gmacs(LinearNet(num_cameras), batch=3)
    assert result["gmacs"] == pytest.approx((480 + 200 + 30) / 1e9)
    assert result["blocks_gmacs"] == pytest.approx(200 / 1e9)
    assert result["per_block"] == [
        {"name": "blocks.0", "gmacs": pytest.approx(100 / 1e9)},
        {"name": "blocks.1", "gmacs": pytest.approx(100 / 1e9)},
    ]
    assert result["input_size"] == [4, 4] and result["batch"] == 3


def test_gmacs_leave_the_model_mode_alone() -> None:
    model = LinearNet().train()
    count_gmacs(model)
    assert model.training


@pytest.mark.parametrize(("dim", "heads", "expected"), [(192, 3, 1.3), (384, 6, 4.6), (768, 12, 17.6)])
def test_deit_gmacs_match_the_published_numbers(dim: int, heads: int, expected: float) -> None:
    with torch.device("meta"):  # shapes only: nothing is computed
        model = VisionTransformer(
            img_size=(224, 224), embed_dim=dim, num_heads=(heads,) * 12, num_classes=1000
        )
    result = count_gmacs(model, input_size=(224, 224))
    assert result["gmacs"] == pytest.approx(expected, rel=0.05)
    assert len(result["per_block"]) == 12
    if dim == 768:  # LA-Base (ViT-B, 197 tokens), blocks only, by the AMG repositories' formula
        assert result["blocks_gmacs"] == pytest.approx(17.45, rel=0.01)


def test_find_blocks_takes_the_outermost_match() -> None:
    class Stages(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer1 = nn.Sequential(nn.Linear(2, 2))
            self.layer1.blocks = nn.ModuleList([nn.Linear(2, 2)])  # nested: part of layer1
            self.b1 = nn.Linear(2, 2)
            self.b2 = nn.Linear(2, 2)
            self.head = nn.Linear(2, 2)

    assert find_blocks(Stages()) == ["layer1", "b1", "b2"]


def test_gmacs_need_an_input_size() -> None:
    with pytest.raises(ValueError, match="pass input_size"):
        count_gmacs(nn.Linear(3, 3))


def test_the_old_block_names_forwards_with_a_deprecation_warning() -> None:
    import reidprune.measure as measure

    with pytest.warns(DeprecationWarning, match="find_blocks"):
        assert measure.block_names is find_blocks
