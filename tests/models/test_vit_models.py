"""ViT family: architecture, registry entries, heads and their outputs."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from reidprune.config import ConfigError
from reidprune.models import arch_config, build, create, list_models
from reidprune.models.reid_heads import jigsaw_shuffle, row_stripes
from reidprune.models.vit import Attention, TokenState
from reidprune.models.vit_models import ViTArch, attention_params

VIT_ENTRIES = [
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "deit_base_patch16_224",
    "vit_base_patch16_224",
    "transreid_base",
    "transreid_small",
    "la_tiny",
    "la_small",
    "la_base",
    "vit_tiny_reid",
    "la_tiny_reid",
]

# small dims for forward tests: 2 blocks of 2 heads x 16, D 32, 32x16 input with 8x8 patches -> 4x2 grid
SMALL = {
    "embed_dim": 32,
    "head_dim": 16,
    "patch_size": 8,
    "stride": 8,
    "img_size": [32, 16],
    "num_classes": 5,
    "depth": 3,
}


def meta_params(arch: ViTArch) -> int:
    with torch.device("meta"):
        model = build(arch)
    return sum(p.numel() for p in model.parameters())


def test_every_documented_entry_is_registered_with_a_docstring():
    registered = set(list_models())
    for name in VIT_ENTRIES:
        assert name in registered
        arch = arch_config(name)
        assert arch.family == "vit"


@pytest.mark.parametrize(
    ("name", "millions"),
    [
        ("deit_tiny_patch16_224", 5.717),  # timm deit_tiny_patch16_224: 5,717,416
        ("deit_small_patch16_224", 22.051),  # 22,050,664
        ("deit_base_patch16_224", 86.568),  # 86,567,656
    ],
)
def test_parameter_counts_match_timm(name, millions):
    assert meta_params(arch_config(name)) / 1e6 == pytest.approx(millions, abs=1e-3)


def test_transreid_small_is_the_old_timm_vit_small():
    arch = arch_config("transreid_small")
    assert (arch.embed_dim, arch.depth, arch.head_dim, arch.qkv_bias) == (768, 8, 96, False)
    assert arch.num_heads == [8] * 7 and arch.jpm_num_heads == [8, 8]  # 7 backbone blocks + b1/b2
    assert arch.mlp_hidden == [2304] * 7
    model = build(arch_config("transreid_small", depth=2, img_size=[64, 32]))
    attn = model.backbone.blocks[0].attn
    assert attn.scale == pytest.approx(768**-0.5)
    assert attn.qkv.bias is None and attn.qkv.weight.shape == (3 * 8 * 96, 768)


def test_transreid_base_defaults_and_grid():
    arch = arch_config("transreid_base", num_cameras=6)
    assert arch.img_size == [256, 128] and arch.stride == 12 and arch.grid_size == (21, 10)
    assert arch_config("transreid_base", stride=11).grid_size == (22, 11)
    assert len(arch.num_heads) == 11 and arch.depth == 12 and arch.num_cameras == 6


def test_uniform_kwargs_and_unknown_ones():
    arch = arch_config("la_tiny", num_classes=702, img_size=(256, 128), stride=16, drop_path=0.1)
    assert (arch.num_classes, arch.img_size, arch.grid_size, arch.drop_path) == (
        702,
        [256, 128],
        (16, 8),
        0.1,
    )
    with pytest.raises(ConfigError, match=r"unknown argument.*'sie_cameras'"):
        arch_config("la_tiny", sie_cameras=6)
    with pytest.raises(ConfigError, match=r"unknown option.*'lambda'"):
        create("la_tiny", head_options={"lambda": 3.0}, **SMALL)
    with pytest.raises(ConfigError, match="key 'mlp_hidden'"):
        create("vit_tiny_reid", num_heads=[3, 3], mlp_hidden=[384])


def test_uneven_heads_build_per_block_attention():
    model = create("vit_tiny_reid", num_heads=[3, 1, 2], depth=3, num_classes=4)
    heads = [m.num_heads for m in model.modules() if isinstance(m, Attention)]
    assert heads == [3, 1, 2]
    assert model.backbone.blocks[1].attn.qkv.weight.shape == (3 * 1 * 64, 192)


def test_jpm_branches_are_attention_blocks_with_their_own_heads():
    model = create("transreid_base", jpm_num_heads=[2, 1], num_heads=[2, 2], **{**SMALL, "depth": 3})
    assert len(model.backbone.blocks) == 2
    assert isinstance(model.backbone.norm, nn.Identity)  # b1 / b2 carry the final norm
    assert model.head.b1.block.attn.num_heads == 2 and model.head.b2.block.attn.num_heads == 1
    # TransReID's drop-path ramp over all 3 layers: 0, 0.05, and 0.1 for the b1/b2 copies
    arch = arch_config("transreid_base", **{**SMALL, "depth": 3})
    ramp = create("transreid_base", **{**SMALL, "depth": 3})
    assert [b.drop_path.prob for b in ramp.backbone.blocks] == pytest.approx([0.0, 0.05])
    assert ramp.head.b1.block.drop_path.prob == pytest.approx(arch.drop_path)


@pytest.mark.parametrize("name", VIT_ENTRIES)
def test_outputs_train_and_eval(name):
    model = create(name, **SMALL)
    arch = model.arch
    images = torch.randn(4, 3, 32, 16)
    camids = torch.tensor([0, 1, 0, 1])
    model.train()
    out = model(images, camids)
    dim = arch.embed_dim
    expected_logits = {"linear": 1, "bnneck": 1, "la": 4, "transreid": 5}[arch.head]
    assert len(out.logits) == expected_logits and all(t.shape == (4, 5) for t in out.logits)
    assert len(out.features) == expected_logits and all(t.shape == (4, dim) for t in out.features)
    model.eval()
    with torch.no_grad():
        out = model(images, camids)
    embedding_dim = {"linear": dim, "bnneck": dim, "la": 4 * dim, "transreid": 5 * dim}[arch.head]
    assert out.embedding.shape == (4, embedding_dim)
    assert len(out.logits) == (1 if arch.head == "linear" else 0)


def test_sie_requires_camids_and_uses_them():
    model = create("transreid_base", num_cameras=3, **SMALL).eval()
    images = torch.randn(2, 3, 32, 16)
    with pytest.raises(ValueError, match="camids"):
        model(images)
    a = model(images, torch.tensor([0, 0])).embedding
    b = model(images, torch.tensor([0, 2])).embedding
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])


def test_jigsaw_shuffle_matches_transreid_on_an_odd_count():
    # patches p0..p6: rotate left by shift-1 = 4 -> p4 p5 p6 p0 p1 p2 p3, pad with the second-to-last
    # (p2), two groups interleaved -> p4 p1 p5 p2 p6 p3 p0 p2
    patches = torch.arange(7.0).reshape(1, 7, 1)
    assert jigsaw_shuffle(patches, shift=5, groups=2).flatten().tolist() == [4, 1, 5, 2, 6, 3, 0, 2]
    even = torch.arange(8.0).reshape(1, 8, 1)  # 4 5 6 7 0 1 2 3 -> 4 0 5 1 6 2 7 3
    assert jigsaw_shuffle(even, shift=5, groups=2).flatten().tolist() == [4, 0, 5, 1, 6, 2, 7, 3]


def test_row_stripes_are_row_means():
    patches = torch.arange(8.0).reshape(1, 8, 1)  # a 4x2 grid, raster order
    assert row_stripes(patches, 4).flatten().tolist() == [0.5, 2.5, 4.5, 6.5]
    assert row_stripes(patches, 2).flatten().tolist() == [1.5, 5.5]


def test_la_embedding_is_unit_norm_concat_of_stripes():
    model = create("la_tiny", **SMALL).eval()
    images = torch.randn(3, 3, 32, 16)
    with torch.no_grad():
        out = model(images)
        tokens, _ = model.backbone.forward_tokens(images)
    stripes = tokens[:, 1:].reshape(3, 4, 2, -1).mean(2)  # 4 grid rows
    expected = (stripes / stripes.norm(dim=-1, keepdim=True) / math.sqrt(4)).flatten(1)
    torch.testing.assert_close(out.embedding, expected)
    torch.testing.assert_close(out.embedding.norm(dim=1), torch.ones(3))


def test_la_training_features_blend_cls_and_stripes():
    model = create("la_tiny", **SMALL).train()
    images = torch.randn(3, 3, 32, 16)
    out = model(images)
    model.eval()
    with torch.no_grad():
        tokens, _ = model.backbone.forward_tokens(images)
    stripes = tokens[:, 1:].reshape(3, 4, 2, -1).mean(2)
    torch.testing.assert_close(out.features[1].detach(), (tokens[:, 0] + 8 * stripes[:, 1]) / 9)


def _transreid_reference(model: nn.Module, images: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
    """TransReID's JPM inference written step by step: one b2 call per chunk, shuffle by view/transpose."""
    backbone, head = model.backbone, model.head
    x = backbone.embed(images, camids)
    for block in backbone.blocks:
        x = block.forward_dense(x)
    g = head.b1.norm(head.b1.block.forward_dense(x))[:, 0]
    cls, patches = x[:, :1], x[:, 1:]
    chunk = patches.shape[1] // 4
    shifted = torch.cat([x[:, 5:], x[:, 1:5]], dim=1)
    if shifted.shape[1] % 2:
        shifted = torch.cat([shifted, shifted[:, -2:-1]], dim=1)
    b, n, d = shifted.shape
    shuffled = shifted.view(b, 2, n // 2, d).transpose(1, 2).reshape(b, n, d)
    locals_ = [
        head.b2.norm(
            head.b2.block.forward_dense(torch.cat([cls, shuffled[:, i * chunk : (i + 1) * chunk]], 1))
        )[:, 0]
        for i in range(4)
    ]
    return torch.cat([g, *(f / 4 for f in locals_)], dim=1)


def test_jpm_inference_matches_transreid_procedure():
    # 48x32 input, patch 8 stride 6 -> 8x5 = 40 patches: chunks of 10
    model = create("transreid_base", num_cameras=2, **{**SMALL, "img_size": [48, 32], "stride": 6}).eval()
    images, camids = torch.randn(2, 3, 48, 32), torch.tensor([1, 0])
    with torch.no_grad():
        torch.testing.assert_close(
            model(images, camids).embedding, _transreid_reference(model, images, camids)
        )


class _PermuteTokens(nn.Module):
    """A reducer that reverses the patch order before the block and records where tokens came from."""

    def forward(self, block, x, state):
        n = x.shape[1]
        order = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(n - 1, 0, -1)])
        source = order if state.source is None else state.source[0][order]
        x = block.forward_dense(x[:, order])
        return x, TokenState(source=source.expand(x.shape[0], -1), size=None)


@pytest.mark.parametrize("name", ["la_tiny", "transreid_base"])
def test_grid_heads_restore_token_order(name):
    model = create(name, **SMALL).eval()
    images = torch.randn(2, 3, 32, 16)
    camids = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        dense = model(images, camids).embedding
        model.backbone.blocks[0].reducer = _PermuteTokens()
        permuted = model(images, camids).embedding
    torch.testing.assert_close(permuted, dense, atol=1e-5, rtol=1e-5)


def test_tokens_spec_calls_the_token_module(monkeypatch):
    from reidprune.models import vit_models

    calls = []
    monkeypatch.setattr(
        vit_models, "attach_reducers", lambda model, spec: calls.append((type(model).__name__, spec))
    )
    create("vit_tiny_reid", tokens={"method": "amg", "keep": [1, 2]}, **SMALL)
    assert calls == [("ViTReID", {"method": "amg", "keep": [1, 2]})]


def test_attention_params_from_the_architecture_alone():
    # AMG's "MSA param" counts q/k/v/proj weights and biases plus the boolean token_index
    # parameter (197 entries per block). LA-Tiny with one head per block: 0.60 M (amg.md 9.3).
    tiny = arch_config("la_tiny", num_heads=[1] * 12)
    assert attention_params(tiny) == 12 * (3 * 64 * 192 + 3 * 64 + 192 * 64 + 192)  # 594,432
    assert round((attention_params(tiny) + 12 * 197) / 1e6, 2) == 0.60
    # LA-Base keeping 108 of 144 heads: 21.3 M (README; 21.27 M by the formula)
    base = arch_config("la_base", num_heads=[9] * 12)
    assert attention_params(base) == 108 * (4 * 64 * 768 + 3 * 64) + 12 * 768  # 21,263,616
    assert round((attention_params(base) + 12 * 197) / 1e6, 2) == 21.27
    # unpruned LA-Base: 28.35 M
    assert round((attention_params(arch_config("la_base")) + 12 * 197) / 1e6, 2) == 28.35


def test_attention_params_agree_with_the_built_modules():
    arch = arch_config("transreid_base", num_heads=[3, 1, 2], jpm_num_heads=[2, 1], **{**SMALL, "depth": 4})
    model = build(arch)
    attn = [m for m in model.modules() if isinstance(m, Attention)]
    built = sum(p.numel() for m in attn for p in m.parameters())
    assert attention_params(arch, include_branches=True) == built
    backbone_only = sum(p.numel() for b in model.backbone.blocks for p in b.attn.parameters())
    assert attention_params(arch) == backbone_only


def test_pixels_no_patch_covers_are_warned_about():
    from reidprune.models.vit_models import uncovered_pixels

    with pytest.warns(
        UserWarning, match=r"img_size \[250, 128\] is not a multiple of patch_size 16: the last 10"
    ):
        model = create("vit_tiny_reid", depth=1, img_size=[250, 128], patch_size=16, stride=16)
    assert uncovered_pixels(model.arch) == (10, 0)
    # overlapping patches (TransReID: stride 12 at 256x128) leave 4 columns by design: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create("vit_tiny_reid", depth=1, img_size=[256, 128], patch_size=16, stride=12)
