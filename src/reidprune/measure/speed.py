"""Throughput and latency of a model's forward pass, measured the way edge users need them.

Protocol: eval mode, `torch.inference_mode`, a random input of fixed shape, warm-up passes first,
device synchronisation around every timed region on CUDA. Throughput (images/s) at `batch_size`;
latency at batch 1 from individually timed passes (median and 90th percentile), because a
deployment on an edge device usually sees one image at a time. With `deploy=True` the model is
timed in its inference form (`measure.deploy.prepare_for_inference`: BatchNorm folded into the
convs, channels_last weights and inputs), the form an exported or deployed CNN runs in.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from reidprune.measure.deploy import prepare_for_inference
from reidprune.models.forward import forward_model, model_device, model_dtype, model_input_size


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _runs(seconds_each: float, iters: int | None, min_time: float) -> int:
    return iters if iters is not None else max(3, math.ceil(min_time / max(seconds_each, 1e-6)))


def benchmark_speed(
    model: nn.Module,
    batch_size: int = 64,
    input_size: tuple[int, int] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    warmup: int = 3,
    iters: int | None = None,
    min_time: float = 2.0,
    latency_iters: int | None = None,
    threads: int | None = None,
    deploy: bool = False,
) -> dict[str, Any]:
    """Throughput at `batch_size` and batch-1 latency of `model`.

    input_size: (H, W), default `model.arch.img_size`. device: default the model's device.
    dtype: the dtype the model and input run in; when it (or the device) differs from the
    model's, a converted copy is measured and the caller's model is left untouched.
    iters / latency_iters: fixed numbers of timed passes; otherwise as many as fill `min_time`
    seconds (at least 3). threads: CPU intra-op threads for the measurement (restored afterwards).
    deploy: time `prepare_for_inference(model)` (a copy: BatchNorm folded, channels_last) on
    channels_last inputs instead of the model as given.
    Returns throughput_ips (images/s), latency_ms_b1 (median), latency_ms_b1_p90, and the settings:
    batch_size, input_size, device, dtype, threads, iters, latency_iters, deploy.
    """
    height, width = input_size if input_size is not None else model_input_size(model)
    device = torch.device(device) if device is not None else model_device(model)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if deploy:  # fold in the model's own precision first, then convert the folded copy
        model = prepare_for_inference(model).to(device=device, dtype=dtype)
    elif model_device(model) != device or model_dtype(model) != dtype:
        model = copy.deepcopy(model).to(device=device, dtype=dtype)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            batch = torch.randn(batch_size, 3, height, width, device=device, dtype=dtype)
            if deploy:
                batch = batch.contiguous(memory_format=torch.channels_last)
            single = batch[:1].clone()  # clone keeps the memory format
            camids = torch.zeros(batch_size, dtype=torch.long, device=device)

            def run_batch() -> Any:
                return forward_model(model, batch, camids)

            def run_single() -> Any:
                return forward_model(model, single, camids[:1])

            for _ in range(max(warmup, 1)):
                first = _timed(run_batch, device)
            n = _runs(first, iters, min_time)
            _sync(device)
            start = time.perf_counter()
            for _ in range(n):
                run_batch()
            _sync(device)
            throughput = n * batch_size / (time.perf_counter() - start)

            for _ in range(max(warmup, 1)):
                one = _timed(run_single, device)
            m = _runs(one, latency_iters, min_time)
            times = sorted(_timed(run_single, device) for _ in range(m))
    finally:
        model.train(was_training)
        torch.set_num_threads(old_threads)
    return {
        "throughput_ips": throughput,
        "latency_ms_b1": statistics.median(times) * 1e3,
        "latency_ms_b1_p90": times[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)] * 1e3,
        "batch_size": batch_size,
        "input_size": [int(height), int(width)],
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "dtype": str(dtype).replace("torch.", ""),
        "threads": threads if threads is not None else old_threads,
        "iters": n,
        "latency_iters": m,
        "deploy": deploy,
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"
