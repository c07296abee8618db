"""Greedy search under a cost budget: remove the units that lose the least importance per unit of
predicted cost saved, re-predicting the cost after every step (docs/budget_search.md).

    result = greedy_search(space, cost_model, target=2.5, kind_weights={"tokens": 1, "heads": 1})

Importance lost is `Group.loss`, -mass * ln(kept fraction of the group's importance), so a
group's next units get dearer as it empties. Each step looks at every group's next `step` units
(its least important remaining ones), asks
the cost model what removing them saves from the CURRENT plan (so interactions are priced: a
token saves less attention once its block has lost heads, a head saves less once its block has
lost keys), and takes the group with the lowest lost-importance / saved-cost ratio (ties: the
earlier group). The last step is shortened to the fewest units that reach the target. No
randomness: the same space, cost model and target always give the same plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reidprune.budget.candidates import SearchSpace
from reidprune.budget.cost import CostModel
from reidprune.errors import CompressionError


@dataclass
class SearchResult:
    """removed[g]: units group g loses; cost: predicted cost of the plan; lost: weighted importance
    removed; steps: search steps taken."""

    removed: list[int]
    cost: float
    dense_cost: float
    lost: float
    steps: int
    kind_weights: dict[str, float] = field(default_factory=dict)


def lost_importance(space: SearchSpace, removed: list[int], kind_weights: Mapping[str, float]) -> float:
    return sum(
        kind_weights.get(g.kind, 1.0) * sum(g.importance[:n])
        for g, n in zip(space.groups, removed, strict=True)
    )


def check_reachable(space: SearchSpace, cost_model: CostModel, target: float) -> float:
    """The cheapest plan's cost; CompressionError when even it is above `target`."""
    floor = cost_model.predict(space.sketch(space.most_removed()))
    if floor > target:
        kinds = " / ".join(dict.fromkeys(g.kind for g in space.groups))
        raise CompressionError(
            f"budget {target:.4g} {cost_model.unit} cannot be reached: the smallest plan of this search "
            f"(every block keeping its minimum {kinds}) costs {floor:.4g} {cost_model.unit}"
        )
    return floor


def greedy_search(
    space: SearchSpace, cost_model: CostModel, target: float, kind_weights: Mapping[str, float] | None = None
) -> SearchResult:
    """The plan whose predicted cost is at most `target` (see the module docstring)."""
    weights = {g.kind: float((kind_weights or {}).get(g.kind, 1.0)) for g in space.groups}
    removed = [0] * len(space.groups)
    dense = cost = cost_model.predict(space.sketch(removed))
    if cost > target:
        check_reachable(space, cost_model, target)
    steps = 0
    while cost > target:
        best = _best_step(space, cost_model, removed, cost, weights, 1)
        steps_long = 2
        # flat stretches of a measured table (noise made monotone) save nothing in one step: lengthen
        # the steps until some group's saves cost, rather than stop short of a reachable target
        while best is None and any(
            g.step * (steps_long // 2) < g.removable - r for g, r in zip(space.groups, removed, strict=True)
        ):
            best = _best_step(space, cost_model, removed, cost, weights, steps_long)
            steps_long *= 2
        if best is None:  # nothing left that saves cost (check_reachable makes this unreachable)
            raise CompressionError(f"budget {target:.4g} {cost_model.unit}: no removal saves cost any more")
        _, index, n, new_cost = best
        if new_cost <= target and n > 1:  # the fewest units of this step that reach the target
            for fewer in range(1, n):
                trial = removed.copy()
                trial[index] += fewer
                fewer_cost = cost_model.predict(space.sketch(trial))
                if fewer_cost <= target:
                    n, new_cost = fewer, fewer_cost
                    break
        removed[index] += n
        cost = new_cost
        steps += 1
    return SearchResult(removed, cost, dense, lost_importance(space, removed, weights), steps, weights)


def _best_step(
    space: SearchSpace,
    cost_model: CostModel,
    removed: list[int],
    cost: float,
    weights: Mapping[str, float],
    length: int,
) -> tuple[float, int, int, float] | None:
    """(ratio, group, units, new cost) of the removal of `length` steps of one group that loses the
    least importance per cost saved; None when no group's saves any cost."""
    best: tuple[float, int, int, float] | None = None
    for index, group in enumerate(space.groups):
        n = min(group.step * length, group.removable - removed[index])
        if n <= 0:
            continue
        trial = removed.copy()
        trial[index] += n
        new_cost = cost_model.predict(space.sketch(trial))
        saved = cost - new_cost
        if saved <= 0.0:
            continue
        done = removed[index]
        lost = weights[group.kind] * (group.loss(done + n) - group.loss(done))
        ratio = lost / saved
        if best is None or ratio < best[0]:
            best = (ratio, index, n, new_cost)
    return best


def describe_plan(space: SearchSpace, result: SearchResult, cost_model: CostModel) -> dict[str, Any]:
    """Per block: kept tokens / heads (ViT) or widths (CNN), and the predicted cost of each block
    where the cost model gives one."""
    sketch = space.sketch(result.removed)
    per_block = cost_model.block_gmacs(sketch) if hasattr(cost_model, "block_gmacs") else None
    blocks: list[dict[str, Any]] = []
    if space.family == "vit":
        for i, (tokens, kept, heads) in enumerate(zip(sketch.tokens, sketch.kept, sketch.heads, strict=True)):  # type: ignore[union-attr]
            entry: dict[str, Any] = {
                "block": i,
                "tokens": tokens,
                "kept_tokens": kept,
                "heads": heads,
                "dense_heads": space.base.heads[i],  # type: ignore[union-attr]
            }
            for group, n in zip(space.groups, result.removed, strict=True):
                if group.block == i and group.kind == "heads":
                    entry["kept_heads"] = sorted(group.order[n:])
            blocks.append(entry)
    else:
        for i, widths in enumerate(sketch.widths):  # type: ignore[union-attr]
            dense = space.base.widths[i]  # type: ignore[union-attr]
            blocks.append({"block": i, "widths": list(widths), "dense_widths": list(dense)})
    if per_block is not None:
        for entry, value in zip(blocks, per_block, strict=True):
            entry[f"predicted_{cost_model.unit}"] = value
    return {"blocks": blocks}
