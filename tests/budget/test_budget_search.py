"""to_budget / greedy_search: targets met, valid plans, determinism, monotonicity, clear errors."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from budget_helpers import ScaledCost, batches, tiny_resnet, tiny_vit

from reidprune.budget.api import to_budget
from reidprune.budget.candidates import vit_space
from reidprune.budget.cost import GmacsCostModel
from reidprune.budget.search import greedy_search
from reidprune.errors import CompressionError
from reidprune.measure.flops import count_gmacs


def largest_unit_saving(model, space) -> float:  # type: ignore[no-untyped-def]
    """The most GMACs one unit (token, head, filter) saves from the dense plan: every later removal
    saves at most this much, so a plan stopping at the first cost <= target undershoots by less."""
    costs = GmacsCostModel.for_model(model)
    dense = costs.predict(space.sketch([0] * len(space.groups)))
    savings = []
    for index in range(len(space.groups)):
        removed = [0] * len(space.groups)
        removed[index] = 1
        savings.append(dense - costs.predict(space.sketch(removed)))
    return max(savings)


def test_a_vit_meets_a_gmacs_target_within_one_unit() -> None:
    model, data = tiny_vit(), batches()
    dense = count_gmacs(model)["gmacs"]
    target = 0.6 * dense
    small, plan = to_budget(model, data, target_gmacs=target)
    measured = count_gmacs(small)["gmacs"]
    # the cost model counts what the counter counts: exact up to float rounding
    assert measured == pytest.approx(plan["predicted_cost"], rel=1e-9)
    assert plan["measured_gmacs"] == pytest.approx(measured, rel=1e-12)
    tolerance = largest_unit_saving(model, vit_space(model, data, mode="skip"))
    assert target - tolerance < measured <= target
    assert plan["target"] == {
        "kind": "gmacs",
        "value": target,
        "cost": target,
        "unit": "GMACs",
        "correction": 1.0,
    }


def test_a_resnet_meets_a_gmacs_target_without_data() -> None:
    from reidprune.budget.candidates import cnn_space

    model = tiny_resnet()
    target = 0.7 * count_gmacs(model)["gmacs"]
    small, plan = to_budget(model, target_gmacs=target)
    measured = count_gmacs(small)["gmacs"]
    assert measured == pytest.approx(plan["predicted_cost"], rel=1e-9)
    assert target - largest_unit_saving(model, cnn_space(model)) < measured <= target
    widths = [b["widths"] for b in plan["blocks"]]
    assert widths == small.arch.mid_widths
    assert all(w >= 1 for block in widths for w in block)
    assert plan["proxy"] is None and len(plan["candidates"]) == 1


def test_every_block_of_a_searched_vit_keeps_cls_a_patch_and_a_head() -> None:
    model = tiny_vit(heads=3)
    small, plan = to_budget(model, batches(), target_speedup=2.5, runtime="gmacs")
    spec = small.arch.tokens
    assert spec["method"] == "amg" and spec["mode"] == "skip"
    for kept in spec["kept"]:
        assert kept is None or (kept[0] == 0 and len(kept) >= 2)
    assert all(h >= 1 for h in small.arch.num_heads)
    assert [b["heads"] for b in plan["blocks"]] == small.arch.num_heads
    assert [b["kept_tokens"] for b in plan["blocks"]] == [len(k) if k else 33 for k in spec["kept"]]
    assert plan["predicted_speedup"] >= 2.5
    out = small.eval()(torch.randn(2, 3, 64, 32))
    assert out.embedding.shape == (2, 32)
    assert small.compression_plan.method == "budget-search"


def test_the_same_inputs_give_the_same_plan_and_weights() -> None:
    model, data = tiny_vit(), batches()
    first, plan_a = to_budget(model, data, target_gmacs=0.7 * count_gmacs(model)["gmacs"])
    second, plan_b = to_budget(model, data, target_gmacs=0.7 * count_gmacs(model)["gmacs"])
    # the second search reads the sensitivity curves the first one measured; all else is equal
    assert plan_b["search"]["space"]["importance"].pop("cached") is True
    plan_a["search"]["space"]["importance"].pop("cached")
    assert json.dumps(plan_a, sort_keys=True) == json.dumps(plan_b, sort_keys=True)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_a_tighter_budget_never_costs_more() -> None:
    model, data = tiny_vit(heads=3), batches()
    space = vit_space(model, data, mode="skip")
    costs = GmacsCostModel.for_model(model)
    dense = costs.predict(space.sketch([0] * len(space.groups)))
    results = [greedy_search(space, costs, f * dense) for f in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4)]
    spent = [r.cost for r in results]
    assert spent == sorted(spent, reverse=True) and len(set(spent)) == len(spent)
    removed = [r.removed for r in results]
    for looser, tighter in itertools.pairwise(removed):  # one removal path: a tighter plan removes more
        assert all(t >= s for s, t in zip(looser, tighter, strict=True))


def test_a_latency_target_is_met_with_a_millisecond_cost_model() -> None:
    model, data = tiny_vit(), batches()
    costs = ScaledCost(GmacsCostModel.for_model(model))
    dense_ms = 1000.0 * count_gmacs(model)["gmacs"]
    small, plan = to_budget(model, data, target_latency_ms=0.75 * dense_ms, cost_model=costs)
    assert plan["target"]["unit"] == "ms" and plan["predicted_cost"] <= 0.75 * dense_ms
    assert 1000.0 * count_gmacs(small)["gmacs"] == pytest.approx(plan["predicted_cost"], rel=1e-9)
    _, plan = to_budget(model, data, target_speedup=1.5, cost_model=costs)
    assert plan["predicted_speedup"] >= 1.5
    assert plan["target"]["cost"] == pytest.approx(dense_ms / 1.5)


def test_an_impossible_budget_is_one_line_naming_the_smallest_plan() -> None:
    with pytest.raises(CompressionError) as err:
        to_budget(tiny_vit(), batches(), target_gmacs=1e-6)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("budget 1e-06 GMACs cannot be reached: the smallest plan of this search")


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ({"target_gmacs": 1.0, "target_speedup": 2.0}, "give exactly one budget target"),
        ({}, "give exactly one budget target"),
        ({"target_speedup": 0.5}, "target_speedup=0.5: expected >= 1"),
        ({"target_gmacs": -1.0}, "target_gmacs=-1.0: expected a positive number"),
        ({"target_latency_ms": 3.0, "runtime": "gmacs"}, "needs a latency runtime"),
        ({"target_speedup": 2.0, "runtime": "tensorrt"}, "runtime 'tensorrt'"),
        ({"target_speedup": 2.0, "correction": 0.0}, "correction=0.0"),
    ],
)
def test_bad_targets_are_refused_before_calibration(targets: dict, expected: str) -> None:
    with pytest.raises(CompressionError, match=expected) as err:
        to_budget(tiny_vit(), [], **targets)  # an empty loader: refused before it is read
    assert "\n" not in str(err.value)


def test_a_millisecond_model_cannot_serve_a_gmacs_target() -> None:
    model = tiny_vit()
    with pytest.raises(CompressionError, match="target_gmacs needs a cost model in GMACs"):
        to_budget(model, batches(), target_gmacs=0.1, cost_model=ScaledCost(GmacsCostModel.for_model(model)))


class _Stepped:
    """GMACs rounded up to coarse levels: like a noisy table made monotone, one step often saves nothing."""

    unit = "GMACs"

    def __init__(self, inner: GmacsCostModel, level: float) -> None:
        self.inner, self.level = inner, level

    def predict(self, sketch) -> float:  # type: ignore[no-untyped-def]
        import math

        return math.ceil(self.inner.predict(sketch) / self.level) * self.level

    def describe(self) -> dict:
        return {"kind": "stepped gmacs"}


def test_flat_stretches_of_the_cost_are_crossed_by_longer_steps() -> None:
    model = tiny_vit()
    space = vit_space(model, batches(), mode="skip")
    inner = GmacsCostModel.for_model(model)
    dense = inner.predict(space.sketch([0] * len(space.groups)))
    costs = _Stepped(inner, dense / 8)  # 8 levels: no single token slice or head crosses one
    target = dense * 0.7
    result = greedy_search(space, costs, target)
    assert result.cost <= target
    assert costs.predict(space.sketch(result.removed)) == result.cost


class _ReducerEntryCost:
    """GMACs plus a fixed charge for every block that reduces its tokens at all (a reducer's
    gathers on a real runtime): the first token step of a block saves less than nothing."""

    unit = "GMACs"

    def __init__(self, inner: GmacsCostModel, charge: float) -> None:
        self.inner, self.charge = inner, charge

    def predict(self, sketch) -> float:  # type: ignore[no-untyped-def]
        reducing = sum(k < t for k, t in zip(sketch.kept, sketch.tokens, strict=True))
        return self.inner.predict(sketch) + self.charge * reducing

    def describe(self) -> dict:
        return {"kind": "gmacs with a reducer entry charge"}


def test_a_reducer_entry_cost_does_not_push_the_search_onto_heads_only() -> None:
    """Judged one step at a time, the first token slice of every block costs more than it saves,
    so the old search emptied every block's heads first; looking 2, 4, 8 ... steps ahead it finds
    that a longer token move pays back its entry charge."""
    model = tiny_vit()
    space = vit_space(model, batches(), mode="skip")
    inner = GmacsCostModel.for_model(model)
    dense = inner.predict(space.sketch([0] * len(space.groups)))
    token_slice = next(g for g in space.groups if g.kind == "tokens").step
    charge = 2 * (dense - inner.predict(space.sketch([token_slice if g.kind == "tokens" and g.block == 0 else 0 for g in space.groups])))  # fmt: skip
    costs = _ReducerEntryCost(inner, charge)
    result = greedy_search(space, costs, dense * 0.75, {"tokens": 1.0, "heads": 1.0})
    assert result.cost <= dense * 0.75
    removed_tokens = sum(n for g, n in zip(space.groups, result.removed, strict=True) if g.kind == "tokens")
    assert removed_tokens > 0
    head_groups = [(g, n) for g, n in zip(space.groups, result.removed, strict=True) if g.kind == "heads"]
    assert not all(n == g.removable for g, n in head_groups), "every head group was emptied first"
