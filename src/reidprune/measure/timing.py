"""The one timing implementation: warm-up, interleaved rounds over named callables, medians.

Every speed figure reidprune reports (`measure`, `bench`, export variants, the demo, the report and
the latency model of `reidprune.budget`) comes from `interleaved_times`:

    fns = {"dense": model_call(dense, 1), "pruned": model_call(pruned, 1)}
    times = interleaved_times(fns, min_time=2.0)          # {name: [seconds per call, ...]}
    summarize_ms(times["dense"])                           # {"median_ms": ..., "p90_ms": ...}

Every round calls each callable once, in an order rotated from round to round, so a slow spell on
a shared machine hits every callable alike and the ratios between them stay meaningful. Each timed
call follows an untimed call of the same callable (steady state: its weights in cache, as when a
runtime serves calls back to back, the regime `onnxruntime_perf_test` and trtexec time); without
it a small model timed right after another one ran from cold caches, up to 2x slower than it serves
(a 0.5 M-parameter ViT on ONNX Runtime, measured), and its speed-up over a larger model came out
wrong. On CUDA
the device is synchronised around every timed call. `torch.utils.benchmark.Timer` was considered
for the PyTorch side, but it times one statement at a time (no interleaving) and cannot time an
ONNX Runtime or OpenVINO call next to a PyTorch one in the same rounds.
"""

from __future__ import annotations

import contextlib
import math
import platform
import statistics
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any, TypeVar

import torch
from torch import nn

from reidprune.models.forward import forward_model, model_input_size

Key = TypeVar("Key", bound=Hashable)  # names of the timed callables


def sync(device: torch.device | None) -> None:
    """Wait for queued CUDA work, so that a timed region holds all of its kernels."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    fns: dict[Key, Callable[[], Any]],
    *,
    rounds: int | None = None,
    min_time: float = 2.0,
    warmup: int = 2,
    min_rounds: int = 5,
    max_rounds: int | None = 200,
    device: torch.device | None = None,
    before: Mapping[Key, Callable[[], Any]] | None = None,
    steady: bool = True,
) -> dict[Key, list[float]]:
    """Seconds per call of every callable, measured in interleaved rounds.

    warmup: untimed calls of each callable first (at least 1; the last one estimates the cost).
    rounds: fixed number of rounds; otherwise as many as fill about `min_time` seconds in all
    (between min_rounds and max_rounds; max_rounds=None: no upper bound).
    device: a CUDA device is synchronised before and after every timed call.
    before: per key, an untimed call made right before each of that key's calls (e.g. evicting the
      caches, so that a callable is always timed cold whatever ran before it).
    steady: every timed call of a key without `before` right after an untimed call of itself (module
      doc), unless that key was the last one called anyway; min_time counts these calls too.
      False: each call right after whatever ran before it.
    """
    before = before or {}
    keys = list(fns)
    # keys whose timed call needs an untimed one of itself first (none when it is the only key)
    warm = {k for k in keys if k not in before} if steady and len(keys) > 1 else set()
    estimate = 0.0
    for key, fn in fns.items():
        for _ in range(max(warmup, 1)):
            if key in before:
                before[key]()
            last = _timed(fn, device)
        estimate += last * (2 if key in warm else 1)
    if rounds is None:
        rounds = max(min_rounds, math.ceil(min_time / max(estimate, 1e-6)))
        if max_rounds is not None:
            rounds = min(max_rounds, rounds)
    times: dict[Key, list[float]] = {k: [] for k in keys}
    previous = keys[-1] if keys else None  # the warm-up ended with it
    for r in range(rounds):
        shift = r % len(keys)
        for key in keys[shift:] + keys[:shift]:
            if key in before:
                before[key]()
            elif key in warm and previous != key:
                fns[key]()
            times[key].append(_timed(fns[key], device))
            previous = key
    return times


def _timed(fn: Callable[[], Any], device: torch.device | None) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def percentile(samples: list[float], q: float) -> float:
    """The `q`-th percentile (0 < q <= 100) of `samples` by the nearest-rank rule (a measured value)."""
    if not samples:
        raise ValueError("percentile of no samples: time at least one call")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summarize_ms(samples: list[float]) -> dict[str, float]:
    """Median and 90th percentile of `samples` (seconds), in milliseconds."""
    return {"median_ms": statistics.median(samples) * 1e3, "p90_ms": percentile(samples, 90) * 1e3}


def model_call(
    model: nn.Module,
    batch: int,
    *,
    channels_last: bool = False,
    input_size: tuple[int, int] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Callable[[], Any]:
    """One forward of `model` on a fixed random (batch, 3, H, W) input, in `torch.inference_mode`.

    Works for PyTorch models and exported graphs alike (`OnnxModel`, `OpenVinoModel`: same call).
    channels_last: for models prepared for inference (`measure.deploy.prepare_for_inference`).
    input_size: (H, W), default the model's `arch.img_size`.
    """
    height, width = input_size if input_size is not None else model_input_size(model)
    images = torch.randn(batch, 3, height, width, device=device, dtype=dtype)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    camids = torch.zeros(batch, dtype=torch.long, device=device)

    def run() -> Any:
        with torch.inference_mode():
            return forward_model(model, images, camids)

    return run


def latency_ms(
    models: dict[Key, nn.Module],
    *,
    batch: int = 1,
    min_time: float = 2.0,
    rounds: int | None = None,
    channels_last: bool = False,
) -> dict[Key, dict[str, float]]:
    """{name: {median_ms, p90_ms}} of one forward at `batch` for every model (PyTorch models and
    exported graphs alike), timed in the same interleaved rounds."""
    fns = {name: model_call(model, batch, channels_last=channels_last) for name, model in models.items()}
    times = interleaved_times(fns, rounds=rounds, min_time=min_time)
    return {name: summarize_ms(samples) for name, samples in times.items()}


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """PyTorch's CPU intra-op threads set to `threads` (None: unchanged) inside the block, restored
    afterwards. Yields the number in use."""
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def cpu_name() -> str:
    """The CPU's model string ("/proc/cpuinfo" model name), to say where a figure was measured."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"
