"""The ResNet latency calibration: a scale and a per-probe offset fitted on the dense and the
half-width reference (`budget.calibration`), so that pruned widths are priced right.

A fake runtime makes the figures deterministic: a probe "takes" 1e-6 ms per multiply-accumulate of
its convs and linears, plus what every call and every probe's input and output cost
(`fake_ms`). Isolated blocks then pay an I/O cost the whole graph does not, as on a real runtime;
one scale fitted on the dense model cannot remove it, the two-point fit can.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from budget_helpers import tiny_resnet
from torch import Tensor, nn

from reidprune.budget import Grid, LatencyModel
from reidprune.budget.calibration import block_offsets, fit_two_point, one_point
from reidprune.budget.candidates import apply_plan, cnn_space
from reidprune.budget.cost import latency_cost_model
from reidprune.budget.latency import half_width_reference
from reidprune.budget.probes import EmbeddingProbe
from reidprune.budget.runtimes import Runner

SMALL = Grid(width_fractions=(0.25, 0.5, 1.0))
OPTIONS = {"grid": SMALL, "min_time": 0.001, "calib_time": 0.01}


def fake_ms(module: nn.Module, inputs: tuple[Tensor, ...]) -> float:
    """0.05 ms a call + 1e-6 ms per multiply-accumulate + 1e-5 ms per element fed in or copied out."""
    macs = 0

    def count(layer: nn.Module, _args: Any, out: Tensor) -> None:
        nonlocal macs
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            macs += out.numel() * layer.in_channels // layer.groups * kh * kw
        elif isinstance(layer, nn.Linear):
            macs += out.numel() * layer.in_features

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        with torch.inference_mode():
            out = module.eval()(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    elements = sum(t.numel() for t in inputs) + out.numel()
    return 0.05 + 1e-6 * macs + 1e-5 * elements


@pytest.fixture
def fake_runtime(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    """Every runtime call costs `fake_ms`; fake_runtime(False) makes any timing fail instead."""

    def install(allowed: bool = True) -> None:
        def callable_(self: Runner, module: nn.Module, inputs: tuple[Tensor, ...]) -> Callable[[], float]:
            if not allowed:
                raise AssertionError(f"{type(module).__name__} was timed; everything should be cached")
            ms = fake_ms(module, inputs)
            return lambda: ms

        monkeypatch.setattr(Runner, "callable", callable_)
        monkeypatch.setattr(
            LatencyModel, "_time_many", lambda self, fns, min_time: {k: f() for k, f in fns.items()}
        )

    install()
    return install


def whole_ms(model: nn.Module) -> float:
    """The fake runtime's time of the whole model, as `LatencyModel._whole_call` runs it."""
    inputs = (torch.randn(1, 3, 32, 16), torch.zeros(1, dtype=torch.long))
    return fake_ms(EmbeddingProbe(model), inputs)


def pruned(model: nn.Module) -> nn.Module:
    space = cnn_space(model)
    return apply_plan(model, space, [(3 * i) % g.size for i, g in enumerate(space.groups)]).eval()


def test_both_references_and_a_pruned_model_are_predicted_as_measured(fake_runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = tiny_resnet()
    small = pruned(model)
    with LatencyModel("torch", 1, 1, cache=tmp_path, **OPTIONS) as lm:
        result = lm.predict(small)
    calib = result["calibration"]
    assert calib["method"] == "two-point" and calib["fallback"] is None
    assert calib["offset_ms_per_element"] > 0 and calib["offset_ms"] > 0
    for prefix in ("reference", "half_reference"):
        assert calib[f"{prefix}_predicted_ms"] == pytest.approx(calib[f"{prefix}_measured_ms"], rel=1e-9)
    assert calib["reference_measured_ms"] == pytest.approx(whole_ms(model))
    assert calib["half_reference_measured_ms"] == pytest.approx(whole_ms(half_width_reference(model)))
    # the fake's per-probe I/O is a fixed extra per block: the fit removes it for ANY widths
    assert result["predicted_ms"] == pytest.approx(whole_ms(small), rel=1e-9)
    # where one scale fitted on the dense model alone over-prices the pruned blocks
    with LatencyModel("torch", 1, 1, cache=tmp_path, calibrate=False, **OPTIONS) as lm:
        raw = lm.predict(small)
    fixed = raw["call_ms"] + raw["fixed_ms"]
    scale = one_point(calib["reference_measured_ms"] - fixed, calib["reference_blocks_ms"])
    assert fixed + scale * raw["blocks_ms"] > 1.01 * whole_ms(small)


def test_the_cost_model_equals_the_latency_model_with_the_offsets(fake_runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = tiny_resnet()
    costs = latency_cost_model(model, "torch", batch=1, threads=1, cache=tmp_path, **OPTIONS)
    assert costs.describe()["calibration"]["method"] == "two-point"
    space = cnn_space(model)
    for removed in ([0] * len(space.groups), [(3 * i) % g.size for i, g in enumerate(space.groups)]):
        with LatencyModel("torch", 1, 1, cache=tmp_path, grid=SMALL, measure=False) as lm:
            expected = lm.predict(apply_plan(model, space, removed))["predicted_ms"]
        assert costs.predict(space.sketch(removed)) == pytest.approx(expected, rel=1e-9)


def test_a_second_prediction_measures_nothing(fake_runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = tiny_resnet()
    first = LatencyModel("torch", 1, 1, cache=tmp_path, **OPTIONS)
    with first:
        before = first.predict(pruned(model))
    assert before["measured_points"] > 0
    fake_runtime(False)  # timing anything now fails the test
    with LatencyModel("torch", 1, 1, cache=tmp_path, **OPTIONS) as again:
        after = again.predict(pruned(model))
    assert after["measured_points"] == 0
    assert after["calibration"] == before["calibration"] and after["predicted_ms"] == before["predicted_ms"]


def test_without_the_half_reference_the_dense_one_alone_calibrates(fake_runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = tiny_resnet()
    with LatencyModel("torch", 1, 1, cache=tmp_path, **OPTIONS) as lm:
        lm.predict(model)
        half = [k for k in lm.cache.points if k.startswith("whole|resnet|") and k.endswith("|mids=half")]
        assert len(half) == 1
    fake_runtime(False)
    with LatencyModel("torch", 1, 1, cache=tmp_path, grid=SMALL, measure=False) as lm:
        del lm.cache.points[half[0]]  # a table cached before the two-point fit existed
        result = lm.predict(model)
    calib = result["calibration"]
    assert calib["method"] == "one-point" and "no half-width reference" in calib["fallback"]
    assert calib["offset_ms_per_element"] == 0 and calib["half_reference_measured_ms"] is None
    assert result["predicted_ms"] == pytest.approx(calib["reference_measured_ms"], rel=1e-9)


@pytest.mark.parametrize(
    ("half", "reason"),
    [
        (None, "no half-width reference"),
        ((5.0, 10.0), "no cheaper in the tables"),
        ((8.0, 6.0), "measured no faster"),
        ((7.0, 6.0), "negative offset"),  # isolated blocks cheaper than in the graph
        ((0.1, 9.99), "outside"),  # a scale of 790: a broken measurement
    ],
)
def test_degenerate_references_fall_back_to_one_point(half: tuple[float, float] | None, reason: str) -> None:
    fit = fit_two_point((8.0, 10.0), half, io=[500.0, 500.0], caps=[2.0, 2.0])  # (measured, table) ms
    assert fit.method == "one-point" and reason in (fit.fallback or "")
    assert fit.offset_per_io == 0 and fit.scale == pytest.approx(0.8)  # the dense one predicted exactly


def test_the_two_point_fit_solves_both_references() -> None:
    dense, half, io = (8.0, 10.0), (3.0, 4.0), [600.0, 400.0]  # isolated blocks pay 0.4 table-ms extra
    fit = fit_two_point(dense, half, io=io, caps=[2.0, 2.0])
    assert fit.method == "two-point" and fit.fallback is None and fit.scale == pytest.approx(5 / 6)
    taken = block_offsets(fit.offset_per_io, io, [2.0, 2.0])
    assert taken == pytest.approx([0.24, 0.16])  # in proportion to the blocks' I/O
    for measured, table in (dense, half):
        assert fit.scale * (table - sum(taken)) == pytest.approx(measured)


def test_a_block_offset_stops_at_its_cheapest_point_and_the_others_carry_the_rest() -> None:
    dense, half, io = (8.0, 10.0), (3.0, 4.0), [600.0, 400.0]
    caps = [0.1, 2.0]  # block 0 costs 0.1 ms at its narrowest: it cannot lose 0.24
    fit = fit_two_point(dense, half, io=io, caps=caps)
    taken = block_offsets(fit.offset_per_io, io, caps)
    assert fit.method == "two-point" and taken == pytest.approx([0.1, 0.3])
    assert fit.scale * (4.0 - sum(taken)) == pytest.approx(3.0)
    small = fit_two_point(dense, half, io=io, caps=[0.05, 0.05])  # 0.1 ms at most in all
    assert small.method == "capped" and block_offsets(small.offset_per_io, io, [0.05, 0.05]) == [0.05, 0.05]
    assert small.scale * (10.0 - 0.1) == pytest.approx(8.0)  # the dense reference stays exact
