"""Foreign ViT checkpoints: timm / DeiT, TransReID, LA-Transformer, AMG pruned (uneven heads)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from reidprune.models import create, create_from_checkpoint, load_checkpoint
from reidprune.models.checkpoint_io import CheckpointError
from reidprune.models.import_vit import arch_from_checkpoint, register_extra_importer

timm = pytest.importorskip("timm")

SMALL = {
    "embed_dim": 32,
    "head_dim": 16,
    "patch_size": 8,
    "stride": 8,
    "img_size": [32, 16],
    "num_classes": 5,
}


def _save(tmp_path, payload, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(payload, path)
    return path


def _rename(state, rules):
    """Our keys -> a foreign naming, for building fake foreign checkpoints."""
    out = {}
    for key, value in state.items():
        for pattern, target in rules:
            if re.search(pattern, key):
                key = re.sub(pattern, target, key, count=1)
                break
        out[key] = value.clone()
    return out


def _eval_embedding(model, images, camids=None):
    model.eval()
    with torch.no_grad():
        return model(images, camids)


def test_timm_deit_tiny_gives_the_same_logits(tmp_path):
    reference = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    path = _save(tmp_path, {"model": reference.state_dict(), "epoch": 3})
    model = create("deit_tiny_patch16_224")
    result = load_checkpoint(model, path)
    assert result.format == "timm" and result.initialised == [] and result.resized == []
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = reference(images)
    out = _eval_embedding(model, images)
    torch.testing.assert_close(out.logits[0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out.embedding, reference.forward_head(reference.forward_features(images), pre_logits=True)
    )


def test_timm_vit_loads_at_another_input_size_with_resampled_pos_embed(tmp_path):
    from timm.layers import resample_abs_pos_embed

    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=7)
    state = source.state_dict()
    path = _save(tmp_path, state)
    model = create("deit_tiny_patch16_224", img_size=(128, 64), num_classes=7)
    result = load_checkpoint(model, path)
    assert result.resized == ["backbone.pos_embed"]
    # timm at 128x64 with timm's own bilinear resampling of the same weights
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=7, img_size=(128, 64))
    state = dict(state)
    state["pos_embed"] = resample_abs_pos_embed(
        state["pos_embed"], new_size=(8, 4), num_prefix_tokens=1, interpolation="bilinear", antialias=False
    )
    reference.load_state_dict(state)
    images = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        expected = reference.eval()(images)
    torch.testing.assert_close(_eval_embedding(model, images).logits[0], expected, atol=1e-5, rtol=0)


def test_timm_backbone_initialises_a_reid_model(tmp_path):
    source = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=(32, 16),
        patch_size=8,
        embed_dim=32,
        depth=3,
        num_heads=2,
    )
    path = _save(tmp_path, {"model": source.state_dict()})
    shape = {"num_heads": [2, 2], "jpm_num_heads": [2, 2], "mlp_hidden": [128, 128]}
    model = create("transreid_base", num_cameras=2, depth=3, **shape, **SMALL)
    result = load_checkpoint(model, path)
    assert "backbone.sie_embed" in result.initialised and "head.classifiers.0.weight" in result.initialised
    # TransReID initialises both JPM branches from the pretrained last block and norm
    for branch in (model.head.b1, model.head.b2):
        torch.testing.assert_close(branch.block.attn.qkv.weight, source.blocks[2].attn.qkv.weight)
        torch.testing.assert_close(branch.norm.weight, source.norm.weight)
    torch.testing.assert_close(model.backbone.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)


TO_TRANSREID = [
    (r"^backbone\.", "base."),
    (r"^head\.b([12])\.block\.", r"b\1.0."),
    (r"^head\.b([12])\.norm\.", r"b\1.1."),
    (r"^head\.necks\.0\.", "bottleneck."),
    (r"^head\.necks\.(\d)\.", r"bottleneck_\1."),
    (r"^head\.classifiers\.0\.", "classifier."),
    (r"^head\.classifiers\.(\d)\.", r"classifier_\1."),
]


def _transreid_checkpoint(model):
    state = _rename(model.state_dict(), TO_TRANSREID)
    # TransReID keeps the (unused) last block and norm in `base`, and an unused ImageNet classifier
    last = len(model.backbone.blocks)
    for key, value in model.head.b1.block.state_dict().items():
        state[f"base.blocks.{last}.{key}"] = torch.randn_like(value)
    for key, value in model.head.b1.norm.state_dict().items():
        state[f"base.norm.{key}"] = torch.randn_like(value)
    state["base.fc.weight"], state["base.fc.bias"] = torch.randn(1000, 32), torch.randn(1000)
    return {f"module.{k}": v for k, v in state.items()}  # saved from DataParallel


def test_transreid_checkpoint_loads_and_reproduces_outputs(tmp_path):
    original = create("transreid_base", num_cameras=3, depth=3, **SMALL)
    path = _save(tmp_path, _transreid_checkpoint(original))
    model = create("transreid_base", num_cameras=3, depth=3, **SMALL)
    assert load_checkpoint(model, path).format == "transreid"
    images, camids = torch.randn(2, 3, 32, 16), torch.tensor([2, 0])
    assert torch.equal(
        _eval_embedding(model, images, camids).embedding, _eval_embedding(original, images, camids).embedding
    )


def test_amg_pruned_transreid_builds_with_the_checkpoint_heads(tmp_path):
    # AMG removes heads block by block (and in neither JPM copy); shapes are the only record of it
    original = create(
        "transreid_base", num_cameras=2, num_heads=[3, 1, 2], jpm_num_heads=[2, 1], depth=4, **SMALL
    )
    path = _save(tmp_path, _transreid_checkpoint(original))
    model = create_from_checkpoint("transreid_base", path, depth=4, **{**SMALL, "num_classes": 751})
    assert model.arch.num_heads == [3, 1, 2] and model.arch.jpm_num_heads == [2, 1]
    assert (model.arch.num_classes, model.arch.num_cameras) == (5, 2)
    images, camids = torch.randn(2, 3, 32, 16), torch.tensor([1, 0])
    assert torch.equal(
        _eval_embedding(model, images, camids).embedding, _eval_embedding(original, images, camids).embedding
    )


def test_amg_transreid_checkpoint_as_released_loads_strictly(tmp_path):
    # entropy248/AMG finetune.py after a head -> token cascade: {state_dict, channels (0-d tensors),
    # heads / dims (numpy ints)}; every attention has a token_index, the JPM copies' all True (never
    # applied: disable_index), and token masks are in the running order of the token-skip blocks
    from reidprune.compress.tokens import attach_reducers

    original = create("transreid_base", num_cameras=2, num_heads=[3, 1, 2], depth=4, **SMALL).eval()
    state = {k.removeprefix("module."): v for k, v in _transreid_checkpoint(original).items()}
    everything = torch.ones(9, dtype=torch.bool)
    masks = {
        0: torch.tensor([1, 0, 1, 1, 0, 1, 1, 0, 1], dtype=torch.bool),  # order -> [0 2 3 5 6 8 1 4 7]
        1: everything,
        2: torch.tensor([1, 1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool),  # originals 0 2 5 6 1 4 7
        3: everything,  # the last base block: unused with JPM
    }
    for block, mask in masks.items():
        state[f"base.blocks.{block}.attn.token_index"] = mask
    state["b1.0.attn.token_index"] = state["b2.0.attn.token_index"] = everything
    path = _save(
        tmp_path,
        {
            "state_dict": state,
            "channels": [torch.tensor(6), torch.tensor(9), torch.tensor(7)],
            "heads": [np.int64(3), np.int64(1), np.int64(2)],
            "dims": [np.int64(48), np.int64(16), np.int64(32)],
        },
    )
    model = create_from_checkpoint("transreid_base", path, depth=4, **{**SMALL, "num_classes": 751})
    assert model.arch.num_heads == [3, 1, 2]
    assert model.arch.tokens == {
        "method": "amg",
        "mode": "skip",
        "num_tokens": 9,
        "kept": [[0, 2, 3, 5, 6, 8], None, [0, 1, 2, 4, 5, 6, 7]],
    }
    attach_reducers(original, model.arch.tokens)
    images, camids = torch.randn(2, 3, 32, 16), torch.tensor([1, 0])
    assert torch.equal(
        _eval_embedding(model, images, camids).embedding, _eval_embedding(original, images, camids).embedding
    )


def test_plain_transreid_baseline_without_jpm(tmp_path):
    original = create("transreid_base", jpm=False, depth=2, **SMALL)
    state = _rename(original.state_dict(), TO_TRANSREID)
    path = _save(tmp_path, state)
    model = create_from_checkpoint("transreid_base", path, depth=2, **SMALL)
    assert model.arch.jpm is False and len(model.backbone.blocks) == 2
    images = torch.randn(2, 3, 32, 16)
    assert torch.equal(_eval_embedding(model, images).embedding, _eval_embedding(original, images).embedding)


TO_LA = [
    (r"^backbone\.", "model."),
    (r"^head\.classifiers\.(\d+)\.reduce\.", r"classifier\1.add_block.0."),
    (r"^head\.classifiers\.(\d+)\.bn\.", r"classifier\1.add_block.1."),
    (r"^head\.classifiers\.(\d+)\.fc\.", r"classifier\1.classifier.0."),
]


def test_la_transformer_checkpoint_loads_and_reproduces_outputs(tmp_path):
    original = create("la_tiny", num_heads=[2, 1], depth=2, **SMALL)
    original.train()
    original(torch.randn(4, 3, 32, 16))  # move the ClassBlocks' BN running statistics
    state = _rename(original.state_dict(), TO_LA)
    # LA-Transformer also stores the aliases self.cls_token / self.pos_embed and timm's unused head
    state["cls_token"], state["pos_embed"] = state["model.cls_token"], state["model.pos_embed"]
    state["model.head.weight"], state["model.head.bias"] = torch.randn(1000, 32), torch.randn(1000)
    path = _save(tmp_path, state)
    model = create_from_checkpoint("la_tiny", path, **SMALL)
    assert model.arch.num_heads == [2, 1]
    images = torch.randn(3, 3, 32, 16)
    assert torch.equal(_eval_embedding(model, images).embedding, _eval_embedding(original, images).embedding)
    model.train(), original.train()
    torch.manual_seed(1)
    a = model(images).logits[2]
    torch.manual_seed(1)
    torch.testing.assert_close(a, original(images).logits[2])


def test_arch_from_checkpoint_reads_heads_mlp_and_bias():
    original = create("vit_tiny_reid", num_heads=[3, 1], mlp_hidden=[384, 100], qkv_bias=False, depth=2)
    arch = arch_from_checkpoint(original.state_dict(), create("vit_tiny_reid").arch)
    assert (arch.num_heads, arch.mlp_hidden, arch.qkv_bias) == ([3, 1], [384, 100], False)


def test_shape_mismatch_names_the_key_and_both_shapes(tmp_path):
    path = _save(tmp_path, create("vit_tiny_reid", num_heads=[3, 1], depth=2).state_dict())
    model = create("vit_tiny_reid", depth=2)
    with pytest.raises(
        CheckpointError,
        match=r"backbone\.blocks\.1\.attn\.qkv\.weight: checkpoint \(192, 192\) vs model \(576, 192\)",
    ):
        load_checkpoint(model, path)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = create("vit_tiny_reid", depth=2).state_dict()
    del state["backbone.blocks.1.norm2.weight"]
    state["backbone.blocks.1.extra"] = torch.zeros(1)
    path = _save(tmp_path, state)
    model = create("vit_tiny_reid", depth=2)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, path)
    assert "missing keys (1): backbone.blocks.1.norm2.weight" in str(err.value)
    assert "unexpected keys (1): backbone.blocks.1.extra" in str(err.value)
    result = load_checkpoint(model, path, strict=False)
    assert result.missing == ["backbone.blocks.1.norm2.weight"] and result.unexpected == [
        "backbone.blocks.1.extra"
    ]


def test_a_state_dict_of_another_kind_is_refused(tmp_path):
    path = _save(tmp_path, {"conv1.weight": torch.zeros(4, 3, 7, 7), "fc.weight": torch.zeros(2, 4)})
    with pytest.raises(CheckpointError, match=r"not a ViT checkpoint.*conv1\.weight"):
        load_checkpoint(create("vit_tiny_reid", depth=1), path)


def test_extra_importers_claim_keys_and_change_the_architecture(tmp_path, monkeypatch):
    from reidprune.models import import_vit

    monkeypatch.setattr(import_vit, "EXTRA_IMPORTERS", [])  # only the claimer of this test
    state = create("vit_tiny_reid", depth=2).state_dict()
    state["backbone.blocks.1.attn.extra_mask"] = torch.ones(129, dtype=torch.bool)
    path = _save(tmp_path, state)
    model = create("vit_tiny_reid", depth=2)
    with pytest.raises(CheckpointError, match=r"unexpected keys.*extra_mask"):
        load_checkpoint(model, path)

    def claim(found, arch):
        masks = {k: v for k, v in found.items() if k.endswith("attn.extra_mask")}
        if not masks:
            return found, arch
        kept = {k: v for k, v in found.items() if k not in masks}
        return kept, type(arch)(**{**arch.__dict__, "head_options": {"neck_feat": "before"}})

    register_extra_importer(claim)
    with pytest.raises(CheckpointError, match="changes the architecture \\(head_options\\)"):
        load_checkpoint(model, path)
    rebuilt = create_from_checkpoint("vit_tiny_reid", path, depth=2)
    assert rebuilt.arch.head_options == {"neck_feat": "before"}


def _timm_avg_pool_vit():
    """A tiny timm ViT pooled like an MAE fine-tune: mean of the patch tokens, then fc_norm."""
    from timm.models.vision_transformer import VisionTransformer

    reference = VisionTransformer(
        img_size=(32, 16), patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5, global_pool="avg"
    )
    for p in reference.parameters():  # away from the initial LayerNorm ones / zeros
        torch.nn.init.normal_(p, std=0.2)
    return reference.eval()


def test_timm_global_average_pooling_with_fc_norm_converts_with_identical_outputs(tmp_path):
    from reidprune.models import load, save

    reference = _timm_avg_pool_vit()
    assert "fc_norm.weight" in reference.state_dict() and "norm.weight" not in reference.state_dict()
    path = _save(tmp_path, {"model": reference.state_dict(), "epoch": 99})
    shape = {"img_size": [32, 16], "patch_size": 8, "embed_dim": 32, "depth": 2, "head_dim": 16}
    mae = create_from_checkpoint("mae_base_patch16_224", path, **shape)
    # a CLS-token entry takes the pooling from the checkpoint's keys
    deit = create_from_checkpoint("deit_tiny_patch16_224", path, **shape)
    assert (
        (deit.arch.global_pool, deit.arch.fc_norm)
        == (mae.arch.global_pool, mae.arch.fc_norm)
        == ("avg", True)
    )
    images = torch.randn(3, 3, 32, 16)
    with torch.no_grad():
        expected = reference(images)
    for model in (mae, deit, load(save(mae, tmp_path / "mae"))):
        torch.testing.assert_close(_eval_embedding(model, images).logits[0], expected, atol=1e-5, rtol=0)


def test_a_pooled_checkpoint_into_a_cls_token_model_names_the_fix(tmp_path):
    path = _save(tmp_path, _timm_avg_pool_vit().state_dict())
    model = create(
        "deit_tiny_patch16_224", img_size=[32, 16], patch_size=8, embed_dim=32, depth=2, head_dim=16
    )
    with pytest.raises(CheckpointError, match=r"fc_norm.*global_pool='avg'.*mae_base_patch16_224"):
        load_checkpoint(model, path)
