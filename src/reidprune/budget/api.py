"""`to_budget`: compress a model to a target speed-up, latency or GMACs in one call.

    small, plan = to_budget(model, calib_loader, target_gmacs=2.5)
    small, plan = to_budget(model, calib_loader, target_speedup=2.0, runtime="onnxruntime", batch=1, threads=2)

ViT: per-block token counts (`token_method`: AMG static masks ranked by calibrated Taylor scores,
EViT top-k drops ranked by class-token attention, or ToMe merges ranked by key similarity) and head
counts (map entropy), scored in one calibration pass. ResNet: per-conv internal widths (filter norm
or FPGM criterion). The greedy search (`search.py`) runs once per weighting of heads against
tokens in `head_weights`; the candidate whose embeddings stay closest to the unpruned model's on
the calibration images (`proxy.py`) wins. No fine-tuning here: `reidprune compress --epochs N`
or `jobs.schedule.finetune` fine-tune the result with distillation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from reidprune.budget.candidates import (
    TOKEN_METHODS,
    SearchSpace,
    apply_plan,
    cnn_space,
    is_vit,
    vit_space,
)
from reidprune.budget.cost import UNITS, CostModel, GmacsCostModel, latency_cost_model
from reidprune.budget.proxy import EmbeddingProxy
from reidprune.budget.search import SearchResult, check_reachable, describe_plan, greedy_search
from reidprune.errors import CompressionError
from reidprune.models.plan import CompressionPlan, plan_of

GMACS_RUNTIME = "gmacs"  # runtime name whose "speed-up" is the GMACs ratio
DEFAULT_HEAD_WEIGHTS = (0.5, 1.0, 2.0)


def resolve_target(
    target_speedup: float | None, target_latency_ms: float | None, target_gmacs: float | None
) -> tuple[str, float]:
    """("speedup" | "latency_ms" | "gmacs", value); exactly one target must be given, positive."""
    given = {
        name: value
        for name, value in (
            ("speedup", target_speedup),
            ("latency_ms", target_latency_ms),
            ("gmacs", target_gmacs),
        )
        if value is not None
    }
    if len(given) != 1:
        names = ", ".join(f"target_{n}" for n in given) or "none"
        raise CompressionError(
            f"give exactly one budget target (target_speedup, target_latency_ms or target_gmacs); got {names}"
        )
    kind, value = next(iter(given.items()))
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise CompressionError(f"target_{kind}={value!r}: expected a positive number")
    if kind == "speedup" and value < 1.0:
        raise CompressionError(f"target_speedup={value}: expected >= 1 (1 = the model as it is)")
    return kind, float(value)


def check_token_method(value: Any, where: str = "token_method") -> str:
    """`value` when it is one of TOKEN_METHODS; else a one-line CompressionError naming `where`."""
    if value not in TOKEN_METHODS:
        raise CompressionError(f"{where}={value!r}: expected one of {', '.join(TOKEN_METHODS)}")
    return str(value)


# the reducer kinds of the latency model's tables each token method's plans need
TOKEN_KINDS = {"amg": ("amg-kv", "amg-skip"), "topk": ("topk",), "tome": ("tome",)}


def choose_cost_model(
    model: nn.Module,
    kind: str,
    runtime: str,
    batch: int,
    threads: int | None,
    cost_model: CostModel | None,
    latency: Mapping[str, Any] | None = None,
    token_method: str = "amg",
) -> CostModel:
    """The cost model a target needs: GMACs for target_gmacs or runtime "gmacs", else the runtime's
    latency model (built with the `latency` options and the reducer tables of `token_method`); a
    given `cost_model` must have the target's unit."""
    if cost_model is not None:
        if getattr(cost_model, "unit", None) not in UNITS:
            raise CompressionError(
                f"cost_model.unit must be one of {', '.join(UNITS)}; got {getattr(cost_model, 'unit', None)!r}"
            )
        wanted = {"gmacs": "GMACs", "latency_ms": "ms"}.get(kind)
        if wanted is not None and cost_model.unit != wanted:
            raise CompressionError(
                f"target_{kind} needs a cost model in {wanted}; the given one predicts {cost_model.unit}"
            )
        return cost_model
    if kind == "gmacs" or runtime == GMACS_RUNTIME:
        if kind == "latency_ms":
            raise CompressionError(
                "target_latency_ms needs a latency runtime (e.g. onnxruntime), not 'gmacs'"
            )
        return GmacsCostModel.for_model(model)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise CompressionError(f"batch={batch!r}: expected an int >= 1")
    return latency_cost_model(
        model,
        runtime,
        batch=batch,
        threads=threads,
        token_kinds=TOKEN_KINDS[token_method],
        **dict(latency or {}),
    )


def take_batches(data: Iterable[Mapping[str, Any]], count: int, seed: int) -> list[dict[str, Any]]:
    """The first `count` batches of `data` (0 = all), copied to the CPU; a shuffling loader without
    its own generator draws them under `seed`, so the same seed gives the same images."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise CompressionError(f"calib_batches={count!r}: expected an int >= 0 (0 = the whole loader)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        source = iter(data) if count == 0 else itertools.islice(data, count)
        batches = [dict(b) for b in source]
    if not batches:
        raise CompressionError("the calibration data yielded no batches")
    return batches


def to_budget(
    model: nn.Module,
    data: Iterable[Mapping[str, Any]] | None = None,
    *,
    target_speedup: float | None = None,
    target_latency_ms: float | None = None,
    target_gmacs: float | None = None,
    runtime: str = "onnxruntime",
    batch: int = 1,
    threads: int | None = None,
    cost_model: CostModel | None = None,
    latency: Mapping[str, Any] | None = None,
    correction: float = 1.0,
    calib_batches: int = 8,
    head_weights: Sequence[float] = DEFAULT_HEAD_WEIGHTS,
    token_method: str = "amg",
    token_mode: str = "skip",
    min_tokens: int = 1,
    min_heads: int = 1,
    criterion: str = "l1",
    seed: int = 0,
    device: torch.device | str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Return (compressed copy of `model`, plan dict); `model` is not modified.

    data: calibration batches (dicts with "image", "label", optional "camid"), e.g. the training
      loader; needed for a ViT (token and head scores, one pass) and for the proxy. Never the test split.
    target_*: exactly one. speedup: cost(dense) / cost(plan) in the cost model's unit; latency_ms:
      per batch on `runtime`; gmacs: per image (measure.count_gmacs).
    runtime / batch / threads: the deployment the latency model predicts ("gmacs" = count GMACs).
    cost_model: any `budget.cost.CostModel` to use instead. latency: options of the runtime latency
      model (`LatencyCostModel.for_model`: cache, grid, min_time, chain, calibrate, calib_time).
    correction: measured / predicted cost ratio of an earlier attempt (`verify_budget`); the search
      aims at target / correction, so a model measured 10 % slower than predicted is re-planned 10 %
      tighter. 1 = trust the cost model.
    calib_batches: batches taken from `data` (0 = all). head_weights: weights of head importance
      against token importance; one search per value, the proxy picks (ViT only).
    token_method: how ViT tokens are removed: "amg" (static masks, default), "topk" (EViT: each block
      may drop tokens after its attention, gone from the MLP and every later block) or "tome"
      (ToMe: each block may merge up to half of its tokens). Searched jointly with the heads.
    token_mode: AMG's masks: "skip" (default: pruned tokens skip the block, MLP included, so large
      speed-ups are reachable) or "kv" (fewer keys / values only; every token still goes through the
      MLP). Ignored by top-k / ToMe.
    min_tokens / min_heads: patch tokens every block keeps (top-k / ToMe: the plan leaves after its
      last block) and heads every block keeps. criterion: CNN filter score "l1" | "l2" | "fpgm".
      seed: which batches a shuffling loader yields.
    The plan lists per block the kept tokens / heads (ViT) or widths (CNN) and the predicted cost,
    the dense and predicted cost, the measured GMACs, and every candidate the search compared.
    """
    kind, value = resolve_target(target_speedup, target_latency_ms, target_gmacs)
    check_token_method(token_method)
    vit = is_vit(model)
    if vit and data is None:
        raise CompressionError("a ViT budget search needs calibration data (data=loader of batch dicts)")
    weights = [float(w) for w in head_weights]
    if not weights or any(not math.isfinite(w) or w <= 0 for w in weights):
        raise CompressionError(f"head_weights={list(head_weights)}: expected positive numbers")
    if isinstance(correction, bool) or not isinstance(correction, int | float) or not 0.1 <= correction <= 10:
        raise CompressionError(
            f"correction={correction!r}: expected a measured / predicted ratio in [0.1, 10]"
        )
    costs = choose_cost_model(model, kind, runtime, batch, threads, cost_model, latency, token_method)
    batches = take_batches(data, calib_batches, seed) if data is not None else []
    if vit:
        space = vit_space(
            model,
            batches,
            mode=token_mode,
            token_method=token_method,
            min_tokens=min_tokens,
            min_heads=min_heads,
            device=device,
        )
    else:
        space = cnn_space(model, criterion=criterion)
    dense = costs.predict(space.sketch([0] * len(space.groups)))
    target = (value if kind != "speedup" else dense / value) / correction
    check_reachable(space, costs, target)
    proxy = EmbeddingProxy(model, batches) if batches else None
    has_heads = any(g.kind == "heads" for g in space.groups)
    grid = weights if has_heads else [1.0]
    candidates: list[dict[str, Any]] = []
    results: list[tuple[SearchResult, nn.Module]] = []
    for weight in grid:
        result = greedy_search(space, costs, target, {"tokens": 1.0, "heads": weight, "filters": 1.0})
        same = next((i for i, (r, _) in enumerate(results) if r.removed == result.removed), None)
        if same is not None:  # an identical plan: no need to build and score it again
            candidates.append({**candidates[same], "head_weight": weight})
            results.append(results[same])
            continue
        built = apply_plan(model, space, result.removed)
        entry = {
            "head_weight": weight,
            "predicted_cost": result.cost,
            "lost_importance": result.lost,
            "steps": result.steps,
        }
        entry["proxy"] = proxy(built) if proxy is not None else None
        candidates.append(entry)
        results.append((result, built))
    chosen = min(range(len(results)), key=lambda i: (candidates[i]["proxy"] or 0.0, i))
    result, small = results[chosen]
    plan = _plan_dict(
        space, result, costs, kind, value, target, runtime, batch, threads, candidates, chosen, proxy
    )
    plan["target"]["correction"] = float(correction)
    plan["measured_gmacs"] = _measured_gmacs(small)
    previous = plan_of(model)
    rate = 1.0 - result.cost / result.dense_cost if result.dense_cost else 0.0
    details = {k: v for k, v in plan.items() if k != "candidates"}
    small.compression_plan = (
        previous.then("budget-search", rate, details)
        if previous is not None
        else CompressionPlan("budget-search", rate, details)
    )
    small.train(model.training)
    return small, plan


def _measured_gmacs(model: nn.Module) -> float:
    from reidprune.measure.flops import count_gmacs

    return float(count_gmacs(model)["gmacs"])


def _plan_dict(
    space: SearchSpace,
    result: SearchResult,
    costs: CostModel,
    kind: str,
    value: float,
    target: float,
    runtime: str,
    batch: int,
    threads: int | None,
    candidates: list[dict[str, Any]],
    chosen: int,
    proxy: EmbeddingProxy | None,
) -> dict[str, Any]:
    return {
        "family": space.family,
        "target": {"kind": kind, "value": value, "cost": target, "unit": costs.unit},
        "deployment": {"runtime": runtime, "batch": batch, "threads": threads},
        "cost_model": costs.describe(),
        "dense_cost": result.dense_cost,
        "predicted_cost": result.cost,
        "predicted_speedup": result.dense_cost / result.cost if result.cost else None,
        **describe_plan(space, result, costs),
        "search": {
            "algorithm": "greedy: least importance lost per predicted cost saved, cost re-predicted every step",
            "space": space.info,
            "token_method": space.token_method if space.family == "vit" else None,
            "kind_weights": result.kind_weights,
            "steps": result.steps,
            "chosen": chosen,
        },
        "proxy": {"name": proxy.name, "images": proxy.images} if proxy is not None else None,
        "candidates": candidates,
    }
