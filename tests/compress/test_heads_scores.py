"""Head importance and global selection: small hand-built inputs, exact expected outputs."""

from __future__ import annotations

import math

import pytest
import torch

from reidprune.compress.heads import (
    HeadEntropy,
    amg_depth_weights,
    head_magnitude,
    heads_to_remove,
    map_entropy,
    random_scores,
    select_removal,
    split_rounds,
)
from reidprune.errors import CompressionError
from reidprune.models.vit import Attention


def one_hot_rows(key: int, rows: int = 2, keys: int = 4) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.full((rows,), key), keys).float()


def test_map_entropy_is_bits_per_row_averaged_over_rows() -> None:
    uniform = torch.full((2, 4), 0.25)  # 2 bits in every row
    sharp = one_hot_rows(1)  # 0 bits, exact zeros must not give NaN
    mixed = torch.stack([torch.full((4,), 0.25), torch.tensor([0.5, 0.5, 0.0, 0.0])])  # rows 2 and 1 bit
    entropy = map_entropy(torch.stack([uniform, sharp, mixed]))
    assert entropy.tolist() == pytest.approx([2.0, 0.0, 1.5], abs=1e-6)


def test_entropy_statistic_averages_every_map_including_the_ragged_last_batch() -> None:
    # head 0 looks at key 0, 1, 2 in images a, b, c; head 1 always at key 3
    def image(key: int) -> torch.Tensor:
        return torch.stack([one_hot_rows(key), one_hot_rows(3)])  # (H=2, Nq=2, Nk=4)

    stat = HeadEntropy()
    stat.update("blocks.0.attn", torch.stack([image(0), image(1)]), None)
    stat.update("blocks.0.attn", image(2)[None], None)  # ragged last batch of one image
    assert stat.num_maps("blocks.0.attn") == 3
    expected_row = torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0])
    torch.testing.assert_close(stat.mean_map("blocks.0.attn")[0], expected_row.expand(2, 4))
    # entropy of the mean map (log2 3), not of a per-batch mean (1.5) nor without the last batch (1)
    assert stat.entropies()["blocks.0.attn"].tolist() == pytest.approx([math.log2(3), 0.0], abs=1e-6)


def test_entropy_statistic_accumulates_low_precision_maps_in_float32() -> None:
    stat = HeadEntropy()
    for _ in range(3):
        stat.update("a", torch.full((1, 1, 1, 4), 0.25, dtype=torch.bfloat16), None)
    assert stat.mean_map("a").dtype == torch.float32


def test_entropy_statistic_plugs_into_the_shared_calibration_pass() -> None:
    from reidprune.compress.calibration import AttentionStatistic

    assert isinstance(HeadEntropy(), AttentionStatistic)
    assert not HeadEntropy.needs_grad  # the pass can run under no_grad and without labels


def test_entropy_statistic_rejects_a_changing_token_layout() -> None:
    stat = HeadEntropy()
    stat.update("blocks.2.attn", torch.full((1, 2, 5, 5), 0.2), None)
    with pytest.raises(CompressionError, match=r"blocks\.2\.attn.*\(2, 4, 4\) after \(2, 5, 5\)"):
        stat.update("blocks.2.attn", torch.full((1, 2, 4, 4), 0.25), None)


def test_magnitude_is_the_norm_of_the_heads_qkv_rows_and_proj_columns() -> None:
    attn = Attention(dim=2, num_heads=3, head_dim=1, qkv_bias=True, scale=1.0)
    with torch.no_grad():
        attn.qkv.weight.zero_()
        attn.qkv.bias.zero_()
        attn.proj.weight.zero_()
        attn.proj.bias.fill_(100.0)  # shared by all heads: not part of any head's norm
        # rows (q|k|v, head): q of head 1 = (3, 4); v bias of head 2 = 12; proj column of head 0 = (1, 0)
        attn.qkv.weight[1] = torch.tensor([3.0, 4.0])
        attn.qkv.bias[2 * 3 + 2] = 12.0
        attn.proj.weight[:, 0] = torch.tensor([1.0, 0.0])
    assert head_magnitude(attn).tolist() == pytest.approx([1.0, 5.0, 12.0])


def test_random_scores_are_reproducible_from_the_seed() -> None:
    first, second = random_scores([2, 3], seed=7), random_scores([2, 3], seed=7)
    assert [s.shape[0] for s in first] == [2, 3]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(torch.cat(first), torch.cat(random_scores([2, 3], seed=8)))


def test_amg_depth_weight_counts_only_blocks_with_more_than_one_head() -> None:
    # depths 0..3 then a JPM copy at depth 3; depth 1 has a single head and does not count
    weights = amg_depth_weights([0, 1, 2, 3, 3], [3, 1, 2, 2, 2], delta=0.1)
    assert weights == pytest.approx([1.0, 1.0, 1.1, 1.2, 1.2])


def test_selection_removes_the_highest_priorities_globally() -> None:
    priorities = [torch.tensor([0.9, 0.1, 0.5]), torch.tensor([0.8, 0.7]), torch.tensor([0.2, 0.6])]
    assert select_removal(priorities, 3) == [[0], [0], [1]]
    assert select_removal(priorities, 0) == [[], [], []]


def test_selection_never_takes_a_layers_last_head() -> None:
    # layer 0 has the three highest scores but must keep one; a single-head layer keeps its head
    priorities = [torch.tensor([9.0, 8.0, 7.0]), torch.tensor([5.0]), torch.tensor([1.0, 2.0])]
    assert select_removal(priorities, 3) == [[0, 1], [], [1]]
    with pytest.raises(CompressionError, match="at most 3 can go"):
        select_removal(priorities, 4)


def test_selection_breaks_ties_by_layer_then_head_order() -> None:
    priorities = [torch.ones(2), torch.ones(2)]
    assert select_removal(priorities, 1) == [[0], []]
    assert select_removal(priorities, 2) == [[0], [0]]


def test_selection_rejects_non_finite_scores() -> None:
    with pytest.raises(CompressionError, match="NaN"):
        select_removal([torch.tensor([float("nan"), 1.0])], 1)


def test_rate_to_count_and_rounds() -> None:
    assert heads_to_remove(36, 0.67) == 24  # AMG LA-Tiny: 24 of 36
    assert heads_to_remove(132, 0.25) == 33  # AMG TR-Base: 33 of 132
    assert heads_to_remove(12, 0.25) == 3
    assert split_rounds(36, 0.67, 24) == [1] * 24
    assert split_rounds(144, 0.25, 5) == [8, 7, 7, 7, 7]  # the remainder is pruned too
    with pytest.raises(CompressionError, match=r"rate=1\.0"):
        heads_to_remove(12, 1.0)
    with pytest.raises(CompressionError, match="rounds=0"):
        split_rounds(12, 0.5, 0)
