"""Entry points for CNN filter pruning.

    small, plan = prune_filters(model, "hfp", rate=0.5)            # one shot: select, zero, extract
    callback = filter_pruning_callback(model, "bafd", rate=0.9)     # soft: pass to train.fit(...)
    small, plan = extract_pruned(trained_model)                     # after soft pruning

`rate` is always the fraction of filters REMOVED (0.9 = 90 % removed), per layer for hfp/sfp/
fpgm and over all ranked filters for bafd (as in the BAFD code).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from reidprune.compress.filters.bafd import bafd_layer_rates, filters_to_prune
from reidprune.compress.filters.criteria import (
    select_bafd,
    select_fpgm,
    select_hfp,
    select_in_slices,
    select_sfp,
)
from reidprune.compress.filters.extraction import copy_model, extract_pruned
from reidprune.compress.filters.graph import build_graph, extract_graph, graph_targets
from reidprune.compress.filters.soft import SoftFilterPruning
from reidprune.compress.filters.targets import (
    SCOPES,
    ConvTarget,
    conv_weight,
    prunable_convs,
    unwrap,
    zero_filters,
)
from reidprune.errors import CompressionError
from reidprune.models.plan import CompressionPlan
from reidprune.models.resnet import ResNet

METHODS = ("hfp", "sfp", "fpgm", "bafd")
PREFIX = "filter-"  # the spelling of PruneConfig.method and of plans ("filter-bafd")


def method_name(method: str) -> str:
    """ "bafd" for "bafd" or "filter-bafd", as prune_tokens / prune_heads accept their prefixes."""
    name = method.removeprefix(PREFIX) if isinstance(method, str) else method
    if name not in METHODS:
        raise CompressionError(f"filter pruning method '{method}': expected one of {list(METHODS)}")
    return name


def _check(method: str, rate: float, k: int, max_layer_rate: float, scope: str) -> None:
    if method not in METHODS:
        raise CompressionError(f"filter pruning method '{method}': expected one of {list(METHODS)}")
    if not 0.0 <= rate < 1.0:
        raise CompressionError(f"filter pruning rate {rate}: expected the fraction removed, in [0, 1)")
    if not 0.0 < max_layer_rate < 1.0:
        raise CompressionError(f"max_layer_rate {max_layer_rate}: expected a fraction in (0, 1)")
    if k < 2:
        raise CompressionError(f"bafd k {k}: expected >= 2 (k counts the filter itself)")
    if scope not in SCOPES:
        raise CompressionError(f"filter pruning scope '{scope}': expected one of {list(SCOPES)}")


def layer_rates(
    model: nn.Module,
    method: str,
    rate: float,
    targets: list[ConvTarget],
    *,
    k: int = 2,
    max_layer_rate: float = 0.95,
    rank_1x1: bool = False,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Per-conv rates: uniform for hfp/sfp/fpgm, ranked + block-shared for bafd (1x1 convs are
    ranked too when `rank_1x1` or when every target is 1x1).

    Returns (rates, extra plan details)."""
    if method != "bafd":
        return {t.conv: rate for t in targets}, {}
    # a network whose internal convs are all 1x1 (MobileNet expansions) has nothing else to rank
    rank_1x1 = rank_1x1 or all(max(conv_weight(model, t).shape[2:]) == 1 for t in targets)
    rates, units = bafd_layer_rates(model, targets, rate, k, max_layer_rate, rank_1x1)
    return rates, {"ranked_units": units, "max_layer_rate": max_layer_rate, "rank_1x1": rank_1x1}


def select(
    method: str,
    weight: torch.Tensor,
    count: int,
    k: int = 2,
    efficient: bool = False,
    layer_rate: float | None = None,
    groups: int = 1,
) -> torch.Tensor:
    """Indices of the `count` filters `method` removes from one conv weight (n, C_in, kh, kw);
    bafd's efficient branch is chosen on `layer_rate` (see `select_bafd`). groups > 1: the same
    positions in each of that many equal slices (`ConvTarget.groups`, `select_in_slices`)."""
    criteria = {"hfp": select_hfp, "sfp": select_sfp, "fpgm": select_fpgm}
    if method in criteria:
        return select_in_slices(criteria[method], weight, count, groups)

    def bafd(w: torch.Tensor, c: int) -> torch.Tensor:
        return select_bafd(w, c, k=k, efficient=efficient, layer_rate=layer_rate)

    return select_in_slices(bafd, weight, count, groups)


BACKENDS = ("auto", "exact", "graph")


def _use_graph(model: nn.Module, backend: str, scope: str) -> bool:
    if backend not in BACKENDS:
        raise CompressionError(f"filter pruning backend '{backend}': expected one of {list(BACKENDS)}")
    graph = backend == "graph" or (backend == "auto" and not isinstance(unwrap(model), ResNet))
    if graph and scope != "internal":
        raise CompressionError(
            f"filter pruning scope '{scope}' exists only for reidprune ResNets; other CNNs use 'internal'"
        )
    return graph


def _prune_graph(
    model: nn.Module,
    method: str,
    rate: float,
    k: int,
    max_layer_rate: float,
    rank_1x1: bool,
    efficient: bool,
    input_size: tuple[int, int] | list[int] | None,
) -> tuple[nn.Module, CompressionPlan]:
    """prune_filters for any CNN: every selection on the unpruned weights, then one extraction."""
    source = unwrap(model)
    if input_size is None and getattr(getattr(source, "arch", None), "img_size", None):
        input_size = list(source.arch.img_size)  # type: ignore[union-attr]
    targets = graph_targets(source, build_graph(source, input_size))
    if not targets:
        raise CompressionError(
            f"{type(source).__name__} has no internal conv to prune (convs inside a block, feeding only "
            "BatchNorm, activations, depthwise or grouped convs and the next conv)"
        )
    rates, extra = layer_rates(
        source, method, rate, targets, k=k, max_layer_rate=max_layer_rate, rank_1x1=rank_1x1
    )
    removed = {}
    for target in targets:
        weight = conv_weight(source, target)
        count = filters_to_prune(weight.shape[0], rates[target.conv])
        rate_here = rates[target.conv]  # bafd's efficient branch is chosen on it, as in the exact path
        removed[target.conv] = select(method, weight, count, k, efficient, rate_here, target.groups)
    details = {"criterion": method, "scope": "internal", "rates": rates, **extra}
    if method == "bafd":
        details.update(k=k, efficient=efficient)
    return extract_graph(
        source, method=f"filter-{method}", rate=rate, details=details, input_size=input_size, removed=removed
    )


def prune_filters(
    model: nn.Module,
    method: str = "hfp",
    rate: float = 0.5,
    *,
    scope: str = "internal",
    k: int = 2,
    max_layer_rate: float = 0.95,
    rank_1x1: bool = False,
    efficient: bool = False,
    check_size: tuple[int, int] | list[int] | None = None,
    backend: str = "auto",
) -> tuple[nn.Module, CompressionPlan]:
    """One-shot filter pruning: select on the current weights, zero, extract the smaller model.

    method (also spelt "filter-hfp", ... as in PruneConfig.method):
      "hfp" (smallest L1, Li et al.; the BAFD repo's HFP baseline) or, applied once,
      "sfp" (smallest L2), "fpgm" (smallest summed distance) or "bafd" (ranked per-layer rates,
      greedy kNN selection).
    rate: fraction of filters REMOVED, in [0, 1).
    scope: "internal" (internal convs of each block, default) or "bafd" (also each block's last
      conv and the ResNet-50 stem, as the BAFD code does).
    backend: "auto" (reidprune ResNets: the exact ResNet path; any other CNN module, e.g. a
      torchvision / timm / torchreid model: Torch-Pruning's dependency graph, scope "internal"
      only, see compress.filters.graph), "exact" or "graph" to force one.
    check_size: (H, W) of the check input (and of the graph trace), default the arch's img_size
      or 256x128.
    The input model is not changed. Returns (small_model, plan); the plan lists the kept filter
    indices of every pruned conv and the per-layer rates.
    """
    method = method_name(method)
    _check(method, rate, k, max_layer_rate, scope)
    if _use_graph(model, backend, scope):
        return _prune_graph(model, method, rate, k, max_layer_rate, rank_1x1, efficient, check_size)
    masked = copy_model(model)
    targets = prunable_convs(masked, scope)
    rates, extra = layer_rates(
        masked, method, rate, targets, k=k, max_layer_rate=max_layer_rate, rank_1x1=rank_1x1
    )
    for target in targets:
        weight = conv_weight(masked, target)
        count = filters_to_prune(weight.shape[0], rates[target.conv])
        zero_filters(
            masked, target, select(method, weight, count, k, efficient, rates[target.conv], target.groups)
        )
    details = {"criterion": method, "scope": scope, "rates": rates, **extra}
    if method == "bafd":
        details.update(k=k, efficient=efficient)
    return extract_pruned(
        masked, method=f"filter-{method}", rate=rate, details=details, check_size=check_size
    )


def filter_pruning_callback(
    model: nn.Module,
    method: str = "bafd",
    rate: float = 0.9,
    *,
    scope: str = "internal",
    k: int = 2,
    decay: float = 0.3,
    max_layer_rate: float = 0.95,
    rank_1x1: bool = False,
    efficient: bool = False,
    at_start: bool = False,
    hold_zeros: bool = False,
    mask_bn: bool = True,
    input_size: tuple[int, int] | list[int] | None = None,
) -> SoftFilterPruning:
    """A training callback for soft filter pruning ("sfp", "fpgm" or "bafd").

    rate: fraction of filters REMOVED. For bafd the per-layer rates are ranked now, on `model`'s
    current weights (the trained or ImageNet model you start from), and stay fixed; they are
    saved in the callback's state_dict so that a resumed run keeps them.
    decay: bafd's per-epoch factor on the selected filters (0.3 in the paper's recipe).
    at_start / hold_zeros / mask_bn: he-y's original SFP/FPGM behaviour (see compress.filters.soft).
    After training, `callback.extract(model)` returns (small_model, plan).
    A CNN that is not a reidprune ResNet works too (internal convs found by Torch-Pruning, traced on
    an `input_size` (H, W) input, default 256x128): the callback masks the target conv and the BN
    right after it; at extraction the removed channels are also zeroed in the other BNs of their
    group (a depthwise conv's BN), so the extracted model equals that fully masked one, which can
    differ slightly from the last training-time masked model.
    """
    method = method_name(method)
    _check(method, rate, k, max_layer_rate, scope)
    if method == "hfp":
        raise CompressionError("hfp prunes once before training: use prune_filters(model, 'hfp', rate)")
    if _use_graph(model, "auto", scope):
        # the callback masks a conv through its BN: convs without one (SE squeeze) stay one-shot only
        targets = [t for t in graph_targets(unwrap(model), build_graph(unwrap(model), input_size)) if t.bn]
    else:
        targets = prunable_convs(model, scope)
    rates, extra = layer_rates(
        model, method, rate, targets, k=k, max_layer_rate=max_layer_rate, rank_1x1=rank_1x1
    )
    return SoftFilterPruning(
        method,
        targets,
        rates,
        rate=rate,
        decay=decay,
        k=k,
        efficient=efficient,
        at_start=at_start,
        hold_zeros=hold_zeros,
        mask_bn=mask_bn,
        details={"scope": scope, **extra},
    )
