"""`to_budget`: compress a model to a target speed-up, latency or GMACs in one call.

    small, plan = to_budget(model, calib_loader, target_gmacs=2.5)
    small, plan = to_budget(model, calib_loader, target_speedup=2.0, runtime="onnxruntime", batch=1, threads=2)

ViT: per-block token counts (`token_method`: AMG static masks ranked by calibrated Taylor scores,
EViT top-k drops ranked by class-token attention, or ToMe merges ranked by key similarity) and head
counts (map entropy), scored in one calibration pass. ResNet: per-conv internal widths (filter norm
or FPGM criterion). With calibration data, every group's loss curve is then measured
(`sensitivity.py`: the proxy of the model with only that group's units removed), so heads, tokens
and filters are traded on one scale. The greedy search (`search.py`) runs in one stage and in
`sensitivity_stages` stages (curves measured again from each stage's plan), once per weighting of
heads against tokens in `head_weights`; the candidate whose embeddings stay closest to the
unpruned model's on the calibration images (`proxy.py`) wins. No fine-tuning here: `reidprune compress --epochs N`
or `jobs.schedule.finetune` fine-tune the result with distillation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
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
from reidprune.budget.search import (
    SearchResult,
    check_reachable,
    describe_plan,
    greedy_search,
    lost_importance,
)
from reidprune.budget.sensitivity import default_cache_dir, fingerprint, staged_key, with_sensitivity
from reidprune.errors import CompressionError
from reidprune.models.plan import CompressionPlan, plan_of

GMACS_RUNTIME = "gmacs"  # runtime name whose "speed-up" is the GMACs ratio
DEFAULT_HEAD_WEIGHTS = (0.5, 1.0, 2.0)
IMPORTANCE = ("sensitivity", "scores")  # group losses: measured curves, or normalised scores alone


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


def check_importance(importance: Any, points: Any, images: Any, stages: Any = 1) -> None:
    if importance not in IMPORTANCE:
        raise CompressionError(f"importance={importance!r}: expected one of {', '.join(IMPORTANCE)}")
    named = (("sensitivity_points", points), ("sensitivity_images", images), ("sensitivity_stages", stages))
    for name, value in named:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CompressionError(f"{name}={value!r}: expected an int >= 1")


def first_images(batches: Sequence[Mapping[str, Any]], count: int) -> list[dict[str, Any]]:
    """The batches holding the first `count` images, the last one cut (every tensor of a batch
    along its first dimension, other values as they are)."""
    out: list[dict[str, Any]] = []
    left = count
    for batch in batches:
        if left <= 0:
            break
        size = len(batch["image"])
        if size > left:
            batch = {
                k: v[:left] if isinstance(v, torch.Tensor) and len(v) == size else v for k, v in batch.items()
            }
        out.append(dict(batch))
        left -= min(size, left)
    return out


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
    head_weights: Sequence[float] | None = None,
    token_method: str = "amg",
    token_mode: str = "skip",
    min_tokens: int = 1,
    min_heads: int = 1,
    criterion: str = "l1",
    importance: str = "sensitivity",
    sensitivity_points: int = 4,
    sensitivity_images: int = 64,
    sensitivity_stages: int = 3,
    sensitivity_cache: str | Path | None = None,
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
      against token importance; one search per value, the proxy picks (ViT only). Default: 1 with
      measured curves (one scale for every kind), else 0.5, 1 and 2.
    token_method: how ViT tokens are removed: "amg" (static masks, default), "topk" (EViT: each block
      may drop tokens after its attention, gone from the MLP and every later block) or "tome"
      (ToMe: each block may merge up to half of its tokens). Searched jointly with the heads.
    token_mode: AMG's masks: "skip" (default: pruned tokens skip the block, MLP included, so large
      speed-ups are reachable) or "kv" (fewer keys / values only; every token still goes through the
      MLP). Ignored by top-k / ToMe.
    min_tokens / min_heads: patch tokens every block keeps (top-k / ToMe: the plan leaves after its
      last block) and heads every block keeps. criterion: CNN filter score "l1" | "l2" | "fpgm".
    importance: "sensitivity" (default; needs data): each group's loss is measured, the proxy of
      the model with only that group's first units removed, at `sensitivity_points` counts on the
      first `sensitivity_images` calibration images (`budget.sensitivity`); "scores": the
      normalised scores' -ln curve alone (no extra passes). Scores always order a group's units.
    sensitivity_stages: with measured curves, the search is also run in this many stages, the
      curves measured again from the plan each stage reached (`staged_search`); the proxy picks
      between the one-stage and the staged plan. 1: one stage only.
    sensitivity_cache: folder of measured curves, one file per fingerprint of the weights, images,
      groups and points (default $REIDPRUNE_CACHE/sensitivity or ~/.cache/reidprune/sensitivity).
    seed: which batches a shuffling loader yields.
    The plan lists per block the kept tokens / heads (ViT) or widths (CNN) and the predicted cost,
    the dense and predicted cost, the measured GMACs, and every candidate the search compared.
    """
    kind, value = resolve_target(target_speedup, target_latency_ms, target_gmacs)
    check_token_method(token_method)
    vit = is_vit(model)
    if vit and data is None:
        raise CompressionError("a ViT budget search needs calibration data (data=loader of batch dicts)")
    check_importance(importance, sensitivity_points, sensitivity_images, sensitivity_stages)
    if head_weights is None:  # measured curves put every kind on the proxy's scale
        head_weights = (1.0,) if importance == "sensitivity" and data is not None else DEFAULT_HEAD_WEIGHTS
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
    measure: Callable[[SearchSpace, list[int]], SearchSpace] | None = None
    if importance == "sensitivity" and batches:
        images = first_images(batches, sensitivity_images)
        folder = (
            Path(sensitivity_cache).expanduser() if sensitivity_cache is not None else default_cache_dir()
        )
        key = fingerprint(model, images, space, sensitivity_points)
        quick = EmbeddingProxy(model, images)

        def measure(current: SearchSpace, base: list[int]) -> SearchSpace:
            where = staged_key(key, base, current) if any(base) else key
            return with_sensitivity(model, current, quick, sensitivity_points, folder, where, base)

        space = measure(space, [0] * len(space.groups))
    else:  # no data (a ResNet searched without a loader) or asked for: scores alone
        space.info["importance"] = {"kind": "scores"}
    has_heads = any(g.kind == "heads" for g in space.groups)
    grid = weights if has_heads else [1.0]
    stage_counts = sorted({1, sensitivity_stages}) if measure is not None else [1]
    candidates: list[dict[str, Any]] = []
    results: list[tuple[SearchResult, nn.Module, SearchSpace]] = []
    for weight, stages in itertools.product(grid, stage_counts):
        kind_weights = {"tokens": 1.0, "heads": weight, "filters": 1.0}
        result, searched = staged_search(space, costs, target, kind_weights, stages, measure)
        same = next((i for i, (r, _, _) in enumerate(results) if r.removed == result.removed), None)
        if same is not None:  # an identical plan: no need to build and score it again
            candidates.append({**candidates[same], "head_weight": weight, "stages": stages})
            results.append(results[same])
            continue
        built = apply_plan(model, space, result.removed)
        entry = {
            "head_weight": weight,
            "stages": stages,
            "predicted_cost": result.cost,
            "lost_importance": result.lost,
            "steps": result.steps,
        }
        entry["proxy"] = proxy(built) if proxy is not None else None
        candidates.append(entry)
        results.append((result, built, searched))
    chosen = min(range(len(results)), key=lambda i: (candidates[i]["proxy"] or 0.0, i))
    result, small, searched = results[chosen]
    plan = _plan_dict(
        searched, result, costs, kind, value, target, runtime, batch, threads, candidates, chosen, proxy
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


def staged_search(
    space: SearchSpace,
    costs: CostModel,
    target: float,
    kind_weights: Mapping[str, float],
    stages: int = 1,
    measure: Callable[[SearchSpace, list[int]], SearchSpace] | None = None,
) -> tuple[SearchResult, SearchSpace]:
    """(result, the space its last stage searched). stages > 1 (with `measure`): the greedy search
    stops at 1/stages, 2/stages ... of the way from the dense cost to the target, and before each
    later stage every group's curve is measured again from the plan reached (`measure`), so that
    removals that hurt together (several blocks emptied one after another) are priced as such."""
    dense = costs.predict(space.sketch([0] * len(space.groups)))
    stages = stages if measure is not None else 1
    removed: list[int] | None = None
    steps = 0
    for stage in range(1, stages + 1):
        goal = target if stage == stages else dense - (dense - target) * stage / stages
        if removed is not None and measure is not None:
            space = measure(space, removed)
        result = greedy_search(space, costs, goal, kind_weights, start=removed)
        removed, steps = result.removed, steps + result.steps
    lost = lost_importance(space, result.removed, result.kind_weights)
    return SearchResult(result.removed, result.cost, dense, lost, steps, result.kind_weights), space


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
