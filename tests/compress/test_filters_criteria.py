"""Filter criteria on hand-built weights: exact indices; BAFD rate allocation and sharing."""

from __future__ import annotations

import math

import pytest
import torch
from filters_helpers import tiny_resnet

from reidprune.compress.filters.api import select
from reidprune.compress.filters.bafd import (
    allocate_units,
    bafd_layer_rates,
    filters_to_prune,
    share_blockwise,
)
from reidprune.compress.filters.criteria import (
    bafd_efficient_keep,
    bafd_greedy_remove,
    bafd_layer_scores,
    pairwise_distances,
    select_bafd,
    select_fpgm,
    select_hfp,
    select_in_slices,
    select_sfp,
    smallest,
)
from reidprune.compress.filters.soft import SoftFilterPruning
from reidprune.compress.filters.targets import ConvTarget, prunable_convs


def filters(*rows: list[float]) -> torch.Tensor:
    """Conv weight (n, d, 1, 1) whose filter i is the vector rows[i]."""
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), -1, 1, 1)


# Five 2-D filters: a tight pair (0, 1) far from the rest, and three spread ones.
PAIR_AND_SPREAD = filters([0, 0], [0.1, 0], [5, 0], [7, 0], [5, 3])


def test_hfp_removes_smallest_l1_and_sfp_smallest_l2():
    # L1 norms: 2, 1.5, 3, 4; L2 norms: 1.41, 1.5, 3, 4
    w = filters([1, 1], [1.5, 0], [3, 0], [0, 4])
    assert select_hfp(w, 1).tolist() == [1]
    assert select_sfp(w, 1).tolist() == [0]
    assert select_hfp(w, 3).tolist() == [0, 1, 2]


def test_fpgm_removes_filters_nearest_the_geometric_median():
    # summed distances on a line 0, 1, 2, 10, 11: 24, 21, 20, 28, 31
    w = filters([0], [1], [2], [10], [11])
    assert select_fpgm(w, 1).tolist() == [2]
    assert select_fpgm(w, 2).tolist() == [1, 2]
    assert select_sfp(w, 2).tolist() == [0, 1]  # norms disagree: the criteria differ


def test_ties_go_to_the_lower_index():
    assert smallest(torch.tensor([1.0, 0.5, 0.5, 0.5]), 2).tolist() == [1, 2]


def test_pairwise_distances_are_euclidean_with_zero_diagonal():
    dist = pairwise_distances(filters([0, 0], [3, 4]))
    assert dist.dtype == torch.float64
    assert dist.tolist() == [[0.0, 5.0], [5.0, 0.0]]


def test_bafd_greedy_recomputes_neighbourhoods_after_each_removal():
    # k=2: local power = distance to the nearest other candidate. Initially 0.1, 0.1, 2, 2, 3.
    # Ranking once would remove the tight pair {0, 1}. Greedy removes 1 (tie with 0, smaller mean
    # distance), after which filter 0 is isolated (power 5) and survives; then 2 (tied with 3 at
    # power 2, smaller mean distance 10 vs 12.6).
    assert select_bafd(PAIR_AND_SPREAD, 2, k=2).tolist() == [1, 2]
    dist = pairwise_distances(PAIR_AND_SPREAD)
    initial_power = dist.topk(2, dim=1, largest=False).values.sum(1)
    assert smallest(initial_power, 2).tolist() == [0, 1]


def test_bafd_greedy_order_and_power_at_removal():
    order, power = bafd_greedy_remove(pairwise_distances(PAIR_AND_SPREAD), 4, k=2)
    # stops when k=2 candidates remain; the third removal is 4 (tie with 3 at sqrt(13))
    assert order.tolist() == [1, 2, 4]
    assert power.tolist() == pytest.approx([0.1, 2.0, math.sqrt(13)], abs=1e-6)


def test_bafd_efficient_variant_can_lose_both_members_of_an_isolated_pair():
    kept = bafd_efficient_keep(pairwise_distances(PAIR_AND_SPREAD), 3, k=2)
    assert kept.tolist() == [2, 3, 4]  # pruned {0, 1}; greedy removal keeps filter 0


def test_bafd_falls_back_to_distance_sums_without_enough_survivors():
    # k=2 >= n - p = 2: prune the 3 filters with the smallest summed distance (as FPGM)
    w = filters([0], [1], [2], [10], [11])
    assert select_bafd(w, 3, k=2).tolist() == select_fpgm(w, 3).tolist() == [0, 1, 2]


def test_bafd_layer_scores_are_removal_powers_then_survivor_sums_normalised():
    raw = torch.tensor([0.1, 2.0, math.sqrt(13), 7.0, 7.0], dtype=torch.float64)
    scores = bafd_layer_scores(PAIR_AND_SPREAD, k=2)
    assert torch.allclose(scores, raw / raw.norm(), atol=1e-6)


def test_allocation_walks_pooled_scores_and_respects_the_cap():
    scores = {
        "a": torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64),
        "b": torch.tensor([0.5, 0.6, 0.7, 0.8], dtype=torch.float64),
    }
    # budget floor(8 * 0.5) = 4; the cap floor(0.95 * 4) = 3 stops layer a at 3
    assert allocate_units(scores, 0.5, max_layer_rate=0.95) == {"a": 3, "b": 1}
    assert allocate_units(scores, 0.5, max_layer_rate=0.5) == {"a": 2, "b": 2}
    assert allocate_units(scores, 0.0, max_layer_rate=0.95) == {"a": 0, "b": 0}


def test_blockwise_sharing_averages_the_ranked_convs_of_a_block():
    targets = [
        ConvTarget("conv1", "bn1", "", "stem"),
        ConvTarget("layer1.0.conv1", "layer1.0.bn1", "layer1.0", "internal"),
        ConvTarget("layer1.0.conv2", "layer1.0.bn2", "layer1.0", "internal"),
        ConvTarget("layer1.0.conv3", "layer1.0.bn3", "layer1.0", "branch"),
        ConvTarget("layer1.1.conv1", "layer1.1.bn1", "layer1.1", "internal"),
    ]
    # BasicBlock-like block: two ranked convs share their mean
    two = share_blockwise(targets[1:3], {"layer1.0.conv1": 0.5, "layer1.0.conv2": 0.25})
    assert two == {"layer1.0.conv1": 0.375, "layer1.0.conv2": 0.375}
    # Bottleneck-like block: only the 3x3 conv2 is ranked, every conv takes its rate; the stem keeps
    # its own rate; a block without ranked convs is not pruned
    rates = share_blockwise(targets, {"conv1": 0.125, "layer1.0.conv2": 0.75})
    assert rates == {
        "conv1": 0.125,
        "layer1.0.conv1": 0.75,
        "layer1.0.conv2": 0.75,
        "layer1.0.conv3": 0.75,
        "layer1.1.conv1": 0.0,
    }


def test_bafd_layer_rates_on_a_resnet_stay_under_the_cap():
    model = tiny_resnet("resnet18_reid")
    targets = prunable_convs(model, "bafd")
    rates, units = bafd_layer_rates(model, targets, rate=0.9, k=2, max_layer_rate=0.6)
    for target in targets:
        n = model.get_submodule(target.conv).weight.shape[0]
        assert filters_to_prune(n, rates[target.conv]) <= math.floor(0.6 * n)
    ranked_total = sum(model.get_submodule(name).weight.shape[0] for name in units)
    # the cap binds everywhere, so fewer units than floor(T * 0.9) can be handed out
    assert sum(units.values()) <= math.floor(0.6 * ranked_total)
    assert sum(units.values()) == sum(math.floor(0.6 * model.get_submodule(n).weight.shape[0]) for n in units)


def test_resnet50_ranks_only_the_stem_and_3x3_convs():
    model = tiny_resnet("resnet50_reid")
    targets = prunable_convs(model, "bafd")
    _, units = bafd_layer_rates(model, targets, rate=0.5)
    assert set(units) == {"conv1"} | {t.conv for t in targets if t.conv.endswith("conv2")}


def test_filters_to_prune_is_floor_of_n_times_rate():
    assert filters_to_prune(64, 0.5) == 32
    assert filters_to_prune(10, 0.29) == 2
    assert filters_to_prune(7, 3 / 7) == 3  # no filter lost to rounding of units / n


# Six 2-D filters: the tight pair (0, 1) apart from four spread ones. Greedy removal of 3 takes
# 1, 2, 3 (filter 0 survives once its partner is gone); the efficient variant keeps the most
# isolated 5, 4, 3 and so prunes 0, 1, 2.
PAIR_AND_FOUR = filters([0, 0], [0.1, 0], [5, 0], [7, 0], [5, 3], [12, 0])


def test_bafd_efficient_branch_is_chosen_on_the_layer_rate_as_the_seed():
    # ResNet-18/34 block sharing: conv1 won 4 of 6 units, conv2 3 of 6, both get 7/12 > 0.5,
    # but floor(6 * 7/12) = 3 = n / 2: the seed (compress_rate > 0.5) takes the efficient branch
    rate = share_blockwise(
        [ConvTarget("b.conv1", "b.bn1", "b", "internal"), ConvTarget("b.conv2", "b.bn2", "b", "branch")],
        {"b.conv1": 4 / 6, "b.conv2": 3 / 6},
    )["b.conv1"]
    assert rate == pytest.approx(7 / 12)
    count = filters_to_prune(6, rate)
    assert count == 3
    assert select_bafd(PAIR_AND_FOUR, count, k=2, efficient=True, layer_rate=rate).tolist() == [0, 1, 2]
    # without the efficient flag, and at a rate of exactly 0.5, the greedy removal decides
    assert select_bafd(PAIR_AND_FOUR, count, k=2, layer_rate=rate).tolist() == [1, 2, 3]
    assert select_bafd(PAIR_AND_FOUR, count, k=2, efficient=True, layer_rate=0.5).tolist() == [1, 2, 3]


def test_soft_bafd_and_one_shot_bafd_pass_the_layer_rate_to_the_selection():
    model = tiny_resnet("resnet18_reid", stage_planes=[6, 8, 16, 16])
    target = next(t for t in prunable_convs(model, "bafd") if t.conv == "layer1.0.conv1")
    weight = model.get_submodule(target.conv).weight
    with torch.no_grad():  # the hand-built filters in the first two of the 6*3*3 entries
        weight.zero_()
        weight.view(6, -1)[:, :2] = PAIR_AND_FOUR.view(6, 2)
    callback = SoftFilterPruning("bafd", [target], {target.conv: 7 / 12}, rate=0.9, efficient=True)
    assert callback.select(model, target).tolist() == [0, 1, 2]
    assert select("bafd", weight, 3, k=2, efficient=True, layer_rate=7 / 12).tolist() == [0, 1, 2]


def test_select_in_slices_removes_the_same_positions_from_every_group():
    # 2 groups of 3 filters; position 1 has the smallest L1 summed over both groups (1 + 1 = 2),
    # although filter 5 (position 2 of group 1, L1 0.5) is the smallest single filter
    weight = torch.tensor([4.0, 1.0, 3.0, 4.0, 1.0, 0.5]).reshape(6, 1, 1, 1)
    assert select_in_slices(select_hfp, weight, 2, groups=2).tolist() == [1, 4]
    assert select_in_slices(select_hfp, weight, 2, groups=1).tolist() == [1, 5]
