"""B4 / B5: re-ID evaluation at Market-1501 and MSMT17 scale, from features to CMC / mAP / mINP.

Timed: `reidprune.evaluate.reid_metrics(query, gallery)` with 768-d float32 features already in
memory on the CPU, i.e. the blocked squared-Euclidean distances (GEMM), the per-query protocol
(junk removal, ranks of the positives, CMC, AP, INP) and the summary. Not timed: generating the
features and the reference check. Wall times (median of repeats after a first, cold run) and
the process CPU time are both recorded, with the load average: on a shared machine the wall
time of a 2-thread run depends on what else runs.

Features are synthetic: one centre per identity plus a per-camera offset, Gaussian noise whose
scale varies per image (log-normal), L2-normalised; Market-1501's query / gallery sizes,
identities, cameras and 2,798 distractors (pid 0); MSMT17's sizes, 3,060 identities, 15 cameras.
The noise is set so that mAP looks like a trained model's (Market ~88, MSMT17 ~70); the farthest
positives lie deeper than with real models (lower mINP), which makes the protocol part slower, not
faster. Its cost grows with that depth, so a useless model (random features) is timed too.

Checks, in the same run: the metrics of a subset of queries (against the whole gallery) equal a
plain per-query implementation of the protocol (torchreid's eval_market1501 with a stable sort)
on the same distance matrix. Peak extra memory (B5) is the kernel's peak resident set size
(VmHWM, reset through /proc/self/clear_refs) minus the resident size before the call.

    python benchmarks/eval_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from reidprune.evaluate import EvalConfig, Features, pairwise_distance, reid_metrics
from reidprune.evaluate.distance import onednn_gemm_available
from reidprune.measure.speed import cpu_name

RESULTS = Path(__file__).parent / "results" / "eval_speed.json"
B4_TARGET_S = 1.0
B5_TARGET_GIB = 2.0


def synthetic_split(
    num_query: int,
    num_gallery: int,
    num_ids: int,
    num_cams: int,
    distractors: int,
    noise: float,
    seed: int = 0,
) -> tuple[Features, Features]:
    """Query / gallery features with a re-ID structure (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    dim = 768
    centres = torch.randn(num_ids + 1, dim, generator=gen)
    cam_offset = 0.5 * torch.randn(num_cams, dim, generator=gen)

    def make(pids: torch.Tensor) -> Features:
        n = len(pids)
        cams = torch.randint(0, num_cams, (n,), generator=gen)
        sigma = noise * torch.exp(0.45 * torch.randn(n, 1, generator=gen))
        x = centres[pids] + cam_offset[cams] + sigma * torch.randn(n, dim, generator=gen)
        if noise == float("inf"):
            x = torch.randn(n, dim, generator=gen)
        return Features(F.normalize(x, dim=1), pids, cams)

    query = make(torch.randint(1, num_ids + 1, (num_query,), generator=gen))
    gallery_pids = torch.randint(1, num_ids + 1, (num_gallery,), generator=gen)
    gallery_pids[:distractors] = 0
    gallery = make(gallery_pids)
    if distractors:  # distractors resemble nobody in particular
        gallery.features[:distractors] = F.normalize(torch.randn(distractors, dim, generator=gen), dim=1)
    return query, gallery


def reference_protocol(
    dist: np.ndarray, q_pids, g_pids, q_cams, g_cams, max_rank: int = 50
) -> dict[str, Any]:
    """torchreid's eval_market1501 (stable sort), one query at a time; fractions, CMC cut at max_rank."""
    cmcs, aps, inps = [], [], []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        junk = (g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i])
        match = (g_pids[order] == q_pids[i])[~junk].astype(np.int64)
        if not match.any():
            continue
        cmcs.append(np.minimum(np.cumsum(match), 1)[:max_rank])
        precision = np.cumsum(match) / np.arange(1, len(match) + 1)
        aps.append((precision * match).sum() / match.sum())
        inps.append(match.sum() / (np.flatnonzero(match).max() + 1))
    return {"cmc": np.mean(cmcs, axis=0), "mAP": float(np.mean(aps)), "mINP": float(np.mean(inps))}


def check_subset(query: Features, gallery: Features, count: int) -> dict[str, Any]:
    """Our metrics of the first `count` queries vs the reference on the same distance matrix."""
    sub = Features(query.features[:count], query.pids[:count], query.camids[:count])
    ours = reid_metrics(sub, gallery, EvalConfig(), device="cpu", with_cmc=True)
    dist = pairwise_distance(sub.features, gallery.features, "euclidean", EvalConfig().query_chunk).numpy()
    ref = reference_protocol(dist, *(t.numpy() for t in (sub.pids, gallery.pids, sub.camids, gallery.camids)))
    diffs = {
        "mAP": abs(ours["mAP"] / 100 - ref["mAP"]),
        "mINP": abs(ours["mINP"] / 100 - ref["mINP"]),
        "cmc": float(np.abs(np.array(ours["cmc"]) / 100 - ref["cmc"]).max()),
    }
    return {"queries": count, "max_abs_diff": diffs, "identical": max(diffs.values()) < 1e-12}


def time_metrics(query: Features, gallery: Features, repeats: int) -> dict[str, Any]:
    times, cpu, result = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = reid_metrics(query, gallery, EvalConfig(), device="cpu")
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {
        "cpu_s_median": statistics.median(cpu),
        "first_s": times[0],
        "median_s": statistics.median(times[1:] or times),
        "min_s": min(times),
        "times_s": times,
        "metrics": result,
    }


def single_thread_cpu(query: Features, gallery: Features, repeats: int = 2) -> float:
    """Process CPU seconds of one evaluation on one thread: the work itself, which (unlike wall
    time on a shared machine) other processes barely change."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        for _ in range(repeats):
            start = time.process_time()
            reid_metrics(query, gallery, EvalConfig(), device="cpu")
            times.append(time.process_time() - start)
    finally:
        torch.set_num_threads(threads)
    return min(times)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_extra_memory(fn) -> tuple[Any, float, float]:
    """(result, seconds, peak extra resident memory in GiB) of fn()."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return result, seconds, (_status_kib("VmHWM") - before) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no MSMT17 scale (smoke run)")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    report: dict[str, Any] = {
        "machine": {
            "cpu": cpu_name(),
            "threads": threads,
            "gemm": "oneDNN" if onednn_gemm_available() else "torch.addmm",
            "torch": torch.__version__,
            "loadavg_start": os.getloadavg(),
        }
    }

    market_q, market_g = synthetic_split(3368, 15913, 750, 6, 2798, noise=1.5)
    b4 = time_metrics(market_q, market_g, repeats=3 if args.quick else 7)
    rand_q, rand_g = synthetic_split(3368, 15913, 750, 6, 2798, noise=float("inf"), seed=1)
    worst = time_metrics(rand_q, rand_g, repeats=1 if args.quick else 3)
    report["B4"] = {
        "scale": "3,368 queries x 15,913 gallery, 768-d",
        "timed": "reid_metrics(query, gallery): blocked distances + protocol + summary (features in memory)",
        "target_s": B4_TARGET_S,
        **{k: v for k, v in b4.items()},
        "pass": b4["median_s"] <= B4_TARGET_S,
        "cpu_s_one_thread": single_thread_cpu(market_q, market_g),
        "random_features": {k: v for k, v in worst.items()},
        "check": check_subset(market_q, market_g, 300 if args.quick else 1000),
    }
    del rand_q, rand_g

    if not args.quick:
        msmt_q, msmt_g = synthetic_split(11659, 82161, 3060, 15, 0, noise=1.9, seed=2)
        metrics, seconds, peak = peak_extra_memory(
            lambda: reid_metrics(msmt_q, msmt_g, EvalConfig(), device="cpu")
        )
        report["B5"] = {
            "scale": "11,659 queries x 82,161 gallery, 768-d",
            "timed": "reid_metrics(query, gallery), as B4",
            "seconds": seconds,
            "peak_extra_gib": peak,
            "memory_measure": "VmHWM after - VmRSS before (peak reset via /proc/self/clear_refs)",
            "target_gib": B5_TARGET_GIB,
            "pass": peak <= B5_TARGET_GIB,
            "metrics": metrics,
            "check": check_subset(msmt_q, msmt_g, 200),
        }
        del msmt_q, msmt_g
        # k-reciprocal re-ranking at Market-1501 scale (no target; documents time and memory)
        cfg = EvalConfig(rerank=True)
        metrics, seconds, peak = peak_extra_memory(
            lambda: reid_metrics(market_q, market_g, cfg, device="cpu")
        )
        report["rerank_market"] = {"seconds": seconds, "peak_extra_gib": peak, "metrics": metrics}
    report["machine"]["loadavg_end"] = os.getloadavg()

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    rows = [
        (
            "B4 Market-1501 scale, trained-like",
            f"{b4['median_s']:.3f} s median ({b4['min_s']:.3f} min, {b4['first_s']:.3f} first)",
            f"<= {B4_TARGET_S} s",
            "pass" if report["B4"]["pass"] else "FAIL",
        ),
        ("B4 same, random features", f"{worst['median_s']:.3f} s", "(worst case, no target)", ""),
        (
            "B4 identical to reference",
            f"{report['B4']['check']['queries']} queries",
            "max diff < 1e-12",
            "pass" if report["B4"]["check"]["identical"] else "FAIL",
        ),
    ]
    if "B5" in report:
        b5 = report["B5"]
        rows += [
            (
                "B5 MSMT17 scale, peak extra memory",
                f"{b5['peak_extra_gib']:.2f} GiB in {b5['seconds']:.1f} s",
                f"<= {B5_TARGET_GIB} GiB",
                "pass" if b5["pass"] else "FAIL",
            ),
            (
                "B5 identical to reference",
                f"{b5['check']['queries']} queries",
                "max diff < 1e-12",
                "pass" if b5["check"]["identical"] else "FAIL",
            ),
        ]
        rerank = report["rerank_market"]
        rows.append(
            (
                "re-ranking at Market-1501 scale",
                f"{rerank['seconds']:.1f} s, {rerank['peak_extra_gib']:.2f} GiB extra",
                "(no target)",
                "",
            )
        )
    rows.append(("B4 CPU time, 2 threads", f"{b4['cpu_s_median']:.3f} s median", "", ""))
    rows.append(("B4 CPU time, 1 thread", f"{report['B4']['cpu_s_one_thread']:.3f} s", "", ""))
    width = max(len(r[0]) for r in rows)
    print(
        f"re-ID evaluation ({threads} threads, {report['machine']['gemm']} GEMM, torch {torch.__version__}; "
        f"load average {report['machine']['loadavg_start'][0]:.2f} at start)"
    )
    for name, value, target, verdict in rows:
        print(f"  {name:<{width}}  {value:<40} {target:<24} {verdict}")
    m = b4["metrics"]
    print(f"  synthetic Market metrics: mAP {m['mAP']:.1f}  R1 {m['rank1']:.1f}  mINP {m['mINP']:.1f}")
    print(f"wrote {RESULTS}")
    failed = not report["B4"]["check"]["identical"] or (
        "B5" in report and not report["B5"]["check"]["identical"]
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
