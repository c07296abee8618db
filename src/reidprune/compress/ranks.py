"""Calibration statistics under torchrun: every rank calibrates on its shard, then the statistics
are summed over ranks so that every rank prunes with the same numbers.

The collectives use torch.distributed directly (`compress` sits beside `train`, not above it) and
do nothing in a single process.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from reidprune.errors import CompressionError


def world_size() -> int:
    """Ranks of the initialised process group (1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks, on the device the backend needs (NCCL: this rank's GPU), returned
    on `values`' device; `values` itself is left alone."""
    if world_size() == 1:
        return values.clone()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    out = values.detach().to(device, copy=True)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(values.device)


def check_same_layout(what: str, layout: Any) -> None:
    """CompressionError unless every rank recorded the same layout (collective; e.g. layer ->
    [updates, size]): a rank with other batches or layers would otherwise hang or mix statistics."""
    if world_size() == 1:
        return
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, layout)
    for rank, other in enumerate(gathered):
        if other != gathered[0]:
            raise CompressionError(
                f"{what}: rank {rank} calibrated {other} but rank 0 {gathered[0]}; every rank needs the "
                "same number of calibration batches (prune.calib_batches and equal data shards)"
            )
