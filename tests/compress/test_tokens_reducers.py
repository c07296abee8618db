"""Token reducers: what each block computes, on small inputs with exact expectations."""

from __future__ import annotations

import pytest
import torch
from tokens_helpers import batches, tiny_vit
from torch import Tensor

from reidprune.compress.tokens import prune_tokens
from reidprune.compress.tokens.amg import KeyValueReducer, SkipReducer
from reidprune.compress.tokens.pm import (
    PruneMergeReducer,
    assign_segments,
    block_plan,
    dense_matrices,
    select_pm,
)
from reidprune.compress.tokens.tome import ToMeReducer, bipartite_matching, merge_tokens
from reidprune.compress.tokens.topk import TopKReducer, cls_attention, default_locations, keep_count
from reidprune.errors import CompressionError
from reidprune.models.vit import Block, TokenState

METHODS = [
    ("amg", {"mode": "kv"}),
    ("amg", {"mode": "skip"}),
    ("topk", {"fuse": True}),
    ("pm", {}),
    ("tome", {}),
]


def _block_input(tokens: int = 9, dim: int = 16) -> tuple[Block, Tensor]:
    model = tiny_vit(heads=(2, 3, 1, 2))
    return model.blocks[1], torch.randn(2, tokens, dim)


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_rate_zero_reproduces_the_unreduced_model_exactly(method: str, options: dict) -> None:
    model = tiny_vit()
    images = batches((3,))[0]["image"]
    reduced, plan = prune_tokens(model, method, 0.0, batches((2,)), **options)
    assert all(block.reducer is None for block in reduced.blocks)
    torch.testing.assert_close(reduced(images), model(images), rtol=0, atol=0)
    assert plan.method == f"token-{method}" and plan.rate == 0.0


def test_reducers_that_remove_nothing_compute_the_dense_block() -> None:
    block, x = _block_input()
    dense = block.forward_dense(x)
    everything = list(range(9))
    for reducer in (
        KeyValueReducer(everything),
        SkipReducer(everything, 9),
        PruneMergeReducer(list(range(8))),
    ):
        out, _ = reducer(block, x, TokenState())
        torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-6)
    out, state = TopKReducer(keep=8)(block, x, TokenState())
    torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-6)
    out, state = ToMeReducer(r=0)(block, x, TokenState())  # r = 0 only reorders: [A tokens, B tokens]
    restored = out.gather(1, state.slot.unsqueeze(-1).expand(-1, -1, 16))
    torch.testing.assert_close(restored, dense, rtol=1e-5, atol=1e-6)


def test_kv_reducer_is_attention_over_the_kept_keys_only() -> None:
    block, x = _block_input()
    kept = [0, 2, 3, 7]
    out, _ = KeyValueReducer(kept)(block, x, TokenState())
    # reference: the dense block with the removed keys masked out of every query's softmax
    attn = block.attn
    q, k, v = attn.split_qkv(block.norm1(x))
    mask = torch.full((1, 1, 1, 9), float("-inf"))
    mask[..., kept] = 0.0
    y = x + attn.proj(attn.attend(q, k, v, mask))
    expected = y + block.mlp(block.norm2(y))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_skip_reducer_runs_only_kept_tokens_and_leaves_the_rest_unchanged() -> None:
    block, x = _block_input()
    kept = [0, 1, 4, 8]
    out, state = SkipReducer(kept, 9)(block, x, TokenState())
    torch.testing.assert_close(out[:, kept], block.forward_dense(x[:, kept]), rtol=1e-6, atol=1e-6)
    skipped = [2, 3, 5, 6, 7]
    assert torch.equal(out[:, skipped], x[:, skipped])
    assert state.slot is None  # raster order kept at every block boundary: nothing to restore


def test_cls_attention_is_the_head_mean_of_the_full_maps_first_row() -> None:
    block, x = _block_input()
    q, k, _ = block.attn.split_qkv(block.norm1(x))
    full = ((q * block.attn.scale) @ k.transpose(-2, -1)).softmax(-1)
    torch.testing.assert_close(cls_attention(block, q, k), full.mean(1)[:, 0, 1:])


def test_without_a_class_token_topk_scores_the_attention_each_token_receives() -> None:
    # pooled models (timm's *_gap_*) have no CLS row: every query's attention, head and query mean
    block, x = _block_input()
    q, k, _ = block.attn.split_qkv(block.norm1(x))
    full = ((q * block.attn.scale) @ k.transpose(-2, -1)).softmax(-1)
    score = cls_attention(block, q, k, num_prefix_tokens=2, class_token=False)
    torch.testing.assert_close(score, full.mean(dim=(1, 2))[:, 2:])


def test_topk_keeps_the_most_attended_tokens_and_restores_dropped_ones() -> None:
    block, x = _block_input()
    out, state = TopKReducer(keep=3, fuse=True)(block, x, TokenState())
    attn = block.attn
    q, k, v = attn.split_qkv(block.norm1(x))
    after_attn = x + attn.proj(attn.attend(q, k, v))
    score = cls_attention(block, q, k)
    top = score.topk(3, dim=1).indices.sort(dim=1).values  # patch indices, raster order
    fused = (score.scatter(1, top, 0.0).unsqueeze(-1) * after_attn[:, 1:]).sum(1, keepdim=True)
    seq = torch.cat(
        [after_attn[:, :1], after_attn[:, 1:].gather(1, top.unsqueeze(-1).expand(-1, -1, 16)), fused], 1
    )
    torch.testing.assert_close(out, seq + block.mlp(block.norm2(seq)), rtol=1e-5, atol=1e-6)
    # slot: CLS -> 0, kept patch p -> its place 1..3, dropped -> -1; grid holds the dropped features
    for b in range(2):
        expected = torch.full((9,), -1)
        expected[0] = 0
        expected[top[b] + 1] = torch.arange(1, 4)
        assert torch.equal(state.slot[b], expected)
    dropped = state.slot < 0
    torch.testing.assert_close(state.grid[dropped], after_attn[dropped], rtol=0, atol=0)


def test_topk_restore_grid_through_the_backbone_has_every_position() -> None:
    model = tiny_vit()
    reduced, _ = prune_tokens(model, "topk", 0.5, locations=[1, 2])
    images = batches((2,))[0]["image"]
    tokens, state = reduced.forward_tokens(images)
    assert tokens.shape[1] == 1 + 2  # 8 patches -> 4 -> 2
    grid = reduced.restore_grid(tokens, state)
    assert grid.shape == (2, 9, 16)
    carried = state.slot >= 0
    assert int(carried.sum()) == 2 * 3
    torch.testing.assert_close(
        grid[carried], tokens.gather(1, state.slot.clamp(min=0).unsqueeze(-1).expand(-1, -1, 16))[carried]
    )


def test_topk_schedule_defaults() -> None:
    assert default_locations(12) == [3, 6, 9]
    assert default_locations(6) == [2, 3, 4]  # round(1.5) = 2 (banker's), 3, round(4.5) = 4
    assert [keep_count(128, 0.6), keep_count(10, 0.5), keep_count(3, 0.1)] == [77, 5, 1]


def test_bipartite_matching_on_hand_built_tokens() -> None:
    # tokens 0 (CLS), 2, 4 form set A; 1, 3 form set B
    metric = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.9]]])
    unmerged, src, dst = bipartite_matching(metric, r=1)
    # token 2 = [0, 1] is identical to token 3 (B index 1): the best link; CLS never merges
    assert src.tolist() == [[1]] and dst.tolist() == [[1]] and unmerged.tolist() == [[0, 2]]
    x = torch.arange(5.0).view(1, 5, 1).expand(1, 5, 2)
    size = torch.tensor([[[1.0], [1.0], [3.0], [1.0], [1.0]]])
    merged, new_size, new_index = merge_tokens(x, size, unmerged, src, dst)
    # order [A unmerged: 0, 4 | B: 1, 3 + 2]; the merge is size-weighted: (3 * 2 + 1 * 3) / 4
    assert merged[0, :, 0].tolist() == [0.0, 4.0, 1.0, 2.25]
    assert new_size.flatten().tolist() == [1.0, 1.0, 1.0, 4.0]
    assert new_index.tolist() == [[0, 2, 3, 3, 1]]


def test_tome_tracks_sizes_and_slots_across_blocks() -> None:
    model = tiny_vit()
    reduced, plan = prune_tokens(model, "tome", 0.0, r=2)
    # 9 -> 7 -> 5 -> 3 tokens; one matching over 3 tokens can merge only 1 (CLS never merges)
    assert plan.details["r"] == [2, 2, 2, 1] and plan.details["final_tokens"] == 2
    reduced, plan = prune_tokens(model, "tome", 0.0, r=[2, 2, 1, 0])
    tokens, state = reduced.forward_tokens(batches((2,))[0]["image"])
    assert tokens.shape[1] == 9 - 5
    assert state.size.sum(dim=1).flatten().tolist() == [9.0, 9.0]  # every original token counted once
    assert state.slot.shape == (2, 9) and int(state.slot.max()) == 3 and state.slot[:, 0].tolist() == [0, 0]
    assert reduced.restore_grid(tokens, state).shape == (2, 9, 16)


def test_segments_are_the_nearest_centre_within_the_row() -> None:
    width = 4  # a 3 x 4 grid, patches 0..11
    # boundaries: between 1 and 6 at 4 (midpoint and row end agree), between 6 and 11 the row end (8)
    assert assign_segments(torch.tensor([1, 6, 11]), 12, width).tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # a tie (patch 1 between centres 0 and 2) goes to the right-hand centre
    assert assign_segments(torch.tensor([0, 2]), 4, width).tolist() == [0, 1, 1, 1]
    # never past the end of the left centre's row: 4, 5 go to centre 9 (which spans back over rows)
    assert assign_segments(torch.tensor([2, 9]), 12, width).tolist() == [0] * 4 + [1] * 8


def test_block_plan_weights_are_score_ratios_to_the_centre() -> None:
    values = torch.tensor([0.2, 0.8, 0.4, 0.1], dtype=torch.float64)
    plan = block_plan(
        values, torch.tensor([False, False, False, True]), torch.tensor([False, True, False, False]), 4
    )
    assert plan.segment.tolist() == [0, 0, 0, -1]
    torch.testing.assert_close(plan.weight, torch.tensor([0.25, 1.0, 0.5, 0.0]))
    assert plan.centres.tolist() == [1]


def test_restore_matrix_is_the_pseudo_inverse_of_the_merge_matrix() -> None:
    merge, restore, mask = dense_matrices([0, 0, 1, -1, 1], torch.tensor([0.25, 1.0, 1.0, 0.0, 0.5]))
    expected_merge = torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 0.25, 1.0, 0, 0, 0], [0, 0, 0, 1.0, 0, 0.5]])
    torch.testing.assert_close(merge, expected_merge)
    torch.testing.assert_close(restore, torch.linalg.pinv(merge), rtol=1e-5, atol=1e-6)
    assert mask.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 1.0]


def test_sparse_prune_merge_equals_the_dense_matrix_form() -> None:
    block, x = _block_input()
    segment = [0, 0, 1, -1, 1, 2, 2, -1]
    weight = torch.tensor([1.0, 0.5, 0.25, 0.0, 1.0, 0.75, 1.0, 0.0])
    out, _ = PruneMergeReducer(segment, weight, restore="projection")(block, x, TokenState())
    merge, restore, mask = dense_matrices(segment, weight)
    expected = restore @ block.forward_dense(merge @ x) + x * (1 - mask).view(1, -1, 1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(out[:, [4, 8]], x[:, [4, 8]])  # pruned tokens skip the block


def test_residual_restore_gives_each_member_its_segments_update() -> None:
    block, x = _block_input()
    segment = [0, 0, 1, -1, 1, 2, 3, -1]  # segments 2 and 3 are single patches
    weight = torch.tensor([1.0, 0.5, 0.25, 0.0, 1.0, 0.75, 1.0, 0.0])
    out, _ = PruneMergeReducer(segment, weight, restore="residual")(block, x, TokenState())

    # by hand: CLS + the weighted mean of each segment go through the block
    z = torch.stack(
        [
            x[:, 0],
            (1.0 * x[:, 1] + 0.5 * x[:, 2]) / 1.5,
            (0.25 * x[:, 3] + 1.0 * x[:, 5]) / 1.25,
            x[:, 6],
            x[:, 7],
        ],
        dim=1,
    )
    update = block.forward_dense(z) - z
    expected = x.clone()
    for position, seg in enumerate([0, 1, 1, 2, None, 2, 3, 4, None]):
        if seg is not None:
            expected[:, position] += update[:, seg]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(out[:, [4, 8]], x[:, [4, 8]])  # pruned tokens skip the block


def test_residual_restore_trains_merge_and_restore_weights() -> None:
    block, x = _block_input()
    reducer = PruneMergeReducer(
        [0, 0, 1, -1, 1, 2, 2, -1], torch.tensor([1.0, 0.5, 0.25, 0, 1.0, 0.75, 1.0, 0])
    )
    out, _ = reducer(block, x, TokenState())
    out.pow(2).sum().backward()
    assert reducer.merge_weight.grad is not None and reducer.merge_weight.grad.abs().sum() > 0
    assert reducer.restore_weight.grad is not None and reducer.restore_weight.grad.abs().sum() > 0


def test_residual_restore_with_singleton_segments_is_the_dense_block() -> None:
    block, x = _block_input()
    out, _ = PruneMergeReducer(list(range(8)), restore="residual")(block, x, TokenState())
    torch.testing.assert_close(out, block.forward_dense(x), rtol=1e-5, atol=1e-6)


def test_pm_restore_mode_is_part_of_the_spec_and_rebuilt_from_it() -> None:
    from reidprune.compress.tokens import attach_reducers, current_spec

    for restore in ("residual", "projection"):
        reduced, _ = prune_tokens(tiny_vit(), "pm", 0.5, batches(), prune_rate=0.0, restore=restore)
        spec = current_spec(reduced).to_dict()
        assert spec["restore"] == restore
        rebuilt = tiny_vit()
        attach_reducers(rebuilt, spec)
        rebuilt.load_state_dict(reduced.state_dict())
        images = torch.randn(2, 3, 16, 8)
        torch.testing.assert_close(rebuilt(images), reduced(images))
    older = {**spec}
    del older["restore"]  # specs saved before the option existed were projections
    assert attach_reducers(tiny_vit(), older).restore == "projection"
    dense = {
        "method": "pm",
        "num_tokens": 9,
        "dense": True,
        "tokens": [None, 5, None, None],
        "restore": "residual",
    }
    with pytest.raises(CompressionError, match="dense merge / restore matrices restore by projection only"):
        attach_reducers(tiny_vit(), dense)
    with pytest.raises(CompressionError, match="pm restore must be one of"):
        prune_tokens(tiny_vit(), "pm", 0.5, batches(), restore="copy")


def test_global_prune_merge_thresholds() -> None:
    values = torch.tensor([[0.9, 0.1, 0.5], [0.3, 0.8, 0.2]])
    pruned, centre = select_pm(values, n_prune=2, n_keep=2)
    assert pruned.tolist() == [[False, True, False], [False, False, True]]
    assert centre.tolist() == [[True, False, False], [False, True, False]]
    _, centre = select_pm(values, n_prune=2, n_keep=3)
    assert centre.tolist() == [[True, False, True], [False, True, False]]


def test_pm_fine_tunes_only_the_non_zero_weights() -> None:
    model = tiny_vit()
    reduced, _ = prune_tokens(model, "pm", 0.5, batches(), prune_rate=0.25)
    new = {name for name, _ in reduced.named_parameters()} - {name for name, _ in model.named_parameters()}
    assert new and all(name.endswith(("reducer.merge_weight", "reducer.restore_weight")) for name in new)
    merged = reduced.blocks[0].reducer
    assert merged.merge_weight.numel() == merged.members.numel() < 8
