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
from reidprune.compress.filters.criteria import select_bafd, select_fpgm, select_hfp, select_sfp
from reidprune.compress.filters.extraction import copy_model, extract_pruned
from reidprune.compress.filters.soft import SoftFilterPruning
from reidprune.compress.filters.targets import SCOPES, ConvTarget, conv_weight, prunable_convs, zero_filters
from reidprune.compress.plan import CompressionPlan
from reidprune.errors import CompressionError
from reidprune.models.resnet import ResNet

METHODS = ("hfp", "sfp", "fpgm", "bafd")


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
    """Per-conv rates: uniform for hfp/sfp/fpgm, ranked + block-shared for bafd.

    Returns (rates, extra plan details)."""
    if method != "bafd":
        return {t.conv: rate for t in targets}, {}
    rates, units = bafd_layer_rates(model, targets, rate, k, max_layer_rate, rank_1x1)
    return rates, {"ranked_units": units, "max_layer_rate": max_layer_rate, "rank_1x1": rank_1x1}


def select(
    method: str,
    weight: torch.Tensor,
    count: int,
    k: int = 2,
    efficient: bool = False,
    layer_rate: float | None = None,
) -> torch.Tensor:
    """Indices of the `count` filters `method` removes from one conv weight (n, C_in, kh, kw);
    bafd's efficient branch is chosen on `layer_rate` (see `select_bafd`)."""
    if method == "hfp":
        return select_hfp(weight, count)
    if method == "sfp":
        return select_sfp(weight, count)
    if method == "fpgm":
        return select_fpgm(weight, count)
    return select_bafd(weight, count, k=k, efficient=efficient, layer_rate=layer_rate)


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
) -> tuple[ResNet, CompressionPlan]:
    """One-shot filter pruning: select on the current weights, zero, extract the smaller model.

    method: "hfp" (smallest L1, Li et al.; the BAFD repo's HFP baseline) or, applied once,
      "sfp" (smallest L2), "fpgm" (smallest summed distance) or "bafd" (ranked per-layer rates,
      greedy kNN selection).
    rate: fraction of filters REMOVED, in [0, 1).
    scope: "internal" (internal convs of each block, default) or "bafd" (also each block's last
      conv and the ResNet-50 stem, as the BAFD code does).
    The input model is not changed. Returns (small_model, plan); the plan lists the kept filter
    indices of every pruned conv and the per-layer rates.
    """
    _check(method, rate, k, max_layer_rate, scope)
    masked = copy_model(model)
    targets = prunable_convs(masked, scope)
    rates, extra = layer_rates(
        masked, method, rate, targets, k=k, max_layer_rate=max_layer_rate, rank_1x1=rank_1x1
    )
    for target in targets:
        weight = conv_weight(masked, target)
        count = filters_to_prune(weight.shape[0], rates[target.conv])
        zero_filters(masked, target, select(method, weight, count, k, efficient, rates[target.conv]))
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
) -> SoftFilterPruning:
    """A training callback for soft filter pruning ("sfp", "fpgm" or "bafd").

    rate: fraction of filters REMOVED. For bafd the per-layer rates are ranked now, on `model`'s
    current weights (the trained or ImageNet model you start from), and stay fixed; they are
    saved in the callback's state_dict so that a resumed run keeps them.
    decay: bafd's per-epoch factor on the selected filters (0.3 in the paper's recipe).
    at_start / hold_zeros / mask_bn: he-y's original SFP/FPGM behaviour (see compress.filters.soft).
    After training, `callback.extract(model)` returns (small_model, plan).
    """
    _check(method, rate, k, max_layer_rate, scope)
    if method == "hfp":
        raise CompressionError("hfp prunes once before training: use prune_filters(model, 'hfp', rate)")
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
