"""prune_tokens / attach_reducers: the one-call API, its specs, errors, cascades and save / load."""

from __future__ import annotations

import pytest
import torch
from tokens_helpers import batches, tiny_vit

import reidprune
from reidprune.compress.heads.prune import prune_heads
from reidprune.compress.tokens import attach_reducers, current_spec, prune_tokens
from reidprune.errors import CompressionError
from reidprune.models import create

METHODS = [
    ("amg", {"mode": "kv"}),
    ("amg", {"mode": "skip"}),
    ("topk", {"fuse": True}),
    ("pm", {}),
    ("tome", {}),
]
IMG = [32, 16]  # patch 8: a 4 x 2 grid


def tiny_reid(name: str = "vit_tiny_reid", **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    size = {"embed_dim": 32, "num_heads": [2, 2, 2], "mlp_hidden": [64] * 3, "head_dim": 8, "num_classes": 3}
    return create(name, img_size=IMG, **{**size, **kwargs}).eval()


def reid_batches(sizes=(4, 3), cameras: bool = False) -> list[dict]:
    data = batches(sizes, img=tuple(IMG))
    if cameras:
        for b in data:
            b["camid"] = torch.arange(b["image"].shape[0]) % 2
    return data


def test_the_input_model_is_not_modified() -> None:
    model = tiny_vit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for method, options in METHODS:
        reduced, plan = prune_tokens(model, method, 0.4, batches(), **options)
        assert reduced is not model and reduced.compression_plan is plan
    assert all(block.reducer is None for block in model.blocks)
    assert getattr(model, "token_spec", None) is None and getattr(model, "compression_plan", None) is None
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: prune_tokens(m, "amg", 1.0, batches()), r"rate must be a number in \[0, 1\)"),
        (lambda m: prune_tokens(m, "amg", -0.1, batches()), "rate must be"),
        (lambda m: prune_tokens(m, "amg", "0.4", batches()), "rate must be"),
        (lambda m: prune_tokens(m, "prune-everything", 0.4), "unknown token method"),
        (lambda m: prune_tokens(m, "amg", 0.4), "needs calibration data"),
        (lambda m: prune_tokens(m, "pm", 0.4), "needs calibration data"),
        (lambda m: prune_tokens(m, "amg", 0.4, batches(), mdoe="kv"), r"unknown option\(s\) \['mdoe'\]"),
        (lambda m: prune_tokens(m, "amg", 0.4, batches(), mode="qkv"), "mode must be"),
        (lambda m: prune_tokens(m, "amg", 0.4, batches(), min_keep=0), "min_keep"),
        (lambda m: prune_tokens(m, "topk", 0.4, locations=[1, 7]), "not a block index"),
        (lambda m: prune_tokens(m, "tome", 0.4, r=[1, 2]), "4 blocks"),
        (lambda m: prune_tokens(m, "tome", 0.4, r=[5, 0, 0, 0]), r"r=5 but block 0 sees 9 tokens"),
        (lambda m: prune_tokens(torch.nn.Linear(2, 2), "topk", 0.4), "needs a ViT backbone"),
    ],
)
def test_bad_requests_fail_before_any_work(call, message: str) -> None:
    with pytest.raises(CompressionError, match=message):
        call(tiny_vit())


def test_a_single_tome_r_is_capped_at_what_one_matching_can_merge() -> None:
    _, plan = prune_tokens(tiny_vit(), "tome", 0.0, r=5)
    assert plan.details["r"] == [4, 2, 1, 0]  # 9 -> 5 -> 3 -> 2 tokens: CLS and one patch token


def test_only_amg_can_be_applied_again() -> None:
    reduced, _ = prune_tokens(tiny_vit(), "topk", 0.4)
    with pytest.raises(CompressionError, match="already has 'topk' token reduction"):
        prune_tokens(reduced, "amg", 0.2, batches())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"method": "amg", "mode": "kv", "num_tokens": 17, "kept": [None] * 4}, "num_tokens=17"),
        (
            {"method": "amg", "mode": "kv", "num_tokens": 9, "kept": [None] * 3},
            "has 3 entries but the backbone has 4",
        ),
        (
            {"method": "amg", "mode": "kv", "num_tokens": 9, "kept": [[1, 2], None, None, None]},
            "CLS is never removed",
        ),
        (
            {"method": "amg", "mode": "kv", "num_tokens": 9, "kept": [[0], None, None, None]},
            "keeps no patch token",
        ),
        (
            {"method": "amg", "mode": "kv", "num_tokens": 9, "kept": [[0, 9], None, None, None]},
            "outside 0..8",
        ),
        ({"method": "topk", "num_tokens": 9, "fuse": False, "keep": [0, None, None, None]}, "at least 1"),
        ({"method": "topk", "num_tokens": 9, "fuse": False, "keep": [4, 4, None, None]}, "keeps 4 of the 4"),
        (
            {"method": "pm", "num_tokens": 9, "dense": False, "segments": [[-1] * 8, None, None, None]},
            "no patch",
        ),
        (
            {"method": "pm", "num_tokens": 9, "dense": False, "segments": [[0, 2] * 4, None, None, None]},
            "each used",
        ),
        ({"method": "tome", "num_tokens": 9, "prop_attn": True, "r": [5, 0, 0, 0]}, "merges 0..4"),
        ({"method": "evit", "num_tokens": 9}, "'method' must be one of"),
        ({"method": "tome", "num_tokens": 9, "r": [0] * 4, "extra": 1}, "unknown keys"),
    ],
)
def test_specs_that_do_not_fit_the_model_are_refused(spec: dict, message: str) -> None:
    with pytest.raises(CompressionError, match=message):
        attach_reducers(tiny_vit(), spec)


def test_attach_reducers_with_none_removes_them() -> None:
    reduced, _ = prune_tokens(tiny_vit(), "amg", 0.4, batches())
    attach_reducers(reduced, None)
    assert all(block.reducer is None for block in reduced.blocks) and current_spec(reduced) is None


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_save_and_load_rebuild_a_token_reduced_model_exactly(tmp_path, method: str, options: dict) -> None:
    model = tiny_reid()
    reduced, plan = prune_tokens(model, method, 0.4, reid_batches(), **options)
    assert reduced.arch.tokens == current_spec(reduced).to_dict() and model.arch.tokens is None
    reidprune.save(reduced, tmp_path / "m")
    loaded = reidprune.load(tmp_path / "m")
    assert loaded.arch.tokens == reduced.arch.tokens
    assert loaded.compression_plan.method == plan.method == f"token-{method}"
    images = reid_batches((3,))[0]["image"]
    torch.testing.assert_close(loaded(images).embedding, reduced(images).embedding, rtol=0, atol=0)


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_heads_that_need_the_grid_work_on_reduced_models(method: str, options: dict) -> None:
    for name, extra, cameras in (("la_tiny_reid", {}, False), ("transreid_base", {"num_cameras": 2}, True)):
        kwargs = {"patch_size": 8, "stride": 8, "jpm_num_heads": [2, 2]} if name == "transreid_base" else {}
        model = tiny_reid(name, **extra, **kwargs)
        data = reid_batches(cameras=cameras)
        reduced, _ = prune_tokens(model, method, 0.4, data, **options)
        batch = data[0]
        out = reduced(batch["image"], batch["camid"])
        assert out.embedding.shape == model(batch["image"], batch["camid"]).embedding.shape
        assert torch.isfinite(out.embedding).all()


def test_token_pruning_after_uneven_head_pruning() -> None:
    model = tiny_vit(heads=(3, 1, 2, 2))
    for method, options in METHODS:
        reduced, _ = prune_tokens(model, method, 0.4, batches(), **options)
        assert reduced(batches((2,))[0]["image"]).shape == (2, 3)
    heads_first, _ = prune_heads(tiny_reid(), "magnitude", rate=0.34)
    assert heads_first.arch.num_heads != [2, 2, 2]
    both, plan = prune_tokens(heads_first, "amg", 0.3, reid_batches())
    assert [p["method"] for p in plan.previous] == ["head-magnitude"]
    assert both.arch.num_heads == heads_first.arch.num_heads
    assert both(reid_batches((2,))[0]["image"]).embedding.shape == (2, 32)


def test_head_pruning_after_token_pruning_keeps_the_reducers(tmp_path) -> None:
    tokens_first, _ = prune_tokens(tiny_reid(), "pm", 0.4, reid_batches())
    both, _ = prune_heads(tokens_first, "magnitude", rate=0.34)
    assert both.arch.tokens == tokens_first.arch.tokens
    assert all(
        (a.reducer is None) == (b.reducer is None)
        for a, b in zip(both.backbone.blocks, tokens_first.backbone.blocks, strict=True)
    )
    merge = [b.reducer.merge_weight for b in both.backbone.blocks if b.reducer is not None]
    reference = [b.reducer.merge_weight for b in tokens_first.backbone.blocks if b.reducer is not None]
    assert all(torch.equal(a, b) for a, b in zip(merge, reference, strict=True))
    reidprune.save(both, tmp_path / "m")
    images = reid_batches((2,))[0]["image"]
    torch.testing.assert_close(reidprune.load(tmp_path / "m")(images).embedding, both(images).embedding)
