"""torch.distributed set-up under torchrun: one process per device, NCCL on GPUs, gloo on CPUs.

`init_distributed()` reads the environment torchrun sets (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT) and does nothing in a plain single-process run, so the same code path
serves `python -m ...` and `torchrun --nproc_per_node N --nnodes M ...`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from reidprune.schema import check_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank and world size of this process (single process when torch.distributed is not initialised)."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), local, dist.get_world_size())
    return DistInfo()


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); idempotent.

    device: "auto" | "cuda" | "cpu" picks the backend (NCCL needs CUDA; gloo runs anywhere).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return dist_info()
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device != "cpu"
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return dist_info()


def resolve_device(device: str | torch.device | None = "auto", key: str = "device") -> torch.device:
    """The torch.device for a configured device: the one place `train`, `eval` and `measure` turn names into devices.

    "auto"/None: this process's GPU (LOCAL_RANK under torchrun, else GPU 0) when CUDA is present,
    else the CPU. Any other name must be cpu, cuda, cuda:N or mps (ConfigError naming `key`).
    """
    if isinstance(device, torch.device):
        return device
    if device is None or check_device(device, key) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(device)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order ([obj] when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean over ranks (a copy; the input is left alone)."""
    out = values.detach().clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= dist.get_world_size()
    return out


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s buffers (BN running statistics) to every rank.

    DDP broadcasts them at the start of each forward, so after the last step every rank holds its
    own local update; syncing at epoch ends makes callbacks, validation and the returned model agree.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=src)
