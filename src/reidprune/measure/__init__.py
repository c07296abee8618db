"""Measurement: parameter and MAC counts (torch.utils.flop_counter), throughput and latency (one timing implementation, `measure.timing`), and the
inference form (BatchNorm folded, channels_last) that speed is measured and deployed on."""

import warnings
from typing import Any

from reidprune.measure.deploy import conv_bn_pairs, fold_batchnorm, prepare_for_inference
from reidprune.measure.flops import count_gmacs, find_blocks
from reidprune.measure.params import count_params
from reidprune.measure.speed import benchmark_speed
from reidprune.measure.timing import interleaved_times, latency_ms, model_call, summarize_ms

__all__ = [
    "benchmark_speed",
    "conv_bn_pairs",
    "count_gmacs",
    "count_params",
    "find_blocks",
    "fold_batchnorm",
    "interleaved_times",
    "latency_ms",
    "model_call",
    "prepare_for_inference",
    "summarize_ms",
]


def __getattr__(name: str) -> Any:
    # deprecated for one release: the name clashed with models.resnet.block_names (a ResNet arch's blocks)
    if name == "block_names":
        warnings.warn("reidprune.measure.block_names is now find_blocks", DeprecationWarning, stacklevel=2)
        return find_blocks
    raise AttributeError(f"module 'reidprune.measure' has no attribute '{name}'")
