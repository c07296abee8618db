"""timm ViTs -> reidprune ViTs (models.from_timm): identical outputs, save / load, ONNX, head pruning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import reidprune
from reidprune.compress.heads import prune_heads, remove_heads
from reidprune.models import create_from_checkpoint, from_timm
from reidprune.models.checkpoint_io import CheckpointError
from reidprune.models.vit import resample_pos_embed

timm = pytest.importorskip("timm")

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 5}

# (timm name, extra kwargs, input side): every feature from_timm converts, built small with random weights
FAMILIES = {
    "deit": ("deit_tiny_patch16_224", {"img_size": 64}, 64),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", {"img_size": 64}, 64),
    "deit3_layerscale": ("deit3_small_patch16_224", {"img_size": 64}, 64),
    "layerscale_qk_norm": ("deit3_small_patch16_224", {"img_size": 64, "qk_norm": True}, 64),
    "registers_gap": ("vit_base_patch16_reg4_gap_256", {"img_size": 64}, 64),
    "registers_cls_patch14": ("vit_small_patch14_reg4_dinov2", {"img_size": 56}, 56),
    "gap_fc_norm": ("vit_base_patch16_gap_224", {"img_size": 64}, 64),
    "patch32": ("vit_base_patch32_224", {"img_size": 64}, 64),
    "patch8_no_qkv_bias": ("vit_small_patch8_224", {"img_size": 32, "qkv_bias": False}, 32),
}


def _randomize(model: nn.Module) -> nn.Module:
    """Every parameter random (timm's init leaves LayerScale and tokens near zero, hiding mix-ups)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2 + (param.ndim == 1) * 0.5)
    return model.eval()


def _timm_model(family: str) -> tuple[nn.Module, torch.Tensor]:
    name, kwargs, side = FAMILIES[family]
    model = _randomize(timm.create_model(name, pretrained=False, **{**TINY, **kwargs}))
    return model, torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(2))


def _timm_outputs(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.forward_head(model.forward_features(images), pre_logits=True), model(images)


def _ours(model: nn.Module, images: torch.Tensor):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model.eval()(images)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_converted_model_gives_timms_pre_logits_feature_and_logits(family: str) -> None:
    source, images = _timm_model(family)
    converted = from_timm(source)
    feature, logits = _timm_outputs(source, images)
    out = _ours(converted, images)
    assert (out.embedding - feature).abs().max() <= 1e-5
    assert len(out.logits) == 1 and (out.logits[0] - logits).abs().max() <= 1e-5


@pytest.mark.parametrize("family", list(FAMILIES))
def test_converted_model_saves_and_loads_exactly(family: str, tmp_path) -> None:
    source, images = _timm_model(family)
    converted = from_timm(source)
    reidprune.save(converted, tmp_path / "m")
    loaded = reidprune.load(tmp_path / "m")
    assert loaded.arch == converted.arch
    before, after = _ours(converted, images), _ours(loaded, images)
    assert torch.equal(before.embedding, after.embedding) and torch.equal(before.logits[0], after.logits[0])


def test_the_arch_names_every_timm_feature() -> None:
    ls_qk, _ = _timm_model("layerscale_qk_norm")
    arch = from_timm(ls_qk).arch
    assert (arch.init_values, arch.qk_norm, arch.no_embed_class) == (
        ls_qk.blocks[0].ls1.init_values,
        True,
        True,
    )
    registers = from_timm(_timm_model("registers_gap")[0])
    assert (registers.arch.class_token, registers.arch.reg_tokens, registers.arch.global_pool) == (
        False,
        4,
        "avg",
    )
    assert registers.backbone.num_prefix_tokens == 4 and registers.backbone.reg_token.shape == (1, 4, 32)
    distilled = from_timm(_timm_model("deit_distilled")[0])
    assert distilled.arch.dist_token and distilled.backbone.num_prefix_tokens == 2
    assert len(distilled.head.classifiers) == 2  # timm's head and head_dist
    block = distilled.backbone.blocks[0]
    assert isinstance(block.ls1, nn.Identity) and isinstance(block.attn.q_norm, nn.Identity)


def test_a_name_builds_random_weights_and_a_state_dict_loads_into_its_name() -> None:
    source, images = _timm_model("deit_distilled")
    kwargs = {**TINY, "img_size": 64}
    by_state = from_timm(source.state_dict(), "deit_tiny_distilled_patch16_224", timm_kwargs=kwargs)
    assert torch.equal(_ours(by_state, images).logits[0], _timm_outputs(source, images)[1])
    checkpoint = {
        "model": {f"module.{k}": v for k, v in source.state_dict().items()}
    }  # DeiT's release layout
    by_file = from_timm(checkpoint, "deit_tiny_distilled_patch16_224", timm_kwargs=kwargs)
    assert torch.equal(by_file.backbone.dist_token, source.dist_token)
    by_name = from_timm("deit3_small_patch16_224", timm_kwargs=kwargs)
    assert by_name.arch.init_values is not None and by_name.arch.num_heads == [2, 2]


def test_weights_are_never_downloaded() -> None:
    with pytest.raises(CheckpointError, match=r"\['pretrained'\] not accepted"):
        from_timm("deit_tiny_patch16_224", timm_kwargs={"pretrained": True})


@pytest.mark.parametrize("family", ["deit3_layerscale", "registers_gap", "deit_distilled"])
def test_reid_size_resamples_the_position_embedding_and_gets_a_bnneck_head(family: str) -> None:
    source, _ = _timm_model(family)
    reid = from_timm(source, img_size=(64, 32), head="bnneck", num_classes=7)
    grid = (4, 2)
    prefix = 0 if source.no_embed_class else source.num_prefix_tokens
    expected = resample_pos_embed(source.pos_embed.detach(), grid, old_grid=(4, 4), num_prefix=prefix)
    assert torch.equal(reid.backbone.pos_embed, expected)
    assert torch.equal(reid.backbone.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    out = _ours(reid, torch.randn(3, 3, 64, 32))
    assert out.embedding.shape == (3, 32) and reid.arch.num_classes == 7
    assert reid.head.classifiers[0].weight.shape == (7, 32)


@pytest.mark.parametrize("family", ["deit3_layerscale", "deit_distilled", "registers_gap"])
def test_a_timm_state_dict_file_loads_through_create_from_checkpoint(family: str, tmp_path) -> None:
    # the plain importer reads LayerScale, qk-norm and prefix tokens from the keys and shapes
    source, images = _timm_model(family)
    torch.save(source.state_dict(), tmp_path / "timm.pth")
    side = images.shape[-1]
    model = create_from_checkpoint(
        "deit_tiny_patch16_224",
        tmp_path / "timm.pth",
        embed_dim=32,
        head_dim=16,
        depth=2,
        img_size=[side, side],
    )
    features = ("qk_norm", "class_token", "dist_token", "reg_tokens", "no_embed_class", "global_pool")
    converted = from_timm(source).arch
    assert [getattr(model.arch, f) for f in features] == [getattr(converted, f) for f in features]
    assert (model.arch.init_values is None) == (converted.init_values is None)
    assert (_ours(model, images).logits[0] - _timm_outputs(source, images)[1]).abs().max() <= 1e-5


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's notices
def test_a_converted_layerscale_qk_norm_model_exports_to_onnx(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from reidprune.export.onnx import export_onnx

    converted = from_timm(_timm_model("layerscale_qk_norm")[0]).eval()
    report = export_onnx(converted, tmp_path / "model.onnx", exporter="torchscript")
    assert report.check is not None and report.check.passed and report.check.max_abs_diff <= 1e-4


def test_head_pruning_runs_on_a_converted_layerscale_qk_norm_model() -> None:
    source, images = _timm_model("layerscale_qk_norm")
    converted = from_timm(source)
    # removing a head is exactly silencing it: its proj columns to zero
    silenced = from_timm(source)
    with torch.no_grad():
        silenced.backbone.blocks[0].attn.proj.weight[:, :16] = 0
    removed = remove_heads(converted, {"backbone.blocks.0.attn": [1]})  # keeps head 1 of block 0
    assert removed.arch.num_heads == [1, 2] and removed.arch.qk_norm and removed.arch.init_values
    assert (_ours(removed, images).logits[0] - _ours(silenced, images).logits[0]).abs().max() <= 1e-5
    batches = [{"image": images, "label": torch.zeros(2, dtype=torch.long)}]
    pruned, plan = prune_heads(converted, "entropy", num_remove=2, data=batches)
    assert sum(pruned.arch.num_heads) == 2 and plan.details["num_removed"] == 2
    assert _ours(pruned, images).logits[0].shape == (2, 5)


def _token_pool_without_class_token() -> nn.Module:
    model = timm.create_model("vit_base_patch16_reg4_gap_256", pretrained=False, **TINY, img_size=64)
    model.global_pool = "token"  # timm refuses to build it; a hand-edited model can still say so
    return model


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: timm.create_model("vit_small_patch16_18x2_224", **TINY),
            r"'vit_small_patch16_18x2_224'.*ParallelThingsBlock",
        ),
        (
            lambda: timm.create_model("vit_base_patch16_siglip_224", **TINY),
            r"'vit_base_patch16_siglip_224'.*global_pool='map'",
        ),
        (
            lambda: timm.create_model("vit_base_patch16_clip_224", **TINY),
            r"'vit_base_patch16_clip_224'.*pre_norm",
        ),
        (
            lambda: timm.create_model("cait_xxs24_224", **TINY),
            r"timm Cait 'cait_xxs24_224' is not a timm VisionTransformer",
        ),
        (
            lambda: timm.create_model("vit_base_patch16_rope_reg1_gap_256", **TINY),
            r"timm Eva .* is not a timm VisionTransformer",
        ),
        (_token_pool_without_class_token, r"class_token=False with global_pool='token'"),
        (lambda: nn.Linear(3, 3), r"timm Linear is not a timm VisionTransformer"),
    ],
    ids=["parallel_blocks", "map_pool", "clip_pre_norm", "cait", "eva_rope", "token_pool_no_cls", "not_timm"],
)
def test_unsupported_variants_are_refused_in_one_line(build, message: str) -> None:
    with pytest.raises(CheckpointError, match=message) as err:
        from_timm(build())
    assert "\n" not in str(err.value)
