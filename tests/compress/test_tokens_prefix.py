"""Every token reducer on a ViT with LayerScale, qk-norm, a distillation token and two registers.

The backbone's sequence is [class, dist, reg, reg, 8 patches]: 4 prefix tokens that no reducer
may drop or merge, at the front of the sequence in their order after every block.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tokens_helpers import CLASSES, IMG, batches
from torch import Tensor, nn

import reidprune
from reidprune.compress.tokens import attach_reducers, prune_tokens
from reidprune.compress.tokens.amg import KeyValueReducer, SkipReducer
from reidprune.compress.tokens.pm import DensePruneMergeReducer, PruneMergeReducer
from reidprune.compress.tokens.tome import ToMeReducer
from reidprune.compress.tokens.topk import TopKReducer
from reidprune.models import create
from reidprune.models.vit import LayerScale, TokenState, VisionTransformer

PREFIX = 4  # class + dist + 2 registers
PATCHES = 8
METHODS = [
    ("amg", {"mode": "kv"}),
    ("amg", {"mode": "skip"}),
    ("topk", {"fuse": False}),
    ("topk", {"fuse": True}),
    ("pm", {}),
    ("tome", {}),
]


def prefix_vit(global_pool: str = "token") -> VisionTransformer:
    torch.manual_seed(0)
    vit = VisionTransformer(
        img_size=IMG,
        patch_size=4,
        embed_dim=16,
        num_heads=(2, 2, 2, 2),
        head_dim=8,
        num_classes=CLASSES,
        global_pool=global_pool,
        init_values=0.5,
        qk_norm=True,
        dist_token=True,
        reg_tokens=2,
    )
    with torch.no_grad():  # non-trivial LayerScale and qk-norm parameters, so that using them shows
        for name, param in vit.named_parameters():
            if name.endswith(("gamma", "q_norm.weight", "k_norm.weight", "q_norm.bias", "k_norm.bias")):
                param.add_(0.3 * torch.randn_like(param))
    return vit.eval()


def test_the_backbone_has_timm_names_for_its_prefix_tokens_layer_scale_and_qk_norm() -> None:
    vit = prefix_vit()
    names = set(vit.state_dict())
    assert {"cls_token", "dist_token", "reg_token", "blocks.0.ls1.gamma", "blocks.0.ls2.gamma"} <= names
    assert {"blocks.0.attn.q_norm.weight", "blocks.0.attn.k_norm.bias"} <= names
    assert vit.num_prefix_tokens == PREFIX and vit.num_tokens == PREFIX + PATCHES
    assert vit.reg_token.shape == (1, 2, 16) and vit.pos_embed.shape == (1, PREFIX + PATCHES, 16)
    assert isinstance(vit.blocks[0].ls1, LayerScale) and vit.blocks[0].attn.q_norm.normalized_shape == (8,)
    plain = VisionTransformer(img_size=IMG, patch_size=4, embed_dim=16, num_heads=(2,), head_dim=8)
    assert isinstance(plain.blocks[0].ls1, nn.Identity) and isinstance(
        plain.blocks[0].attn.k_norm, nn.Identity
    )


def test_the_block_applies_layer_scale_and_qk_norm() -> None:
    vit = prefix_vit()
    block, x = vit.blocks[1], torch.randn(2, PREFIX + PATCHES, 16)
    attn = block.attn
    h = block.norm1(x)
    qkv = attn.qkv(h).reshape(2, -1, 3, 2, 8).permute(2, 0, 3, 1, 4)
    q, k, v = attn.q_norm(qkv[0]), attn.k_norm(qkv[1]), qkv[2]
    a = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(-1) @ v
    y = x + block.ls1.gamma * attn.proj(a.transpose(1, 2).reshape(2, -1, 16))
    expected = y + block.ls2.gamma * block.mlp(block.norm2(y))
    torch.testing.assert_close(block.forward_dense(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_every_reducer_runs_and_keeps_every_prefix_token(method: str, options: dict) -> None:
    vit = prefix_vit()
    images = batches((3,))[0]["image"]
    reduced, _ = prune_tokens(vit, method, 0.4, batches(), **options)
    assert reduced.token_spec.num_prefix_tokens == PREFIX
    with torch.no_grad():
        tokens, state = reduced.forward_tokens(images)
        logits = reduced(images)
    assert logits.shape == (3, CLASSES) and torch.isfinite(logits).all()
    prefix = torch.arange(PREFIX).expand(3, -1)
    if state.slot is not None:  # dropping / merging reducers: prefix position i is current token i
        assert torch.equal(state.slot[:, :PREFIX], prefix)
        assert not bool(((state.slot[:, PREFIX:] >= 0) & (state.slot[:, PREFIX:] < PREFIX)).any())
    for block in reduced.blocks:
        reducer = block.reducer
        if isinstance(reducer, KeyValueReducer | SkipReducer):
            assert reducer.kept[:PREFIX].tolist() == list(range(PREFIX))
        if isinstance(reducer, PruneMergeReducer):
            assert reducer.source[:PREFIX].tolist() == list(range(PREFIX))
            assert bool((reducer.members >= PREFIX).all()) and bool((reducer.pruned >= PREFIX).all())
    assert reduced.restore_grid(tokens, state).shape == (3, PREFIX + PATCHES, 16)


def _remove_nothing(kind: str) -> nn.Module:
    n = PREFIX + PATCHES
    return {
        "kv": lambda: KeyValueReducer(range(n)),
        "skip": lambda: SkipReducer(range(n), n),
        "topk": lambda: TopKReducer(PATCHES, num_prefix_tokens=PREFIX),
        "tome": lambda: ToMeReducer(0, num_prefix_tokens=PREFIX),
        "pm": lambda: PruneMergeReducer(range(PATCHES), num_prefix_tokens=PREFIX),
        "dense-pm": lambda: DensePruneMergeReducer(n, n),
    }[kind]()


@pytest.mark.parametrize("kind", ["kv", "skip", "topk", "tome", "pm", "dense-pm"])
def test_reducers_that_remove_nothing_give_the_dense_model(kind: str) -> None:
    vit = prefix_vit()
    images = batches((3,))[0]["image"]
    with torch.no_grad():
        dense_tokens, _ = vit.forward_tokens(images)
        dense = vit(images)
        for block in vit.blocks:
            block.reducer = _remove_nothing(kind)
        tokens, state = vit.forward_tokens(images)
        torch.testing.assert_close(vit.restore_grid(tokens, state), dense_tokens, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(vit(images), dense, rtol=1e-5, atol=1e-5)


def test_tome_moves_prefix_tokens_of_set_b_back_to_the_front() -> None:
    # prefix positions 1 and 3 (dist, second register) are set-B tokens: after a merge they lead
    # the sequence again, and the merged count is r
    vit = prefix_vit()
    x = torch.randn(2, PREFIX + PATCHES, 16)
    block = vit.blocks[0]
    with torch.no_grad():
        dense = block.forward_dense(x)
        out, state = ToMeReducer(3, num_prefix_tokens=PREFIX)(block, x, TokenState())
    assert out.shape == (2, PREFIX + PATCHES - 3, 16)
    assert torch.equal(state.slot[:, :PREFIX], torch.arange(PREFIX).expand(2, -1))
    # a prefix token stands for itself only, so its features are the dense block's
    torch.testing.assert_close(out[:, :PREFIX], dense[:, :PREFIX], rtol=1e-5, atol=1e-6)
    assert torch.equal(state.size[:, :PREFIX], torch.ones(2, PREFIX, 1))


class TokensAndGrid(nn.Module):
    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        tokens, state = self.vit.forward_tokens(images)
        return self.vit.head(tokens[:, 0]), self.vit.restore_grid(tokens, state)


@pytest.mark.parametrize(("method", "options"), [METHODS[0], METHODS[3], METHODS[4], METHODS[5]])
def test_reduced_prefix_models_export_to_onnx_runtime(tmp_path, method: str, options: dict) -> None:
    reduced, _ = prune_tokens(prefix_vit(), method, 0.4, batches(), **options)
    wrapper = TokensAndGrid(reduced).eval()
    images = batches((2,))[0]["image"]
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (images,), str(path), dynamo=False, input_names=["images"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = [t.numpy() for t in wrapper(images)]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_a_reduced_prefix_model_saves_and_loads_exactly(tmp_path) -> None:
    torch.manual_seed(0)
    model = create(
        "vit_tiny_reid",
        img_size=list(IMG),
        patch_size=4,
        stride=4,
        embed_dim=16,
        head_dim=8,
        num_heads=[2, 2, 2],
        mlp_hidden=[32, 32, 32],
        num_classes=CLASSES,
        init_values=1e-1,
        qk_norm=True,
        dist_token=True,
        reg_tokens=2,
    ).eval()
    reduced, _ = prune_tokens(model, "tome", 0.3)
    assert reduced.arch.tokens["num_prefix_tokens"] == PREFIX
    reidprune.save(reduced, tmp_path / "m")
    loaded = reidprune.load(tmp_path / "m")
    assert loaded.arch == reduced.arch
    images = batches((2,))[0]["image"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).embedding, reduced.eval()(images).embedding, rtol=0, atol=0)


def test_spec_for_another_prefix_count_is_refused() -> None:
    vit = prefix_vit()
    spec = {"method": "tome", "num_tokens": PREFIX + PATCHES, "prop_attn": True, "r": [1, 0, 0, 0]}
    with pytest.raises(reidprune.errors.CompressionError, match="num_prefix_tokens=1 but the backbone has 4"):
        attach_reducers(vit, spec)
