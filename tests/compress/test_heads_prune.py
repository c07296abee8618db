"""prune_heads / remove_heads on real registry models: exact outputs, shapes, counts, plans, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import reidprune
from reidprune.compress.heads import HeadEntropy, head_slots, prune_heads, remove_heads, split_rounds
from reidprune.errors import CompressionError
from reidprune.measure import count_params
from reidprune.models import create


def tiny_reid(depth: int = 2) -> nn.Module:
    """vit_tiny_reid cut to `depth` blocks: 128x64 input, 128 patches + CLS, D 192, 3 heads of 64."""
    return create("vit_tiny_reid", depth=depth, num_classes=5).eval()


def tiny_transreid() -> nn.Module:
    """transreid_small's attention (old ViT-S: 8 heads of 96, scale 768^-0.5, no qkv bias) in a narrow
    model (D 96, MLP 192) with 1 backbone block + the JPM copies b1 / b2, SIE for 2 cameras."""
    return create(
        "transreid_small",
        depth=2,
        img_size=(64, 32),
        num_cameras=2,
        num_classes=5,
        embed_dim=96,
        mlp_hidden=[192],
    ).eval()


def images(model: nn.Module, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *model.arch.img_size)


def silence_heads(model: nn.Module, heads: dict[str, list[int]]) -> None:
    """Zero the q/k/v rows and proj columns of the given heads: they contribute exactly nothing."""
    with torch.no_grad():
        for path, indices in heads.items():
            attn = model.get_submodule(path)
            h, d = attn.num_heads, attn.head_dim
            qkv = attn.qkv.weight.view(3, h, d, -1)
            proj = attn.proj.weight.view(-1, h, d)
            for i in indices:
                qkv[:, i] = 0.0
                proj[:, :, i] = 0.0
                if attn.qkv.bias is not None:
                    attn.qkv.bias.view(3, h, d)[:, i] = 0.0


def test_removing_heads_without_output_columns_keeps_outputs_exactly() -> None:
    model = tiny_reid().double()  # float64: summation-order noise far below the 1e-6 asked for
    silent = {"backbone.blocks.0.attn": [1], "backbone.blocks.1.attn": [0, 2]}
    silence_heads(model, silent)
    x = images(model).double()
    pruned = remove_heads(model, {"backbone.blocks.0.attn": [0, 2], "backbone.blocks.1.attn": [1]})
    assert pruned.arch.num_heads == [2, 1] and pruned.backbone.pos_embed.dtype == torch.float64
    torch.testing.assert_close(pruned(x).embedding, model(x).embedding, atol=1e-6, rtol=0)


def test_magnitude_finds_silent_heads_in_a_jpm_model_and_outputs_stay_exact() -> None:
    model = tiny_transreid().double()
    silent = {"backbone.blocks.0.attn": [3, 5], "head.b1.block.attn": [0], "head.b2.block.attn": [7]}
    silence_heads(model, silent)
    x, cams = images(model).double(), torch.tensor([0, 1])
    pruned, plan = prune_heads(model, "magnitude", num_remove=4)
    assert pruned.arch.num_heads == [6]
    assert pruned.arch.jpm_num_heads == [7, 7]
    assert [layer["removed"] for layer in plan.details["layers"]] == [[3, 5], [0], [7]]
    # head_dim and the old ViT-S softmax scale (768^-0.5, not 96^-0.5) stay as trained
    attn = pruned.get_submodule("head.b2.block.attn")
    assert (attn.head_dim, attn.scale) == (96, 768**-0.5)
    torch.testing.assert_close(pruned(x, cams).embedding, model(x, cams).embedding, atol=1e-6, rtol=0)


def test_pruned_shapes_and_parameter_counts_are_exact() -> None:
    model = tiny_reid()
    before = sum(p.numel() for p in model.parameters())
    pruned = remove_heads(model, {"backbone.blocks.0.attn": [2], "backbone.blocks.1.attn": [0, 1]})
    attn0 = pruned.backbone.blocks[0].attn
    assert tuple(attn0.qkv.weight.shape) == (3 * 1 * 64, 192)
    assert tuple(attn0.qkv.bias.shape) == (3 * 64,)
    assert tuple(attn0.proj.weight.shape) == (192, 64)
    assert tuple(pruned.backbone.blocks[1].attn.proj.weight.shape) == (192, 128)
    per_head = 3 * 64 * 192 + 3 * 64 + 192 * 64  # q/k/v rows with bias + proj columns
    assert sum(p.numel() for p in pruned.parameters()) == before - 3 * per_head


def test_kept_heads_carry_their_own_weights_in_order() -> None:
    model = tiny_reid(depth=1)
    pruned = remove_heads(model, {"backbone.blocks.0.attn": [0, 2]})
    old, new = model.backbone.blocks[0].attn, pruned.backbone.blocks[0].attn
    old_qkv, new_qkv = old.qkv.weight.view(3, 3, 64, 192), new.qkv.weight.view(3, 2, 64, 192)
    assert torch.equal(new_qkv[:, 1], old_qkv[:, 2])  # k, q, v rows of head 2 moved to slot 1
    assert torch.equal(new.proj.weight[:, 64:], old.proj.weight[:, 128:])
    assert torch.equal(new.proj.bias, old.proj.bias)


def test_the_input_model_is_never_modified() -> None:
    model = tiny_reid()
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    arch_heads = list(model.arch.num_heads)
    pruned, _ = prune_heads(model, "random", rate=0.5, seed=3)
    assert model.arch.num_heads == arch_heads and not hasattr(model, "compression_plan")
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert pruned.training  # same mode as the input
    assert all(p.data_ptr() not in {q.data_ptr() for q in model.parameters()} for p in pruned.parameters())


def test_a_block_never_loses_its_last_head() -> None:
    model = tiny_reid(depth=3)
    pruned, _ = prune_heads(model, "random", num_remove=6, seed=0)  # 9 heads, 6 removable
    assert pruned.arch.num_heads == [1, 1, 1]
    one_left = remove_heads(model, {"backbone.blocks.0.attn": [0]})  # heads [1, 3, 3]
    with pytest.raises(CompressionError, match=r"cannot remove 5 heads.*at most 4 can go"):
        prune_heads(one_left, "random", num_remove=5)


def test_random_is_reproducible_and_rate_counts_current_heads() -> None:
    model = tiny_reid(depth=3)
    first, plan = prune_heads(model, "random", rate=0.5, seed=11)  # floor(0.5 * 9) = 4
    second, _ = prune_heads(model, "random", rate=0.5, seed=11)
    assert plan.details["num_removed"] == 4 and plan.rate == 0.5
    assert first.arch.num_heads == second.arch.num_heads and sum(first.arch.num_heads) == 5
    # a second step counts the 5 heads that are left: floor(0.5 * 5) = 2
    third, plan3 = prune_heads(first, "random", rate=0.5, seed=11)
    assert sum(third.arch.num_heads) == 3
    assert plan3.previous[0]["details"]["num_heads"] == first.arch.num_heads


def calibration_batches(model: nn.Module, sizes: tuple[int, ...] = (3, 1)) -> list[dict[str, torch.Tensor]]:
    return [{"image": images(model, b), "label": torch.zeros(b, dtype=torch.long)} for b in sizes]


def test_entropy_removes_the_heads_with_uniform_attention() -> None:
    model = tiny_reid()
    # q = 0 gives logits 0 for every key: a uniform map over the 129 keys, the maximum entropy
    with torch.no_grad():
        for path, head in (("backbone.blocks.0.attn", 2), ("backbone.blocks.1.attn", 0)):
            model.get_submodule(path).qkv.weight.view(3, 3, 64, 192)[0, head] = 0.0
            model.get_submodule(path).qkv.bias.view(3, 3, 64)[0, head] = 0.0
    pruned, plan = prune_heads(
        model, "entropy", num_remove=2, data=calibration_batches(model), depth_weight=0.0
    )
    assert [layer["removed"] for layer in plan.details["layers"]] == [[2], [0]]
    assert plan.details["layers"][0]["scores"][2] == pytest.approx(math.log2(129), abs=1e-5)
    assert plan.details["calibration_maps"] == {"backbone.blocks.0.attn": 4, "backbone.blocks.1.attn": 4}
    assert plan.method == "head-entropy" and pruned.compression_plan is plan


def test_entropy_from_a_shared_statistic_matches_its_own_pass() -> None:
    from reidprune.compress.calibration import calibrate
    from reidprune.compress.tokens.scores import TaylorKeyScore

    model = tiny_transreid()
    batches = [{**b, "camid": torch.arange(b["image"].shape[0]) % 2} for b in calibration_batches(model)]
    # one pass feeds the token scores (which need gradients) and the head entropies together
    taylor, stat = TaylorKeyScore(), HeadEntropy()
    calibrate(model, batches, [taylor, stat])
    assert set(taylor.sums) == set(stat.names)
    assert stat.num_maps("head.b2.block.attn") == 4 * 4  # b2 runs once per image on each of 4 chunks
    _, shared_plan = prune_heads(model, "entropy", rate=0.25, statistic=stat, depth_weight=0.02)
    _, own_plan = prune_heads(model, "entropy", rate=0.25, data=batches, depth_weight=0.02)
    assert shared_plan.details["layers"] == own_plan.details["layers"]
    # removed = the 6 highest entropies weighted by 1 + 0.02 k (k = 0 for the backbone block, 1 for
    # b1 and b2, which are both the last layer)
    entropies = stat.entropies()
    removed, kept = [], []
    for slot, layer in zip(head_slots(model), own_plan.details["layers"], strict=True):
        weighted = entropies[slot.path] * (1.0 if slot.depth == 0 else 1.02)
        removed += weighted[layer["removed"]].tolist()
        kept += weighted[layer["kept"]].tolist()
    assert len(removed) == 6 and min(removed) >= max(kept)


def test_heads_after_tokens_keep_the_token_spec_and_the_plan_history() -> None:
    from reidprune.compress.tokens import prune_tokens

    reduced, token_plan = prune_tokens(tiny_reid(depth=3).double(), method="topk", rate=0.3)
    silence_heads(reduced, {"backbone.blocks.1.attn": [2], "backbone.blocks.2.attn": [0]})
    pruned, plan = prune_heads(reduced, "magnitude", num_remove=2)
    assert pruned.arch.tokens == reduced.arch.tokens is not None
    assert pruned.arch.num_heads == [3, 2, 2]
    assert plan.previous == [token_plan.step()]
    x = images(reduced).double()
    torch.testing.assert_close(pruned(x).embedding, reduced(x).embedding, atol=1e-6, rtol=0)


def test_pruned_model_saves_and_reloads(tmp_path) -> None:
    model = tiny_transreid()
    pruned, plan = prune_heads(model, "magnitude", rate=0.5)
    reidprune.save(pruned, tmp_path / "pruned")
    loaded = reidprune.load(tmp_path / "pruned")
    assert loaded.arch == pruned.arch and loaded.compression_plan == plan
    x, cams = images(model), torch.tensor([1, 0])
    torch.testing.assert_close(loaded(x, cams).embedding, pruned.eval()(x, cams).embedding, atol=0, rtol=0)


class EmbeddingOnly(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).embedding


@pytest.mark.slow
def test_pruned_model_exports_to_onnx(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pruned, _ = prune_heads(tiny_reid(), "magnitude", num_remove=3)
    wrapper = EmbeddingOnly(pruned).eval()
    x = images(pruned, batch=1)
    path = tmp_path / "pruned.onnx"
    torch.onnx.export(wrapper, (x,), str(path), input_names=["image"], output_names=["embedding"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"image": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(onnx_out), wrapper(x), atol=1e-4, rtol=0)


def test_amg_la_tiny_one_head_per_block_attention_params() -> None:
    # AMG LA-Tiny "head 67 %": floor(36 * 0.67) = 24 heads; the >= 1 rule leaves exactly one per block
    model = create("la_tiny", num_classes=751)
    pruned, _ = prune_heads(model, "magnitude", rate=0.67)
    assert pruned.arch.num_heads == [1] * 12
    count = count_params(pruned)["attn_params"]
    assert count == 12 * (3 * 64 * 192 + 3 * 64 + 64 * 192 + 192) == 594_432
    # AMG's "MSA param" also counts its 197-entry token mask per block: 0.597 M, the table's 0.60 M
    assert round((count + 12 * 197) / 1e6, 2) == 0.60


def test_amg_la_base_108_of_144_heads_attention_params() -> None:
    with torch.device("meta"):  # the architecture alone: no weights are allocated
        model = create("la_base", num_heads=[9] * 12)
    count = count_params(model)["attn_params"]
    assert count == 108 * (3 * 64 * 768 + 3 * 64 + 64 * 768) + 12 * 768 == 21_263_616
    assert round(count / 1e6, 1) == 21.3 == round((count + 12 * 197) / 1e6, 1)  # AMG table: 21.3 M


def test_split_rounds_feeds_an_iterative_schedule() -> None:
    model = tiny_reid(depth=3)
    for count in split_rounds(9, 0.67, 3):  # 6 heads over 3 rounds
        model, _ = prune_heads(model, "magnitude", num_remove=count)
    assert sum(model.arch.num_heads) == 3
    assert len(model.compression_plan.previous) == 2


class Exploding:
    def __iter__(self):
        raise AssertionError("calibration must not start for a bad request")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 1.0}, r"rate=1\.0: expected a fraction in \[0, 1\)"),
        ({"rate": -0.1}, r"rate=-0\.1"),
        ({"rate": 0.5, "num_remove": 2}, "exactly one of rate"),
        ({}, "exactly one of rate"),
        ({"num_remove": 5}, "cannot remove 5 heads.*at most 4"),
        ({"num_remove": -1}, "num_remove=-1"),
        ({"rate": 0.5, "method": "taylor"}, "method 'taylor'"),
    ],
)
def test_bad_requests_fail_before_calibrating(kwargs: dict, message: str) -> None:
    kwargs = {"method": "entropy", "data": Exploding(), **kwargs}
    with pytest.raises(CompressionError, match=message):
        prune_heads(tiny_reid(), **kwargs)


def test_entropy_needs_calibration_data() -> None:
    with pytest.raises(CompressionError, match="needs calibration data"):
        prune_heads(tiny_reid(), "entropy", rate=0.5)


def test_models_without_attention_layers_are_refused() -> None:
    with pytest.raises(CompressionError, match="no attention layers"):
        prune_heads(create("resnet18_reid", num_classes=5), "magnitude", rate=0.5)
    with pytest.raises(CompressionError, match=r"no \.arch"):
        prune_heads(nn.Linear(2, 2), "magnitude", rate=0.5)


VIT_MODELS = [name for name in reidprune.models.list_models() if not name.startswith("resnet")]


@pytest.mark.parametrize("name", VIT_MODELS)
def test_every_registered_vit_can_lose_every_other_head(name: str) -> None:
    from reidprune.models.vit_models import attention_params

    with torch.device("meta"):  # shapes only: nothing is allocated or computed
        model = create(name)
        keep = {slot.path: list(range(0, slot.num_heads, 2)) for slot in head_slots(model)}
        pruned = remove_heads(model, keep)
    expected = [len(range(0, h, 2)) for h in model.arch.num_heads]
    assert pruned.arch.num_heads == expected
    if model.arch.uses_jpm:
        assert pruned.arch.jpm_num_heads == [len(range(0, h, 2)) for h in model.arch.branch_heads()]
    for slot in head_slots(pruned):
        attn = pruned.get_submodule(slot.path)
        old = model.get_submodule(slot.path)
        assert (attn.head_dim, attn.scale) == (old.head_dim, old.scale)
        assert tuple(attn.qkv.weight.shape) == (3 * attn.num_heads * attn.head_dim, model.arch.embed_dim)
    assert count_params(pruned)["attn_params"] == attention_params(pruned.arch, include_branches=True)
