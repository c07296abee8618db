"""Measurement: parameter and MAC counts (torch.utils.flop_counter), throughput and latency, and the
inference form (BatchNorm folded, channels_last) that speed is measured and deployed on."""

from reidprune.measure.deploy import conv_bn_pairs, fold_batchnorm, prepare_for_inference
from reidprune.measure.flops import block_names, count_gmacs
from reidprune.measure.params import count_params
from reidprune.measure.speed import benchmark_speed

__all__ = [
    "benchmark_speed",
    "block_names",
    "conv_bn_pairs",
    "count_gmacs",
    "count_params",
    "fold_batchnorm",
    "prepare_for_inference",
]
