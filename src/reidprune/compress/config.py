"""Prune section of the experiment config: method, rate and the iterative schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PruneConfig:
    # token-amg | token-topk | token-pm | token-tome | head-entropy | head-magnitude | head-random
    # | filter-hfp | filter-sfp | filter-fpgm | filter-bafd | budget (joint search to a target: options
    # target_speedup / target_latency_ms / target_gmacs, runtime, batch, threads, ...) | none
    method: str = "none"
    rate: float = 0.0  # fraction removed (tokens, heads or filters)
    rounds: int = 1  # prune / fine-tune iterations
    finetune_epochs: int = 0  # fine-tuning epochs after each round
    final_epochs: int = 0  # fine-tuning epochs after the last round
    calib_batches: int = 0  # batches in a calibration pass (0 = the whole training set)
    # method-specific options (e.g. {"mode": "kv", "depth_discount": 0.0} for token-amg)
    options: dict[str, Any] = field(default_factory=dict)
    # filter methods: also save the full-size model with the removed filters zero (the BAFD seed's
    # net_last.pth form) in output_dir/masked/, next to the extracted model/
    save_masked: bool = False
