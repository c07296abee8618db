"""The one timing implementation: rounds, warm-up, percentiles, threads (numbers never asserted)."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from reidprune.measure.timing import interleaved_times, latency_ms, model_call, percentile, torch_threads


def test_warmup_then_rounds_in_rotated_order() -> None:
    calls: list[str] = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "ab"}
    times = interleaved_times(fns, rounds=2, warmup=2, steady=False)
    assert calls == ["a", "a", "b", "b", "a", "b", "b", "a"]
    assert {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2}


def test_steady_state_every_timed_call_follows_a_call_of_itself() -> None:
    calls: list[str] = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "ab"}
    times = interleaved_times(fns, rounds=3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    # warm-up a b, then rounds a b | b a | a b: each timed call right after an untimed call of
    # itself, none added where the same key ran last anyway (b then b, a then a)
    assert calls[2:] == ["a", "a", "b", "b", "b", "a", "a", "a", "b", "b"]


def test_a_single_callable_gets_no_extra_calls() -> None:
    calls: list[str] = []
    interleaved_times({"x": lambda: calls.append("x")}, rounds=4, warmup=1)
    assert len(calls) == 5


def test_min_rounds_holds_without_an_upper_bound() -> None:
    times = interleaved_times({"x": lambda: None}, min_time=0.0, min_rounds=7, max_rounds=None)
    assert len(times["x"]) == 7


def test_percentile_is_a_measured_value_by_nearest_rank() -> None:
    samples = [0.4, 0.1, 0.3, 0.2]
    assert percentile(samples, 50) == 0.2
    assert percentile(samples, 90) == 0.4
    assert percentile([0.5], 10) == 0.5
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_threads_are_set_inside_and_restored_after() -> None:
    before = torch.get_num_threads()
    with torch_threads(1) as used:
        assert used == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with torch_threads(None) as used:
        assert used == before


def test_model_call_and_latency_of_plain_modules() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 6, 2))
    assert model_call(model, 3, input_size=(4, 6))().shape == (3, 2)
    model.arch = type("Arch", (), {"img_size": (4, 6)})()  # what reidprune models carry
    stats = latency_ms({"a": model, "b": model}, rounds=3)
    assert set(stats) == {"a", "b"} and all(0 < s["median_ms"] <= s["p90_ms"] for s in stats.values())


def test_a_before_hook_runs_untimed_right_before_each_call_of_its_key() -> None:
    calls: list[str] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = interleaved_times(fns, rounds=4, warmup=2, before={"b": lambda: calls.append("flush")})
    assert len(times["a"]) == len(times["b"]) == 4
    # every call of b, warm-up included, directly follows its hook; a never does
    for i, name in enumerate(calls):
        if name == "b":
            assert calls[i - 1] == "flush"
        if name == "flush":
            assert calls[i + 1] == "b"
    assert calls.count("flush") == calls.count("b") == 6


def test_the_hook_is_not_part_of_the_timed_call() -> None:
    times = interleaved_times({"x": lambda: None}, rounds=3, warmup=1, before={"x": lambda: time.sleep(0.05)})
    assert max(times["x"]) < 0.05
