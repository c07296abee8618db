"""Greedy search under a cost budget: remove the units that lose the least importance per unit of
predicted cost saved, re-predicting the cost after every step (docs/budget_search.md).

    result = greedy_search(space, cost_model, target=2.5, kind_weights={"tokens": 1, "heads": 1})

Importance lost is `Group.loss`: the group's measured sensitivity curve (`sensitivity.py`), or
-mass * ln(kept fraction of the group's importance); either way a group's next units get dearer
as it empties. Each step looks at every group's next `step` units
(its least important remaining ones; an untouched group also its next 2, 4, 8 ... steps), asks
the cost model what removing them saves from the CURRENT plan (so interactions are priced: a
token saves less attention once its block has lost heads, a head saves less once its block has
lost keys), and takes the group with the lowest lost-importance / saved-cost ratio (ties: the
earlier group). The last step is shortened to the fewest units that reach the target. Top-k /
ToMe groups share one token budget (a token dropped in block i is gone from every later block);
when it is spent before the target is met, the search moves removals to earlier blocks (each
move saves the tokens' cost in the blocks between), by the same ratio. No randomness: the same
space, cost model and target always give the same plan.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reidprune.budget.candidates import SearchSpace
from reidprune.budget.cost import CostModel
from reidprune.errors import CompressionError


@dataclass
class SearchResult:
    """removed[g]: units group g loses; cost: predicted cost of the plan; lost: the plan's weighted
    loss (`lost_importance`); steps: search steps taken."""

    removed: list[int]
    cost: float
    dense_cost: float
    lost: float
    steps: int
    kind_weights: dict[str, float] = field(default_factory=dict)


def lost_importance(space: SearchSpace, removed: list[int], kind_weights: Mapping[str, float]) -> float:
    """The plan's weighted loss, the sum the search minimises (`Group.loss`)."""
    return sum(kind_weights.get(g.kind, 1.0) * g.loss(n) for g, n in zip(space.groups, removed, strict=True))


def check_reachable(space: SearchSpace, cost_model: CostModel, target: float) -> float:
    """The cheapest plan's cost; CompressionError when even it is above `target`. The cheapest plan
    is every group at its minimum, or the same without token reduction: on a measured runtime a
    reducer's own work (gathers, matching) can cost more than the tokens it removes save."""
    most = space.most_removed()
    without_tokens = [0 if g.kind == "tokens" else n for g, n in zip(space.groups, most, strict=True)]
    floor = min(cost_model.predict(space.sketch(plan)) for plan in (most, without_tokens))
    if floor > target:
        kinds = " / ".join(dict.fromkeys(g.kind for g in space.groups))
        raise CompressionError(
            f"budget {target:.4g} {cost_model.unit} cannot be reached: the smallest plan of this search "
            f"(every block keeping its minimum {kinds}) costs {floor:.4g} {cost_model.unit}"
        )
    return floor


@dataclass(frozen=True)
class Move:
    """One search step: group `index` loses `n` more units; with `source`, group `source` gets `n`
    back (a shift of top-k / ToMe removals to an earlier block)."""

    index: int
    n: int
    source: int | None = None

    def applied(self, removed: list[int], n: int | None = None) -> list[int]:
        n = self.n if n is None else n
        out = removed.copy()
        out[self.index] += n
        if self.source is not None:
            out[self.source] -= n
        return out


def greedy_search(
    space: SearchSpace,
    cost_model: CostModel,
    target: float,
    kind_weights: Mapping[str, float] | None = None,
    start: Sequence[int] | None = None,
) -> SearchResult:
    """The plan whose predicted cost is at most `target` (see the module docstring); from the plan
    `start` when given (a later stage of a staged search), else from the dense model."""
    weights = {g.kind: float((kind_weights or {}).get(g.kind, 1.0)) for g in space.groups}
    dense = cost_model.predict(space.sketch([0] * len(space.groups)))
    removed = list(start) if start is not None else [0] * len(space.groups)
    cost = cost_model.predict(space.sketch(removed)) if start is not None else dense
    if cost > target:
        check_reachable(space, cost_model, target)
    steps = 0
    while cost > target:
        best = _lengthened(space, cost_model, removed, cost, weights, _removals)
        if best is None and space.chained:
            # top-k / ToMe: the plan's token budget is spent, but a removal moved to an earlier
            # block still saves (fewer tokens in the blocks between); the cheapest plan is reachable
            best = _lengthened(space, cost_model, removed, cost, weights, _shifts)
        if best is None:  # rare: check_reachable saw a cheaper plan that no chain of steps reaches
            raise CompressionError(
                f"budget {target:.4g} {cost_model.unit}: no removal saves cost any more "
                f"(the search stopped at {cost:.4g} {cost_model.unit})"
            )
        _, move, new_cost = best
        if new_cost <= target and move.n > 1:  # the fewest units of this step that reach the target
            for fewer in range(1, move.n):
                fewer_cost = cost_model.predict(space.sketch(move.applied(removed, fewer)))
                if fewer_cost <= target:
                    move, new_cost = Move(move.index, fewer, move.source), fewer_cost
                    break
        removed = move.applied(removed)
        cost = new_cost
        steps += 1
    return SearchResult(removed, cost, dense, lost_importance(space, removed, weights), steps, weights)


def _removals(space: SearchSpace, removed: list[int], length: int) -> list[Move]:
    """Every group's next `length` steps (fewer where the group, or a chained plan, has no more)."""
    moves = []
    for index, group in enumerate(space.groups):
        n = min(group.step * length, space.capacity(removed, index))
        if n > 0:
            moves.append(Move(index, n))
    return moves


def _shifts(space: SearchSpace, removed: list[int], length: int) -> list[Move]:
    """Top-k / ToMe: `length` steps of one block's token removals moved to an earlier block."""
    tokens = [i for i, g in enumerate(space.groups) if g.kind == "tokens"]
    moves = []
    for source in tokens:
        if removed[source] == 0:
            continue
        for to in tokens:
            if space.groups[to].block >= space.groups[source].block:
                break
            n = min(space.groups[to].step * length, space.shift_capacity(removed, to, source))
            if n > 0:
                moves.append(Move(to, n, source))
    return moves


def _lengthened(
    space: SearchSpace,
    cost_model: CostModel,
    removed: list[int],
    cost: float,
    weights: Mapping[str, float],
    candidates: Callable[[SearchSpace, list[int], int], list[Move]],
) -> tuple[float, Move, float] | None:
    """The best move of 1 step of every group, weighed against 2, 4, 8 ... steps of the groups that
    have lost nothing yet (ties: the shorter move); while no move saves, every group's steps grow.

    A group's first units pay a fixed entry cost on a measured runtime (a token reducer's gathers
    as soon as a block drops its first token), so one step of an untouched block's tokens saves
    little or nothing while a longer one saves much more per importance lost; judged one step at a
    time, the search would empty every block's heads before it touched a token (seen on the demo
    ViT in ONNX Runtime). Once a group has started, its next step carries no entry cost, so one
    step is enough there (and keeps the search fast). Growing every group's steps while nothing
    saves crosses flat stretches of a measured table (noise made monotone). On a GMACs cost the
    one-step move is always at least as good (the loss is convex, the saving linear), so such
    plans do not change."""
    length, best = 1, None
    while True:
        moves = candidates(space, removed, length)
        if best is not None:  # something saves: look further only where an entry cost may hide
            moves = [m for m in moves if removed[m.index] == 0]
        found = _best_move(space, cost_model, removed, cost, weights, moves)
        if found is not None and (best is None or found[0] < best[0]):
            best = found
        if not any(m.n == space.groups[m.index].step * length for m in moves):
            return best
        length *= 2


def _best_move(
    space: SearchSpace,
    cost_model: CostModel,
    removed: list[int],
    cost: float,
    weights: Mapping[str, float],
    moves: list[Move],
) -> tuple[float, Move, float] | None:
    """(ratio, move, new cost) of the move that loses the least importance per cost saved (ties: the
    earlier move); None when no move saves any cost."""
    best: tuple[float, Move, float] | None = None
    for move in moves:
        new_cost = cost_model.predict(space.sketch(move.applied(removed)))
        saved = cost - new_cost
        if saved <= 0.0:
            continue
        group, done = space.groups[move.index], removed[move.index]
        lost = weights[group.kind] * (group.loss(done + move.n) - group.loss(done))
        if move.source is not None:  # the source group gets its last units back
            source, had = space.groups[move.source], removed[move.source]
            lost -= weights[source.kind] * (source.loss(had) - source.loss(had - move.n))
        ratio = lost / saved
        if best is None or ratio < best[0]:
            best = (ratio, move, new_cost)
    return best


def describe_plan(space: SearchSpace, result: SearchResult, cost_model: CostModel) -> dict[str, Any]:
    """Per block: kept tokens / heads (ViT; top-k / ToMe: tokens entering and leaving the block, and
    how many it drops / merges) or widths (CNN), and each block's predicted cost where the cost
    model gives one."""
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
            if space.chained:  # tokens: entering the block; kept_tokens: leaving it
                entry["dropped_tokens" if space.token_method == "topk" else "merged_tokens"] = tokens - kept
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
