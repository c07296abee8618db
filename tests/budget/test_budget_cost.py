"""The GMACs cost model predicts exactly what measure.count_gmacs counts, for any plan."""

from __future__ import annotations

import pytest
from budget_helpers import batches, tiny_resnet, tiny_vit

from reidprune.budget.candidates import apply_plan, cnn_space, vit_space
from reidprune.budget.cost import GmacsCostModel
from reidprune.measure.flops import count_gmacs


@pytest.mark.parametrize("mode", ["kv", "skip"])
def test_vit_prediction_equals_the_counter_for_an_uneven_plan(mode: str) -> None:
    model = tiny_vit(heads=3)
    space = vit_space(model, batches(), mode=mode)
    costs = GmacsCostModel.for_model(model)
    # a different number of units off every group: block i loses 5 * (i + 1) tokens and i heads
    removed = [5 * (g.block + 1) if g.kind == "tokens" else g.block for g in space.groups]
    predicted = costs.predict(space.sketch(removed))
    measured = count_gmacs(apply_plan(model, space, removed))["gmacs"]
    assert predicted == pytest.approx(measured, rel=1e-12)
    assert predicted < costs.predict(space.sketch([0] * len(space.groups)))


@pytest.mark.parametrize("method", ["topk", "tome"])
@pytest.mark.parametrize(
    "extra",
    [{}, {"class_token": False, "global_pool": "avg", "head": "bnneck"}, {"reg_tokens": 2, "head": "bnneck"}],
    ids=["cls", "no-cls", "registers"],
)
def test_top_k_and_tome_predictions_equal_the_counter(method: str, extra: dict) -> None:
    model = tiny_vit(heads=3, **extra)
    space = vit_space(model, batches(), token_method=method)
    costs = GmacsCostModel.for_model(model)
    # block i drops / merges 3 * (i + 1) tokens and loses i heads; the reducers' own products count
    removed = [3 * (g.block + 1) if g.kind == "tokens" else g.block for g in space.groups]
    predicted = costs.predict(space.sketch(removed))
    assert predicted == pytest.approx(count_gmacs(apply_plan(model, space, removed))["gmacs"], rel=1e-12)
    most = space.most_removed()
    assert costs.predict(space.sketch(most)) == pytest.approx(
        count_gmacs(apply_plan(model, space, most))["gmacs"], rel=1e-12
    )


@pytest.mark.parametrize("name", ["resnet18_reid", "resnet50_reid"])
def test_resnet_prediction_equals_the_counter_for_an_uneven_plan(name: str) -> None:
    model = tiny_resnet(name)
    space = cnn_space(model)
    costs = GmacsCostModel.for_model(model)
    assert costs.predict(space.sketch([0] * len(space.groups))) == pytest.approx(
        count_gmacs(model)["gmacs"], rel=1e-12
    )
    removed = [i % g.size for i, g in enumerate(space.groups)]
    measured = count_gmacs(apply_plan(model, space, removed))["gmacs"]
    assert costs.predict(space.sketch(removed)) == pytest.approx(measured, rel=1e-12)
