"""Measured sensitivity curves (budget.sensitivity): sampling, monotone curves, the loss they give,
and a search that spares the groups the proxy finds sensitive."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from budget_helpers import batches, tiny_resnet, tiny_vit

from reidprune.budget.api import first_images, staged_search, to_budget
from reidprune.budget.candidates import Group, apply_plan, cnn_space, vit_space
from reidprune.budget.cost import GmacsCostModel
from reidprune.budget.proxy import EmbeddingProxy
from reidprune.budget.search import greedy_search
from reidprune.budget.sensitivity import (
    MIN_SLOPE,
    fingerprint,
    monotone_curve,
    sample_counts,
    with_sensitivity,
)
from reidprune.errors import CompressionError
from reidprune.measure.flops import count_gmacs


@pytest.mark.parametrize(
    ("capacity", "step", "points", "expected"),
    [
        (10, 1, 4, [2, 5, 8, 10]),
        (2, 1, 4, [1, 2]),
        (31, 4, 4, [8, 16, 24, 31]),
        (3, 4, 4, [3]),
        (0, 1, 4, []),
    ],
)
def test_sample_counts_spread_over_the_capacity_and_end_at_it(
    capacity: int, step: int, points: int, expected: list[int]
) -> None:
    assert sample_counts(capacity, step, points) == expected


def test_a_curve_never_falls_and_never_stays_flat() -> None:
    curve = monotone_curve([1, 2, 4], [0.3, 0.1, 0.5])
    assert curve[0] == (1, 0.3)
    assert curve[1] == (2, pytest.approx(0.3 + MIN_SLOPE))
    assert curve[2] == (4, 0.5)
    assert monotone_curve([1, 2], [0.0, 0.0])[1][1] > monotone_curve([1, 2], [0.0, 0.0])[0][1] > 0


def _tokens_removed(candidate) -> float:  # type: ignore[no-untyped-def]
    """A proxy that only sees tokens: the number of patch tokens the plan removes (tiny_vit: 33)."""
    spec = candidate.arch.tokens
    return float(sum(33 - len(k) for k in spec["kept"] if k is not None)) if spec else 0.0


def test_curves_measured_from_a_plan_keep_the_part_below_it_and_continue_from_its_loss() -> None:
    model, data = tiny_vit(heads=3), batches()
    space = with_sensitivity(model, vit_space(model, data, mode="skip"), _tokens_removed, points=4)
    index = next(i for i, g in enumerate(space.groups) if g.kind == "tokens")
    base = [0] * len(space.groups)
    base[index] = 10
    other = next(i for i, g in enumerate(space.groups) if g.kind == "tokens" and i != index)
    base[other] = 5
    again = with_sensitivity(model, space, _tokens_removed, points=4, base=base)
    old, new = space.groups[index], again.groups[index]
    assert [p for p in new.curve if p[0] < 10] == [p for p in old.curve if p[0] < 10]
    assert new.loss(10) == pytest.approx(old.loss(10))
    # the proxy counts tokens: every further token removed adds exactly 1 over the base plan
    for n, value in new.curve:
        if n > 10:
            assert value == pytest.approx(old.loss(10) + (n - 10))
    assert again.info["importance"]["stages"] == 2


def test_a_staged_search_measures_again_from_each_stage_and_meets_the_target() -> None:
    model, data = tiny_vit(heads=3), batches()
    space = with_sensitivity(model, vit_space(model, data, mode="skip"), EmbeddingProxy(model, data), 2)
    costs = GmacsCostModel.for_model(model)
    dense = costs.predict(space.sketch([0] * len(space.groups)))
    bases: list[list[int]] = []

    def measure(current, base):  # type: ignore[no-untyped-def]
        bases.append(list(base))
        return with_sensitivity(model, current, EmbeddingProxy(model, data), 2, base=base)

    result, last = staged_search(space, costs, 0.6 * dense, {}, stages=3, measure=measure)
    assert result.cost <= 0.6 * dense and len(bases) == 2
    goals = [dense - 0.4 * dense * k / 3 for k in (1, 2)]
    for base, goal in zip(bases, goals, strict=True):  # each stage stopped at its own goal
        assert costs.predict(space.sketch(base)) <= goal
    assert all(b <= a for a, b in zip(result.removed, bases[1], strict=True))  # later stages add
    assert last.info["importance"]["stages"] == 3
    one, _ = staged_search(space, costs, 0.6 * dense, {}, stages=1, measure=measure)
    assert one.removed == greedy_search(space, costs, 0.6 * dense).removed and len(bases) == 2


def test_a_group_with_a_curve_loses_what_the_curve_says_between_its_points() -> None:
    group = Group("heads", 0, 0, "b0", (0, 1, 2, 3, 4), (0.1,) * 5, 1, 1, curve=((2, 0.2), (4, 1.0)))
    assert [group.loss(n) for n in (0, 1, 2, 3, 4)] == pytest.approx([0.0, 0.1, 0.2, 0.6, 1.0])
    plain = Group("heads", 0, 0, "b0", (0, 1), (0.5, 0.5), 1, 1)
    assert plain.loss(1) == pytest.approx(-0.0 + 1.0 * 0.6931471805599453)  # -mass * ln(1/2)


def test_every_group_gets_the_proxy_of_its_own_removals() -> None:
    model, data = tiny_vit(heads=3), batches()
    space = vit_space(model, data, mode="skip")
    proxy = EmbeddingProxy(model, data)
    measured = with_sensitivity(model, space, proxy, points=3)
    assert measured.info["importance"] == {"kind": "sensitivity", "points": 3, "stages": 1, "cached": False}
    empty = [0] * len(space.groups)
    for index, group in enumerate(measured.groups):
        counts = [n for n, _ in group.curve]
        assert counts == sample_counts(space.capacity(empty, index), group.step, 3)
        removed = empty.copy()
        removed[index] = counts[-1]
        alone = proxy(apply_plan(model, space, removed))
        assert group.curve[-1][1] == pytest.approx(alone, abs=MIN_SLOPE * counts[-1])
        assert alone > 0.0  # removing a whole group's removable units moves the embeddings


def test_the_search_spares_the_groups_the_proxy_finds_sensitive() -> None:
    """A proxy that only sees tokens: every token removal costs, no head removal does. Scores
    alone remove tokens for this budget; with measured curves the search takes every removable
    head before it touches a token, and so removes fewer tokens."""
    model, data = tiny_vit(heads=3), batches()
    space = vit_space(model, data, mode="skip")
    costs = GmacsCostModel.for_model(model)
    target = 0.75 * costs.predict(space.sketch([0] * len(space.groups)))

    def lost(result, kind: str) -> int:  # type: ignore[no-untyped-def]
        return sum(n for n, g in zip(result.removed, space.groups, strict=True) if g.kind == kind)

    by_scores = greedy_search(space, costs, target)
    measured = greedy_search(with_sensitivity(model, space, _tokens_removed), costs, target)
    assert measured.cost <= target
    assert lost(measured, "heads") == sum(g.removable for g in space.groups if g.kind == "heads")
    assert lost(measured, "tokens") < lost(by_scores, "tokens")


def test_cnn_filters_get_curves_too() -> None:
    model, data = tiny_resnet("resnet18_reid"), batches(size=(32, 16))
    space = with_sensitivity(model, cnn_space(model), EmbeddingProxy(model, data), points=2)
    assert all(g.curve is not None and len(g.curve) <= 2 for g in space.groups)


def test_to_budget_measures_curves_with_data_and_not_without() -> None:
    model, data = tiny_vit(heads=3), batches()
    target = 0.7 * count_gmacs(model)["gmacs"]
    _, measured = to_budget(model, data, target_gmacs=target, sensitivity_images=4, sensitivity_points=2)
    importance = measured["search"]["space"]["importance"]
    assert importance["kind"] == "sensitivity" and importance["points"] == 2 and not importance["cached"]
    assert [c["stages"] for c in measured["candidates"]] == [1, 3]  # one-stage and staged, proxy picks
    assert importance["stages"] == measured["candidates"][measured["search"]["chosen"]]["stages"]
    _, scored = to_budget(model, data, target_gmacs=target, importance="scores")
    assert scored["search"]["space"]["importance"] == {"kind": "scores"}
    assert count_gmacs(to_budget(model, data, target_gmacs=target)[0])["gmacs"] <= target


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"importance": "taylor"}, "importance='taylor': expected one of sensitivity, scores"),
        ({"sensitivity_points": 0}, "sensitivity_points=0: expected an int >= 1"),
        ({"sensitivity_images": 2.5}, "sensitivity_images=2.5: expected an int >= 1"),
    ],
)
def test_bad_importance_options_are_refused(options: dict, expected: str) -> None:
    model = tiny_vit()
    with pytest.raises(CompressionError, match=expected.replace("(", r"\(")):
        to_budget(model, batches(), target_speedup=1.5, runtime="gmacs", **options)


def test_first_images_cuts_the_last_batch() -> None:
    data = batches(count=3)  # 4 images each
    cut = first_images(data, 6)
    assert [len(b["image"]) for b in cut] == [4, 2] and [len(b["label"]) for b in cut] == [4, 2]
    assert [len(b["image"]) for b in first_images(data, 100)] == [4, 4, 4]


def _no_proxy(candidate) -> float:  # type: ignore[no-untyped-def]
    raise AssertionError("the curves should have come from the cache")


def test_curves_are_cached_by_fingerprint_and_read_back(tmp_path: Path) -> None:
    model, data = tiny_vit(heads=3), batches()
    space = vit_space(model, data, mode="skip")
    key = fingerprint(model, data, space, 2)
    first = with_sensitivity(model, space, EmbeddingProxy(model, data), 2, tmp_path, key)
    assert (tmp_path / f"{key}.json").is_file()
    again = with_sensitivity(model, space, _no_proxy, 2, tmp_path, key)
    assert [g.curve for g in again.groups] == [g.curve for g in first.groups]
    assert again.info["importance"]["cached"] is True
    (tmp_path / f"{key}.json").write_text("{not json")  # a broken file is measured again
    mended = with_sensitivity(model, space, EmbeddingProxy(model, data), 2, tmp_path, key)
    assert [g.curve for g in mended.groups] == [g.curve for g in first.groups]


def test_the_fingerprint_follows_weights_images_and_points() -> None:
    model, data = tiny_vit(heads=3), batches()
    space = vit_space(model, data, mode="skip")
    key = fingerprint(model, data, space, 4)
    assert fingerprint(model, data, space, 4) == key
    assert fingerprint(model, data, space, 3) != key
    assert fingerprint(model, batches(count=2), space, 4) != key
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    assert fingerprint(model, data, space, 4) != key


def test_to_budget_reads_the_curves_of_an_earlier_search(tmp_path: Path) -> None:
    model, data = tiny_vit(heads=3), batches()
    target = 0.7 * count_gmacs(model)["gmacs"]
    once = {"sensitivity_cache": tmp_path, "sensitivity_stages": 1}  # the curves of the dense model only
    _, first = to_budget(model, data, target_gmacs=target, **once)
    _, second = to_budget(model, data, target_gmacs=0.6 * count_gmacs(model)["gmacs"], **once)
    assert first["search"]["space"]["importance"]["cached"] is False
    assert second["search"]["space"]["importance"]["cached"] is True
    assert len(list(tmp_path.glob("*.json"))) == 1
