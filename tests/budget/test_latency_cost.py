"""The search's latency cost model: predict(sketch) is the latency model's prediction for the model
the plan produces (same tables, same formula), built once and then free of any timing."""

from __future__ import annotations

from pathlib import Path

import pytest
from budget_helpers import batches, tiny_resnet, tiny_vit

from reidprune.budget import Grid, LatencyModel
from reidprune.budget.candidates import apply_plan, cnn_space, vit_space
from reidprune.budget.cost import latency_cost_model
from reidprune.errors import CompressionError

SMALL = Grid(
    token_fractions=(0.5, 1.0), kv_fractions=(0.5, 1.0), head_fractions=(0.0, 1.0), width_fractions=(0.5, 1.0)
)
OPTIONS = {"grid": SMALL, "min_time": 0.001, "calib_time": 0.01}


def _predicted(model, cache: Path) -> float:  # type: ignore[no-untyped-def]
    with LatencyModel("torch", 1, 1, cache=cache, grid=SMALL, measure=False) as lm:
        return lm.predict(model)["predicted_ms"]


@pytest.mark.parametrize("mode", ["kv", "skip"])
def test_vit_sketch_prediction_equals_the_latency_model_on_the_built_model(mode: str, tmp_path: Path) -> None:
    model = tiny_vit(heads=3)
    costs = latency_cost_model(model, "torch", batch=1, threads=1, cache=tmp_path, **OPTIONS)
    assert costs.unit == "ms" and costs.describe()["calibration"]["calibrated"]
    space = vit_space(model, batches(), mode=mode)
    dense = [0] * len(space.groups)
    # uneven: block i loses 5 * (i + 1) tokens and i heads; block 0 stays dense
    removed = [(5 * g.block if g.kind == "tokens" else g.block) for g in space.groups]
    for plan in (dense, removed):
        expected = _predicted(apply_plan(model, space, plan), tmp_path)
        assert costs.predict(space.sketch(plan)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("method", ["topk", "tome"])
def test_top_k_and_tome_sketch_predictions_equal_the_latency_model(method: str, tmp_path: Path) -> None:
    model = tiny_vit(heads=3)
    costs = latency_cost_model(
        model, "torch", batch=1, threads=1, cache=tmp_path, token_kinds=(method,), **OPTIONS
    )
    space = vit_space(model, batches(), token_method=method)
    tables = costs.vit_blocks[0].reducer_tables  # type: ignore[index]
    assert set(tables) == {method} and tables[method].axes == ((17, 33),)  # tokens entering the block
    # uneven: block i drops / merges 4 * i tokens and loses i heads; then the cheapest plan
    uneven = [(4 * g.block if g.kind == "tokens" else g.block) for g in space.groups]
    for plan in (uneven, space.most_removed()):
        built = apply_plan(model, space, plan)
        assert built.arch.tokens["method"] == method
        assert costs.predict(space.sketch(plan)) == pytest.approx(_predicted(built, tmp_path), rel=1e-9)


def test_a_cost_model_without_a_reducers_table_says_so(tmp_path: Path) -> None:
    model = tiny_vit()
    costs = latency_cost_model(model, "torch", batch=1, threads=1, cache=tmp_path, **OPTIONS)
    space = vit_space(model, batches(), token_method="tome")
    with pytest.raises(CompressionError, match="built without the 'tome' reducer's table"):
        costs.predict(space.sketch([1 if g.kind == "tokens" else 0 for g in space.groups]))


def test_resnet_sketch_prediction_equals_the_latency_model_on_the_extracted_model(tmp_path: Path) -> None:
    model = tiny_resnet()
    costs = latency_cost_model(model, "torch", batch=1, threads=1, cache=tmp_path, **OPTIONS)
    space = cnn_space(model)
    removed = [i % g.size for i, g in enumerate(space.groups)]
    expected = _predicted(apply_plan(model, space, removed), tmp_path)
    assert costs.predict(space.sketch(removed)) == pytest.approx(expected, rel=1e-9)


def test_a_second_cost_model_reads_every_table_from_the_cache(tmp_path: Path) -> None:
    first = latency_cost_model(tiny_vit(), "torch", batch=1, threads=1, cache=tmp_path, **OPTIONS)
    again = latency_cost_model(tiny_vit(), "torch", batch=1, threads=1, cache=tmp_path, **OPTIONS)
    assert first.describe()["measured_points"] > 0 and again.describe()["measured_points"] == 0
    assert again.describe()["scale"] == first.describe()["scale"]


def test_an_unknown_runtime_is_one_line() -> None:
    with pytest.raises(CompressionError, match="runtime 'tensorrt'"):
        latency_cost_model(tiny_vit(), "tensorrt", batch=1, threads=1)
