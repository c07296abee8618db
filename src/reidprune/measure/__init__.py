"""Measurement: parameter and MAC counts (torch.utils.flop_counter), throughput and latency (one timing implementation, `measure.timing`), and the
inference form (BatchNorm folded, channels_last) that speed is measured and deployed on."""

from reidprune.measure.deploy import conv_bn_pairs, fold_batchnorm, prepare_for_inference
from reidprune.measure.flops import block_names, count_gmacs
from reidprune.measure.params import count_params
from reidprune.measure.speed import benchmark_speed
from reidprune.measure.timing import interleaved_times, latency_ms, model_call, summarize_ms

__all__ = [
    "benchmark_speed",
    "block_names",
    "conv_bn_pairs",
    "count_gmacs",
    "count_params",
    "fold_batchnorm",
    "interleaved_times",
    "latency_ms",
    "model_call",
    "prepare_for_inference",
    "summarize_ms",
]
