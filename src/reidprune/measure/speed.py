"""Throughput and latency of a model's forward pass, measured the way edge users need them.

Protocol (`measure.timing`): eval mode, `torch.inference_mode`, a random input of fixed shape,
warm-up passes first, device synchronisation around every timed pass on CUDA. Throughput
(images/s) at `batch_size` from the summed time of the timed passes;
latency at batch 1 from individually timed passes (median and 90th percentile), because a
deployment on an edge device usually sees one image at a time. With `deploy=True` the model is
timed in its inference form (`measure.deploy.prepare_for_inference`: BatchNorm folded into the
convs, channels_last weights and inputs), the form an exported or deployed CNN runs in.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from reidprune.measure.deploy import prepare_for_inference
from reidprune.measure.timing import cpu_name, interleaved_times, model_call, summarize_ms, torch_threads
from reidprune.models.forward import model_device, model_dtype, model_input_size

__all__ = ["benchmark_speed", "cpu_name"]


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
    was_training = model.training
    model.eval()
    # one timed kind at a time, each filling `min_time`: throughput first, then batch-1 latency
    timing = {"min_time": min_time, "warmup": warmup, "min_rounds": 3, "max_rounds": None, "device": device}
    try:
        with torch_threads(threads) as used, torch.inference_mode():
            run_batch = model_call(
                model,
                batch_size,
                channels_last=deploy,
                input_size=(height, width),
                device=device,
                dtype=dtype,
            )
            run_single = model_call(
                model, 1, channels_last=deploy, input_size=(height, width), device=device, dtype=dtype
            )
            batch_times = interleaved_times({"batch": run_batch}, rounds=iters, **timing)["batch"]
            times = interleaved_times({"single": run_single}, rounds=latency_iters, **timing)["single"]
    finally:
        model.train(was_training)
    latency = summarize_ms(times)
    return {
        "throughput_ips": len(batch_times) * batch_size / sum(batch_times),
        "latency_ms_b1": latency["median_ms"],
        "latency_ms_b1_p90": latency["p90_ms"],
        "batch_size": batch_size,
        "input_size": [int(height), int(width)],
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "dtype": str(dtype).replace("torch.", ""),
        "threads": used,
        "iters": len(batch_times),
        "latency_iters": len(times),
        "deploy": deploy,
    }
