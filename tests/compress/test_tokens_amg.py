"""AMG token scores, global selection, further rounds and the random baseline."""

from __future__ import annotations

import math

import pytest
import torch
from tokens_helpers import batches, tiny_vit

from reidprune.compress.calibration import calibrate
from reidprune.compress.heads.importance import HeadEntropy
from reidprune.compress.tokens import current_spec, prune_tokens
from reidprune.compress.tokens.amg import select_lowest, select_random, uniform_counts
from reidprune.compress.tokens.scores import TaylorKeyScore, normalise_scores, scores_by_position
from reidprune.errors import CompressionError

NAN = float("nan")


def test_taylor_score_takes_the_abs_per_batch_and_averages_over_batch_heads_queries() -> None:
    stat = TaylorKeyScore()
    attn = torch.ones(1, 1, 2, 3)
    # per key: sum over the 2 queries of A * G, divided by B * H * N_q = 2
    stat.update("a", attn, torch.tensor([[[[1.0, -4.0, 0.5], [1.0, 0.0, 0.5]]]]))  # -> [1, -2, 0.5]
    stat.update("a", attn, torch.tensor([[[[-2.0, 1.0, 0.0], [0.0, 1.0, 0.0]]]]))  # -> [-1, 1, 0]
    assert stat.sums["a"].tolist() == [2.0, 3.0, 0.5]
    assert stat.calls["a"] == 2


def test_scores_map_back_to_original_positions() -> None:
    stat = TaylorKeyScore()
    stat.sums = {"b0": torch.tensor([9.0, 1.0, 2.0], dtype=torch.float64)}
    out = scores_by_position(stat, ["b0", "b1"], [[0, 2, 5], None], num_tokens=6)
    assert out[0, [2, 5]].tolist() == [1.0, 2.0]
    assert torch.isnan(out[0, [0, 1, 3, 4]]).all()  # CLS and the keys the block no longer has
    assert torch.isnan(out[1]).all()  # a block that did not run


def test_normalisation_is_l2_per_block_times_the_depth_discount() -> None:
    scores = torch.tensor([[NAN, 3.0, 4.0], [NAN, 0.0, 2.0]], dtype=torch.float64)
    out = normalise_scores(scores, torch.tensor([1.0, 0.5]))
    assert math.isnan(out[0, 0])
    assert out[:, 1:].tolist() == [[0.6, 0.8], [0.0, 0.5]]


def test_global_selection_removes_the_lowest_pairs_and_keeps_one_patch_per_block() -> None:
    values = torch.tensor([[NAN, 0.5, 0.1, 0.3], [NAN, 0.2, 0.4, 0.05]])
    remove = select_lowest(values, n_remove=3, min_keep=1)
    assert remove.tolist() == [[False, False, True, False], [False, True, False, True]]
    with pytest.raises(CompressionError, match="only 4 are left"):
        select_lowest(values, n_remove=5, min_keep=1)  # the best patch of each block is protected


def test_random_selection_takes_the_given_count_per_block() -> None:
    values = torch.zeros(3, 10)
    values[:, 0] = NAN
    gen = torch.Generator().manual_seed(0)
    remove = select_random(values, torch.tensor([2, 0, 5]), gen)
    assert remove.sum(dim=1).tolist() == [2, 0, 5] and not remove[:, 0].any()
    again = select_random(values, torch.tensor([2, 0, 5]), torch.Generator().manual_seed(0))
    assert torch.equal(remove, again)
    assert uniform_counts(7, 3).tolist() == [3, 2, 2]


def test_amg_removes_floor_p_l_rate_pairs_in_original_positions() -> None:
    model = tiny_vit()
    reduced, plan = prune_tokens(model, "amg", 0.4, batches())
    spec = current_spec(reduced)
    removed = sum(9 - len(k) if k is not None else 0 for k in spec.kept)
    assert removed == math.floor(8 * 4 * 0.4) == plan.details["removed_pairs"] == 12
    assert all(k is None or k[0] == 0 for k in spec.kept)
    assert reduced.token_spec.to_dict() == spec.to_dict()


def test_a_second_round_scores_only_kept_keys_and_removes_more() -> None:
    model = tiny_vit()
    first, _ = prune_tokens(model, "amg", 0.25, batches())
    kept1 = current_spec(first).kept

    seen: dict[str, int] = {}

    class KeyCount:
        needs_grad = False

        def update(self, name, attn, grad):
            seen[name] = attn.shape[-1]

    calibrate(first, batches((2,)), [KeyCount()])
    assert [seen[f"blocks.{i}.attn"] for i in range(4)] == [len(k) if k else 9 for k in kept1]

    second, plan = prune_tokens(first, "amg", 0.25, batches())
    kept2 = current_spec(second).kept
    for a, b in zip(kept1, kept2, strict=True):
        assert set(b or range(9)) <= set(a or range(9))  # masks live in original positions
    total = sum(9 - len(k) for k in kept2 if k is not None)
    assert total == 2 * math.floor(8 * 4 * 0.25)
    assert [p["method"] for p in plan.previous] == ["token-amg"]
    images = batches((2,))[0]["image"]
    assert second(images).shape == (2, 3)


def test_skip_mode_rounds_and_mode_switch_is_refused() -> None:
    first, _ = prune_tokens(tiny_vit(), "amg", 0.2, batches(), mode="skip")
    second, _ = prune_tokens(first, "amg", 0.2, batches())  # the mode carries over
    assert current_spec(second).mode == "skip"
    with pytest.raises(CompressionError, match="cannot switch"):
        prune_tokens(first, "amg", 0.2, batches(), mode="kv")


def test_random_selection_matches_amg_counts_per_block() -> None:
    model = tiny_vit()
    taylor, _ = prune_tokens(model, "amg", 0.4, batches())
    random, plan = prune_tokens(model, "amg", 0.4, batches(), selection="random", seed=3)
    counts = [len(k) if k else 9 for k in current_spec(taylor).kept]
    assert [len(k) if k else 9 for k in current_spec(random).kept] == counts  # equal GMACs
    assert current_spec(random).kept != current_spec(taylor).kept
    again, _ = prune_tokens(model, "amg", 0.4, batches(), selection="random", seed=3)
    assert current_spec(again).kept == current_spec(random).kept
    assert plan.details["selection"] == "random"


def test_random_selection_without_data_spreads_counts_evenly() -> None:
    reduced, _ = prune_tokens(tiny_vit(), "amg", 0.5, selection="random")
    assert [len(k) for k in current_spec(reduced).kept] == [5, 5, 5, 5]


def test_depth_discount_prunes_deeper_blocks_more() -> None:
    model = tiny_vit(heads=(2,) * 6)
    flat, _ = prune_tokens(model, "amg", 0.3, batches(), depth_discount=0.0)
    steep, _ = prune_tokens(model, "amg", 0.3, batches(), depth_discount=0.15)
    counts = [len(k) if k else 9 for k in current_spec(steep).kept]
    flat_counts = [len(k) if k else 9 for k in current_spec(flat).kept]
    assert sum(counts) == sum(flat_counts)
    assert sum(counts[3:]) < sum(flat_counts[3:])


def test_one_calibration_pass_can_serve_token_scores_and_head_entropies() -> None:
    model = tiny_vit()
    scores, entropy = TaylorKeyScore(), HeadEntropy()
    calibrate(model, batches(), [scores, entropy])
    shared, _ = prune_tokens(model, "amg", 0.4, statistic=scores)
    separate, _ = prune_tokens(model, "amg", 0.4, batches())
    assert current_spec(shared).kept == current_spec(separate).kept
    with pytest.raises(CompressionError, match="not both"):
        prune_tokens(model, "amg", 0.4, batches(), statistic=scores)
