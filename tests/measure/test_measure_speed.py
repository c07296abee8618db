"""Speed measurement protocol (numbers are never asserted; only what is reported and left behind)."""

from __future__ import annotations

import torch
from torch import nn

from reidprune.measure import benchmark_speed
from reidprune.models.vit import VisionTransformer


def _model() -> VisionTransformer:
    return VisionTransformer(img_size=(32, 32), embed_dim=16, num_heads=(2,), head_dim=8, num_classes=0)


def test_reports_throughput_latency_and_settings() -> None:
    result = benchmark_speed(_model(), batch_size=4, input_size=(32, 32), warmup=1, iters=2, latency_iters=5)
    assert result["throughput_ips"] > 0
    assert 0 < result["latency_ms_b1"] <= result["latency_ms_b1_p90"]
    assert result["batch_size"] == 4 and result["input_size"] == [32, 32]
    assert result["device"] == "cpu" and result["dtype"] == "float32"
    assert result["threads"] == torch.get_num_threads()
    assert result["iters"] == 2 and result["latency_iters"] == 5


def test_other_dtype_measures_a_copy_and_restores_threads_and_mode() -> None:
    model = _model().train()
    threads = torch.get_num_threads()
    result = benchmark_speed(
        model,
        batch_size=2,
        input_size=(32, 32),
        dtype=torch.bfloat16,
        warmup=1,
        iters=1,
        latency_iters=1,
        threads=1,
    )
    assert result["dtype"] == "bfloat16" and result["threads"] == 1
    assert next(model.parameters()).dtype == torch.float32
    assert model.training
    assert torch.get_num_threads() == threads


def test_min_time_decides_the_number_of_passes() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    result = benchmark_speed(model, batch_size=2, input_size=(8, 8), min_time=0.05)
    assert result["iters"] >= 3 and result["latency_iters"] >= 3
