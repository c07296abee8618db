"""Side-by-side measurement of several models: every field, interleaved rounds."""

from __future__ import annotations

import pytest
from export_helpers import amg_kv, vit_bnneck

from reidprune.export import bench_models, interleaved_times
from reidprune.export.benchmark import summarize_ms


def test_rounds_time_every_callable_once_in_rotated_order() -> None:
    calls: list[str] = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    times = interleaved_times(fns, rounds=3, warmup=1, steady=False)
    warmup, rounds = ["a", "b", "c"], ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert calls == [*warmup, *rounds]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_summary_is_median_and_p90_in_ms() -> None:
    stats = summarize_ms([0.001 * i for i in range(1, 11)])
    assert stats["median_ms"] == pytest.approx(5.5)
    assert stats["p90_ms"] == pytest.approx(9.0)


def test_bench_two_models_returns_every_field() -> None:
    result = bench_models([("dense", vit_bnneck()), ("amg", amg_kv())], batch_size=4, min_time=0.2, threads=1)
    assert [m["name"] for m in result["models"]] == ["dense", "amg"]
    for row in result["models"]:
        for key in ("params", "attn_params", "gmacs", "blocks_gmacs", "torch_throughput_ips"):
            assert row[key] > 0, key
        for key in ("torch_latency_ms_b1", "ort_latency_ms_b1"):
            assert 0 < row[key] <= row[f"{key}_p90"], key
        assert row["ort_vs_torch"] == pytest.approx(row["ort_latency_ms_b1"] / row["torch_latency_ms_b1"])
        assert row["onnx_check"]["passed"] and row["rounds"] >= 5
    dense, amg = result["models"]
    assert amg["gmacs"] < dense["gmacs"]  # AMG kv computes keys / values for fewer tokens
    assert result["settings"]["threads"] == 1 and result["settings"]["interleaved"]


def test_bench_without_onnx_and_throughput() -> None:
    result = bench_models([("dense", vit_bnneck())], batch_size=None, onnx=False, min_time=0.05)
    row = result["models"][0]
    assert "torch_latency_ms_b1" in row
    assert "torch_throughput_ips" not in row and "ort_latency_ms_b1" not in row


def test_bench_names_must_differ() -> None:
    with pytest.raises(ValueError, match="unique"):
        bench_models([("a", vit_bnneck()), ("a", vit_bnneck())], onnx=False)
