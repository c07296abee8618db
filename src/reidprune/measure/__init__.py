"""Measurement: parameter and MAC counts (torch.utils.flop_counter), throughput and latency."""

from reidprune.measure.flops import block_names, count_gmacs
from reidprune.measure.params import count_params
from reidprune.measure.speed import benchmark_speed

__all__ = ["benchmark_speed", "block_names", "count_gmacs", "count_params"]
