"""Every token reducer and head pruning on ViTs converted from timm (reidprune.models.from_timm).

One tiny random model per converted family: DeiT, distilled DeiT (class + distillation token),
DeiT-III LayerScale, LayerScale + qk-norm, registers + global average pooling, registers + class
token at patch 14. Each goes through the public API only: `prune_tokens` with every method,
`prune_heads` then a token method, ONNX export checked in ONNX Runtime, save / load.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import reidprune
from reidprune.compress import prune_heads, prune_tokens
from reidprune.compress.tokens.amg import KeyValueReducer, SkipReducer
from reidprune.compress.tokens.pm import DensePruneMergeReducer, PruneMergeReducer
from reidprune.compress.tokens.tome import ToMeReducer
from reidprune.compress.tokens.topk import TopKReducer
from reidprune.models import from_timm

timm = pytest.importorskip("timm")

TINY = {"embed_dim": 32, "depth": 4, "num_heads": 2, "num_classes": 5}
CLASSES = 5

# family: (timm name, extra kwargs, input side, prefix tokens)
FAMILIES = {
    "deit": ("deit_tiny_patch16_224", {"img_size": 64}, 64, 1),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", {"img_size": 64}, 64, 2),
    "deit3_layerscale": ("deit3_small_patch16_224", {"img_size": 64}, 64, 1),
    "layerscale_qk_norm": ("deit3_small_patch16_224", {"img_size": 64, "qk_norm": True}, 64, 1),
    "registers_gap": ("vit_base_patch16_reg4_gap_256", {"img_size": 64}, 64, 4),
    "registers_cls_patch14": ("vit_small_patch14_reg4_dinov2", {"img_size": 56}, 56, 5),
}
PATCHES = 16  # 4 x 4 grid in every family

# (method, options): every reducer, in the settings the public API offers
METHODS = {
    "amg_kv": ("amg", {"mode": "kv"}),
    "amg_skip": ("amg", {"mode": "skip"}),
    "topk": ("topk", {"fuse": False}),
    "topk_fused": ("topk", {"fuse": True}),
    "pm": ("pm", {}),
    "tome": ("tome", {}),
}
NEEDS_DATA = {"amg", "pm"}


def _randomize(model: nn.Module) -> nn.Module:
    """Every parameter random (timm's init leaves LayerScale and tokens near zero, hiding mix-ups)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2 + (param.ndim == 1) * 0.5)
    return model.eval()


def converted(family: str) -> nn.Module:
    name, kwargs, _, _ = FAMILIES[family]
    source = _randomize(timm.create_model(name, pretrained=False, **{**TINY, **kwargs}))
    return from_timm(source).eval()


def images(family: str, n: int = 2, seed: int = 2) -> Tensor:
    side = FAMILIES[family][2]
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def calibration(family: str) -> list[dict[str, Tensor]]:
    """Two tiny labelled batches, as the loaders yield them."""
    gen = torch.Generator().manual_seed(3)
    return [
        {"image": images(family, 3, seed), "label": torch.randint(0, CLASSES, (3,), generator=gen)}
        for seed in (4, 5)
    ]


def reduce(model: nn.Module, family: str, key: str, rate: float = 0.4, **extra) -> nn.Module:
    method, options = METHODS[key]
    data = calibration(family) if method in NEEDS_DATA else None
    reduced, _ = prune_tokens(model, method, rate, data, **{**options, **extra})
    return reduced.eval()


def outputs(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        out = model.eval()(x)
    return out.embedding, out.logits[0]


@pytest.mark.parametrize("key", list(METHODS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_reducer_runs_on_every_converted_family_and_keeps_its_prefix_tokens(
    family: str, key: str
) -> None:
    model = converted(family)
    prefix = FAMILIES[family][3]
    assert model.backbone.num_prefix_tokens == prefix
    reduced = reduce(model, family, key)
    assert reduced.arch.tokens.get("num_prefix_tokens", 1) == prefix
    x = images(family, 3)
    with torch.no_grad():
        tokens, state = reduced.backbone.forward_tokens(x)
        embedding, logits = outputs(reduced, x)
    assert embedding.shape == (3, 32) and logits.shape == (3, CLASSES)
    assert torch.isfinite(logits).all()
    if state.slot is not None:  # prefix position i is carried by current token i, by nothing else
        assert torch.equal(state.slot[:, :prefix], torch.arange(prefix).expand(3, -1))
        patches = state.slot[:, prefix:]
        assert not bool(((patches >= 0) & (patches < prefix)).any())
    for block in reduced.backbone.blocks:  # reducers that pick positions never pick away a prefix token
        reducer = block.reducer
        if isinstance(reducer, KeyValueReducer | SkipReducer):
            assert reducer.kept[:prefix].tolist() == list(range(prefix))
        if isinstance(reducer, PruneMergeReducer):
            assert reducer.source[:prefix].tolist() == list(range(prefix))
            assert bool((reducer.members >= prefix).all()) and bool((reducer.pruned >= prefix).all())
    assert any(block.reducer is not None for block in reduced.backbone.blocks)
    assert reduced.backbone.restore_grid(tokens, state).shape == (3, prefix + PATCHES, 32)


def _remove_nothing(kind: str, prefix: int, class_token: bool) -> nn.Module:
    """Each reducer in the setting that keeps every token (its hooks still run)."""
    n = prefix + PATCHES
    return {
        "amg_kv": lambda: KeyValueReducer(range(n)),
        "amg_skip": lambda: SkipReducer(range(n), n),
        "topk": lambda: TopKReducer(PATCHES, num_prefix_tokens=prefix, class_token=class_token),
        "pm": lambda: PruneMergeReducer(range(PATCHES), num_prefix_tokens=prefix),
        "dense_pm": lambda: DensePruneMergeReducer(n, n),
        "tome": lambda: ToMeReducer(0, num_prefix_tokens=prefix),
    }[kind]()


@pytest.mark.parametrize("kind", ["amg_kv", "amg_skip", "topk", "pm", "dense_pm", "tome"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_reducer_that_removes_nothing_gives_the_converted_dense_model(family: str, kind: str) -> None:
    # fused top-k has no such setting: its fused token is always one more token
    model = converted(family)
    x = images(family)
    dense = outputs(model, x)
    backbone = model.backbone
    for block in backbone.blocks:
        block.reducer = _remove_nothing(kind, backbone.num_prefix_tokens, backbone.cls_token is not None)
    for got, expected in zip(outputs(model, x), dense, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key", list(METHODS))
def test_rate_zero_through_the_public_api_gives_the_converted_dense_model(key: str) -> None:
    model = converted("registers_cls_patch14")
    x = images("registers_cls_patch14")
    reduced = reduce(model, "registers_cls_patch14", key, 0.0)
    for got, expected in zip(outputs(reduced, x), outputs(model, x), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# after head pruning: another method per family than the export test's, every method at least once
AFTER_HEADS = {
    "deit": "pm",
    "deit_distilled": "amg_kv",
    "deit3_layerscale": "tome",
    "layerscale_qk_norm": "topk_fused",
    "registers_gap": "amg_skip",
    "registers_cls_patch14": "topk",
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_head_pruning_then_token_reduction_runs_on_every_converted_family(family: str) -> None:
    key = AFTER_HEADS[family]
    model = converted(family)
    pruned, plan = prune_heads(model, "entropy", num_remove=2, data=calibration(family))
    assert sum(pruned.arch.num_heads) == 6 and plan.details["num_removed"] == 2
    reduced = reduce(pruned, family, key)
    assert reduced.arch.num_heads == pruned.arch.num_heads
    assert reduced.arch.tokens.get("num_prefix_tokens", 1) == FAMILIES[family][3]
    embedding, logits = outputs(reduced, images(family))
    assert embedding.shape == (2, 32) and torch.isfinite(logits).all()


# one reducer per family, so that every method is exported on at least one prefix layout
EXPORTED = {
    "deit": "amg_skip",
    "deit_distilled": "tome",
    "deit3_layerscale": "topk",
    "layerscale_qk_norm": "amg_kv",
    "registers_gap": "pm",
    "registers_cls_patch14": "topk_fused",
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's notices
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_reduced_converted_model_exports_to_onnx_runtime(family: str, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from reidprune.export import export_onnx

    reduced = reduce(converted(family), family, EXPORTED[family])
    report = export_onnx(reduced, tmp_path / "model.onnx", exporter="torchscript", batch=2)
    assert report.check is not None and report.check.passed and report.check.max_abs_diff <= 1e-4


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_head_and_token_pruned_converted_model_saves_and_loads_exactly(family: str, tmp_path) -> None:
    model = converted(family)
    pruned, _ = prune_heads(model, "entropy", num_remove=1, data=calibration(family))
    reduced = reduce(pruned, family, EXPORTED[family])
    reidprune.save(reduced, tmp_path / "m")
    loaded = reidprune.load(tmp_path / "m")
    assert loaded.arch == reduced.arch
    x = images(family)
    for got, expected in zip(outputs(loaded, x), outputs(reduced, x), strict=True):
        assert torch.equal(got, expected)
