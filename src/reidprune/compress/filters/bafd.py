"""BAFD block redundancy determination: per-layer prune rates, fixed once before training.

Steps (BAFD reading §3.3), given the prunable convs and a global `rate` (fraction REMOVED):
1. Ranked layers: the prunable convs with kernels larger than 1x1 (the seed's "no_1x1": for
   ResNet-50 the 3x3 convs and the stem; for ResNet-18/34 every block conv). `rank_1x1=True`
   ranks the 1x1 convs too.
2. Each ranked layer gets its normalised greedy-removal profile (`bafd_layer_scores`).
3. Global allocation: pool all profile entries (T in total), sort ascending, and hand one prune
   unit per entry to its layer unless the layer already has floor(max_layer_rate * n) units;
   stop after floor(T * rate) units. Layer rate = units / n.
4. Block-wise sharing: every pruned conv of a residual block gets the mean rate of the block's
   ranked convs (ResNet-18/34: conv1 and conv2 share their mean; ResNet-50: all convs take the
   3x3 conv's rate, the seed's "sum" over a block where only the 3x3 conv is ranked). The stem
   keeps its own rate.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import Tensor, nn

from reidprune.compress.filters.criteria import bafd_layer_scores
from reidprune.compress.filters.targets import ConvTarget, conv_weight

# floor(n * rate) must not lose a filter to rounding when rate = units / n exactly
_FLOOR_EPS = 1e-9


def filters_to_prune(n: int, rate: float) -> int:
    """floor(n * rate): how many of n filters a layer with this rate loses (at most n - 1)."""
    return min(n - 1, math.floor(n * rate + _FLOOR_EPS))


def ranked(model: nn.Module, targets: list[ConvTarget], rank_1x1: bool = False) -> list[ConvTarget]:
    """The targets that take part in the global ranking."""
    return [t for t in targets if rank_1x1 or max(conv_weight(model, t).shape[2:]) > 1]


def allocate_units(scores: dict[str, Tensor], rate: float, max_layer_rate: float) -> dict[str, int]:
    """Global allocation of prune units over layers (step 3).

    scores: layer name -> (n,) normalised profile. Returns layer name -> filters to prune.
    Ties in the pooled sort go to the earlier layer (stable sort in forward order).
    """
    names = list(scores)
    pooled = torch.cat([scores[name] for name in names])
    owner = torch.cat([torch.full((len(scores[name]),), i) for i, name in enumerate(names)])
    caps = [math.floor(max_layer_rate * len(scores[name]) + _FLOOR_EPS) for name in names]
    budget = math.floor(len(pooled) * rate + _FLOOR_EPS)
    units = [0] * len(names)
    given = 0
    for layer in owner[torch.sort(pooled, stable=True).indices].tolist():
        if given >= budget:
            break
        if units[layer] < caps[layer]:
            units[layer] += 1
            given += 1
    return dict(zip(names, units, strict=True))


def share_blockwise(targets: list[ConvTarget], ranked_rates: dict[str, float]) -> dict[str, float]:
    """Step 4: conv name -> rate for every target (mean of the block's ranked rates)."""
    per_block: dict[str, list[float]] = defaultdict(list)
    for t in targets:
        if t.role != "stem" and t.conv in ranked_rates:
            per_block[t.block].append(ranked_rates[t.conv])
    rates = {}
    for t in targets:
        if t.role == "stem":
            rates[t.conv] = ranked_rates.get(t.conv, 0.0)
        else:
            shared = per_block.get(t.block, [])
            rates[t.conv] = sum(shared) / len(shared) if shared else 0.0
    return rates


def bafd_layer_rates(
    model: nn.Module,
    targets: list[ConvTarget],
    rate: float,
    k: int = 2,
    max_layer_rate: float = 0.95,
    rank_1x1: bool = False,
) -> tuple[dict[str, float], dict[str, int]]:
    """Per-layer rates (fraction removed) for every target, from the model's current weights.

    Returns (rates, ranked_units): the shared rate of every target, and the units each ranked
    layer won in the global allocation (kept in the plan to explain the rates).
    """
    chosen = ranked(model, targets, rank_1x1)
    scores = {t.conv: bafd_layer_scores(conv_weight(model, t), k) for t in chosen}
    units = allocate_units(scores, rate, max_layer_rate)
    ranked_rates = {name: units[name] / len(scores[name]) for name in scores}
    return share_blockwise(targets, ranked_rates), units
