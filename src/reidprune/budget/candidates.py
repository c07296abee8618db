"""The search space: removable units (tokens, heads, filters) grouped per block, their importance,
the sketch of a plan, and applying a plan to a model.

A *group* is one block's tokens, one block's heads, or one conv's filters. Its units are sorted
least important first, so a plan is just "how many units each group loses" (`removed[g]`): the
removed units of group g are its first removed[g] units. Importance is normalised so that units
of different kinds are comparable (docs/budget_search.md, "Importance"):

    w_u = d_g * s_u / sum_{v in g} s_v

s_u is the unit's raw score (tokens: calibrated Taylor score of the key, as AMG; heads: map
concentration log2(N_k) - entropy in bits, so a uniform head scores 0; filters: the criterion's
norm), d_g the group's depth factor (tokens 1 - c*l as AMG, heads 1 / (1 + delta*l)). Every group
then carries the same mass d_g, and a unit's weight is the fraction of its block's signal it holds.
A plan's loss is sum_g d_g * -ln(kept fraction of g's mass) (`Group.loss`): additive while little
of a group is removed, and ever steeper as a group empties.

Token groups depend on the token method. AMG: one group per block, its units the block's key
positions (static masks; blocks are independent). top-k / ToMe: one group per block, its units
the tokens the block drops (top-k) or merges away (ToMe), the r-th unit the r-th cheapest such
removal on the dense model (`reduction_scores`). A token removed in block i is gone from every
later block, so the blocks are chained: the sketch's tokens are cumulative, the unit's importance
sums what it holds in block i and every later block, and a group can only lose what the plan
leaves it (`SearchSpace.capacity`: at least `min_tokens` patches stay; ToMe merges at most half
the tokens entering a block).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from reidprune.budget.sketch import CnnSketch, Sketch, VitSketch
from reidprune.errors import CompressionError
from reidprune.models.tokens.tome import tome_max_r

KINDS = ("tokens", "heads", "filters")
TOKEN_METHODS = ("amg", "topk", "tome")  # AMG static masks, EViT top-k drops, ToMe merges
CHAINED_METHODS = ("topk", "tome")  # a token removed in one block is gone from every later block
FILTER_CRITERIA = ("l1", "l2", "fpgm")
TOKEN_DISCOUNT = {"kv": 0.03, "skip": 0.015}  # AMG's depth discounts (compress.tokens)
HEAD_DEPTH_WEIGHT = 0.02  # AMG's delta (compress.heads)
Curve = tuple[tuple[int, float], ...]  # (units removed, loss) points, ascending in units
MIN_DEPTH_FACTOR = 0.1  # keeps 1 - c*l positive in backbones deeper than AMG's 12 blocks


@dataclass(frozen=True)
class Group:
    """Removable units of one block (tokens, heads) or conv (filters), least important first.

    kind: "tokens" | "heads" | "filters"; block: backbone / residual block index; slot: conv index
    inside the block (filters), else 0; name: attention layer or conv module path.
    order: unit ids (token positions, head indices, filter indices) in removal order.
    importance: normalised importance of each unit of `order`, same order.
    min_keep: units the group always keeps; step: units removed per search step.
    curve: measured loss at some removal counts ((count, loss), ascending; `budget.sensitivity`);
      None: the loss comes from `importance` alone.
    """

    kind: str
    block: int
    slot: int
    name: str
    order: tuple[int, ...]
    importance: tuple[float, ...]
    min_keep: int
    step: int
    curve: Curve | None = None

    @property
    def size(self) -> int:
        return len(self.order)

    @property
    def removable(self) -> int:
        return self.size - self.min_keep

    def loss(self, removed: int) -> float:
        """Importance lost when the first `removed` units go. With a measured `curve`: the curve
        through (0, 0), linear between its points. Else -mass * ln(kept mass / mass): about the
        removed mass while little is removed, growing without bound as the group empties, so the
        search spreads removals instead of emptying the cheapest block."""
        if removed <= 0:
            return 0.0
        if self.curve is not None:
            return _interpolate(self.curve, removed)
        mass = sum(self.importance)
        kept = sum(self.importance[removed:])
        return mass * (math.log(mass) - math.log(max(kept, mass * 1e-12)))


def _interpolate(curve: Curve, n: int) -> float:
    """The piecewise-linear curve through (0, 0) and `curve` at n (extended flat past its end)."""
    x0, y0 = 0, 0.0
    for x1, y1 in curve:
        if n <= x1:
            return y0 + (y1 - y0) * (n - x0) / (x1 - x0)
        x0, y0 = x1, y1
    return y0


@dataclass
class SearchSpace:
    """Groups of a model plus its dense sketch; `sketch(removed)` describes any plan.

    token_method: "amg" | "topk" | "tome" (ViT). num_prefix: prefix tokens (never removed);
    min_tokens: patch tokens a chained (top-k / ToMe) plan leaves at least."""

    family: str  # "vit" | "cnn"
    groups: list[Group]
    base: Sketch
    mode: str = "kv"
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    token_method: str = "amg"
    num_prefix: int = 1
    min_tokens: int = 1

    @property
    def chained(self) -> bool:
        """True when a token removed in one block is gone from every later block (top-k, ToMe)."""
        return self.family == "vit" and self.token_method in CHAINED_METHODS

    def sketch(self, removed: Sequence[int]) -> Sketch:
        if isinstance(self.base, VitSketch):
            kept, heads = list(self.base.kept), list(self.base.heads)
            for group, n in zip(self.groups, removed, strict=True):
                if group.kind == "tokens":
                    kept[group.block] -= n
                else:
                    heads[group.block] -= n
            tokens = list(self.base.tokens)
            if self.chained:  # kept[i] holds block i's own removals: carry them through
                current = tokens[0]
                for i, dropped in enumerate(n - k for n, k in zip(self.base.kept, kept, strict=True)):
                    tokens[i] = current
                    current -= dropped
                    kept[i] = current
            return VitSketch(tuple(tokens), tuple(kept), tuple(heads), self.base.mode, self.token_method)
        widths = [list(w) for w in self.base.widths]
        for group, n in zip(self.groups, removed, strict=True):
            widths[group.block][group.slot] -= n
        return CnnSketch(tuple(tuple(w) for w in widths))

    def feasible(self, removed: Sequence[int]) -> bool:
        """Whether the plan can be built: every group within its units and, for chained methods, at
        least `min_tokens` patches left and no ToMe block merging more than it can."""
        if any(not 0 <= n <= g.removable for g, n in zip(self.groups, removed, strict=True)):
            return False
        if not self.chained:
            return True
        sketch = self.sketch(removed)
        if sketch.kept[-1] < self.num_prefix + self.min_tokens:  # type: ignore[union-attr]
            return False
        if self.token_method == "tome":
            return all(
                n - k <= tome_max_r(n, self.num_prefix)
                for n, k in zip(sketch.tokens, sketch.kept, strict=True)  # type: ignore[union-attr]
            )
        return True

    def capacity(self, removed: Sequence[int], index: int) -> int:
        """How many more units group `index` can lose from the plan `removed` (0 = none)."""
        group = self.groups[index]
        most = group.removable - removed[index]
        if not self.chained or group.kind != "tokens" or most <= 0:
            return max(0, most)
        # the plan's patch budget is shared by every block; top-k has no other bound
        spent = sum(n for g, n in zip(self.groups, removed, strict=True) if g.kind == "tokens")
        most = min(most, self.base.tokens[0] - self.num_prefix - self.min_tokens - spent)  # type: ignore[union-attr]
        if self.token_method == "topk" or most <= 0:
            return max(0, most)
        return largest(most, lambda n: self.feasible(_with(removed, index, n)))

    def shift_capacity(self, removed: Sequence[int], to: int, source: int) -> int:
        """How many of group `source`'s removed units can move to group `to` (chained methods: an
        earlier block), keeping the plan feasible."""
        most = min(removed[source], self.groups[to].removable - removed[to])
        return largest(most, lambda n: self.feasible(_with(_with(removed, to, n), source, -n)))

    def most_removed(self) -> list[int]:
        """The cheapest plan: every group at its minimum; chained methods remove tokens as early as
        they can (every block then sees the fewest tokens possible)."""
        removed = [0] * len(self.groups)
        for index in range(len(self.groups)):
            removed[index] = self.capacity(removed, index)
        return removed


def largest(most: int, ok: Callable[[int], bool]) -> int:
    """The largest n in 0..most with ok(n), for a predicate true up to some n and false after."""
    low, high = 0, most
    while low < high:
        middle = (low + high + 1) // 2
        if ok(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _with(removed: Sequence[int], index: int, n: int) -> list[int]:
    out = list(removed)
    out[index] += n
    return out


def is_vit(model: nn.Module) -> bool:
    from reidprune.models.vit import VisionTransformer

    return any(isinstance(m, VisionTransformer) for m in model.modules())


def base_sketch(model: nn.Module, mode: str = "kv", method: str = "amg") -> Sketch:
    """The sketch of `model` as it is (no reduction by this search)."""
    if is_vit(model):
        layout = _dense_layout(model)
        n = layout.num_tokens
        heads = tuple(block.attn.num_heads for block in layout.blocks)
        return VitSketch((n,) * layout.depth, (n,) * layout.depth, heads, mode, method)
    from reidprune.compress.filters.targets import require_resnet
    from reidprune.models.resnet import resolved_mid_widths

    return CnnSketch(tuple(tuple(w) for w in resolved_mid_widths(require_resnet(model).arch)))


def _dense_layout(model: nn.Module) -> Any:
    from reidprune.compress.tokens.layout import find_backbone

    layout = find_backbone(model)
    if getattr(layout.vit, "token_spec", None) is not None:
        raise CompressionError(
            f"the model already has '{layout.vit.token_spec.method}' token reduction; the budget search "
            "starts from a model without token reduction (head- or filter-pruned models are fine)"
        )
    return layout


def _normalised(scores: Tensor, depth_factor: float) -> Tensor:
    """scores (n,) >= 0 -> depth_factor * scores / sum; uniform when every score is 0."""
    scores = scores.double().clamp_min(0.0)
    total = float(scores.sum())
    if not math.isfinite(total):
        raise CompressionError("budget search: importance scores contain NaN or inf")
    if total <= 0.0:
        return torch.full_like(scores, depth_factor / scores.numel())
    return scores * (depth_factor / total)


def _group(
    kind: str, block: int, slot: int, name: str, ids: Tensor, weights: Tensor, min_keep: int, step: int
) -> Group:
    # least important first; ties go to the lower id (stable sort) so plans are reproducible
    order = torch.sort(weights, stable=True).indices
    return Group(
        kind,
        block,
        slot,
        name,
        tuple(int(i) for i in ids[order]),
        tuple(float(w) for w in weights[order]),
        min_keep,
        step,
    )


def vit_space(
    model: nn.Module,
    batches: Sequence[dict[str, Any]],
    *,
    mode: str = "kv",
    token_method: str = "amg",
    min_tokens: int = 1,
    min_heads: int = 1,
    token_step: int | None = None,
    device: torch.device | str | None = None,
) -> SearchSpace:
    """Token and head groups of a ViT, scored by ONE calibration pass (token scores and head
    entropies together). batches: calibration batch dicts with "image" (and "label" for AMG).

    token_method: "amg" (static masks, Taylor key scores; `mode` kv | skip), "topk" (EViT drops,
      class-token attention) or "tome" (merges, key similarity); see the module docstring.
    min_tokens: patch tokens every block keeps (AMG) / the plan leaves (top-k, ToMe); CLS always
      stays. min_heads: heads per block. token_step: tokens per search step (default P // 32, >= 1).
    """
    from reidprune.compress.heads.importance import HeadEntropy

    if token_method not in TOKEN_METHODS:
        raise CompressionError(f"token_method={token_method!r}: expected one of {', '.join(TOKEN_METHODS)}")
    if token_method == "amg" and mode not in TOKEN_DISCOUNT:
        raise CompressionError(f"token mode must be 'kv' or 'skip'; got {mode!r}")
    layout = _dense_layout(model)
    depth, n_tok, patches = layout.depth, layout.num_tokens, layout.num_patches
    if not 1 <= min_tokens <= patches:
        raise CompressionError(f"min_tokens={min_tokens}: expected 1..{patches} (patch tokens per block)")
    names = [layout.attn_name(i) for i in range(depth)]
    heads_stat = HeadEntropy()
    if token_method == "amg":
        summary, tokens = _amg_token_weights(model, batches, layout, names, heads_stat, mode, device)
    else:
        summary, tokens = _chained_token_weights(
            model, batches, layout, names, heads_stat, token_method, device
        )
    entropies = heads_stat.entropies()
    missing = [name for name in names if name not in entropies]
    if missing:
        raise CompressionError(f"calibration did not reach the attention layers {missing}")
    step = token_step if token_step is not None else max(1, patches // 32)
    groups: list[Group] = []
    for i, name in enumerate(names):
        ids, weights = tokens[i]
        # top-k keeps min_tokens per block; ToMe's bound comes from `SearchSpace.capacity`
        keep = 0 if token_method == "tome" else min_tokens
        groups.append(_group("tokens", i, 0, name, ids, weights, keep, step))
        heads = layout.blocks[i].attn.num_heads
        if heads > min_heads:
            concentration = math.log2(n_tok) - entropies[name].double()
            weights = _normalised(concentration, 1.0 / (1.0 + HEAD_DEPTH_WEIGHT * i))
            groups.append(_group("heads", i, 0, name, torch.arange(heads), weights, min_heads, 1))
    info: dict[str, Any] = {
        "calibration": {"batches": summary.batches, "images": summary.images},
        "token_method": token_method,
    }
    if token_method == "amg":
        info["mode"] = mode
    return SearchSpace(
        "vit",
        groups,
        base_sketch(model, mode, token_method),
        mode,
        info,
        token_method=token_method,
        num_prefix=layout.num_prefix_tokens,
        min_tokens=min_tokens,
    )


def _amg_token_weights(
    model: nn.Module,
    batches: Sequence[dict[str, Any]],
    layout: Any,
    names: list[str],
    heads_stat: Any,
    mode: str,
    device: torch.device | str | None,
) -> tuple[Any, list[tuple[Tensor, Tensor]]]:
    """(calibration summary, per block (patch positions, normalised Taylor key scores))."""
    from reidprune.compress.calibration import calibrate
    from reidprune.compress.tokens.scores import TaylorKeyScore, scores_by_position

    tokens_stat = TaylorKeyScore(names)
    summary = calibrate(model, batches, [tokens_stat, heads_stat], device=device)
    missing = [name for name in names if name not in tokens_stat.sums]
    if missing:
        raise CompressionError(f"calibration did not reach the attention layers {missing}")
    raw = scores_by_position(tokens_stat, names, [None] * layout.depth, layout.num_tokens)
    positions = torch.arange(layout.num_prefix_tokens, layout.num_tokens)
    out = []
    for i in range(layout.depth):
        discount = max(1.0 - TOKEN_DISCOUNT[mode] * i, MIN_DEPTH_FACTOR)
        out.append((positions, _normalised(raw[i, layout.num_prefix_tokens :], discount)))
    return summary, out


def _chained_token_weights(
    model: nn.Module,
    batches: Sequence[dict[str, Any]],
    layout: Any,
    names: list[str],
    heads_stat: Any,
    method: str,
    device: torch.device | str | None,
) -> tuple[Any, list[tuple[Tensor, Tensor]]]:
    """(calibration summary, per block (unit ordinals, importance)) for top-k drops / ToMe merges.

    Each block's dense-model losses (`reduction_scores`) are normalised to the block's depth factor
    (AMG skip's 1 - 0.015 l); a unit of block i then weighs what it holds in block i plus the same
    rank's weight in every later block, since the token it removes is gone from all of them."""
    from reidprune.budget.reduction_scores import ClsAttentionMass, MergeDistance
    from reidprune.compress.calibration import calibrate

    if method == "topk":
        stat: Any = ClsAttentionMass(names, layout.num_prefix_tokens, layout.has_class_token)
        summary = calibrate(model, batches, [stat, heads_stat], device=device)
    else:
        stat = MergeDistance(layout)
        with stat.capturing():
            summary = calibrate(model, batches, [heads_stat], device=device)
        stat.all_reduce()
    per_block = []
    for i, name in enumerate(names):
        discount = max(1.0 - TOKEN_DISCOUNT["skip"] * i, MIN_DEPTH_FACTOR)
        per_block.append(_normalised(stat.mean(name), discount))
    carried = torch.stack(per_block).flip(0).cumsum(0).flip(0)  # block i: sum over blocks >= i
    ids = torch.arange(carried.shape[1])
    return summary, [(ids, carried[i]) for i in range(layout.depth)]


def cnn_space(
    model: nn.Module, *, criterion: str = "l1", min_filters: int = 1, filter_step: int | None = None
) -> SearchSpace:
    """Filter groups of a reidprune ResNet's internal convs, scored by a weight criterion
    (l1 = HFP, l2 = SFP, fpgm = summed distance to the other filters). No data needed.

    filter_step: filters removed per search step (default width // 16, at least 1).
    """
    from reidprune.compress.filters.criteria import distance_sums, l1_norms, l2_norms, pairwise_distances
    from reidprune.compress.filters.targets import conv_weight, prunable_convs, require_resnet
    from reidprune.models.resnet import block_names

    if criterion not in FILTER_CRITERIA:
        raise CompressionError(
            f"filter criterion {criterion!r}: expected one of {', '.join(FILTER_CRITERIA)}"
        )
    net = require_resnet(model)
    index = {name: i for i, name in enumerate(block_names(net.arch))}
    groups: list[Group] = []
    slots: dict[int, int] = {}
    for target in prunable_convs(net, "internal"):
        weight = conv_weight(net, target)
        if criterion == "l1":
            scores = l1_norms(weight)
        elif criterion == "l2":
            scores = l2_norms(weight)
        else:
            scores = distance_sums(pairwise_distances(weight))
        block = index[target.block]
        slot = slots.get(block, 0)
        slots[block] = slot + 1
        n = weight.shape[0]
        step = filter_step if filter_step is not None else max(1, n // 16)
        groups.append(
            _group(
                "filters",
                block,
                slot,
                target.conv,
                torch.arange(n),
                _normalised(scores, 1.0),
                min(min_filters, n),
                step,
            )
        )
    return SearchSpace("cnn", groups, base_sketch(model), info={"criterion": criterion})


def apply_plan(model: nn.Module, space: SearchSpace, removed: Sequence[int]) -> nn.Module:
    """A new model with the plan applied (`model` is not modified): heads removed physically and an
    AMG token spec attached (ViT), or the smaller ResNet extracted (CNN)."""
    if space.family == "vit":
        return _apply_vit(model, space, removed)
    return _apply_cnn(model, space, removed)


def kept_units(group: Group, removed: int) -> list[int]:
    return sorted(group.order[removed:])


def _apply_vit(model: nn.Module, space: SearchSpace, removed: Sequence[int]) -> nn.Module:
    from reidprune.compress.heads.removal import remove_heads
    from reidprune.compress.tokens import attach_reducers
    from reidprune.compress.tokens.layout import find_backbone

    keep = {
        g.name: kept_units(g, n)
        for g, n in zip(space.groups, removed, strict=True)
        if g.kind == "heads" and n
    }
    new = remove_heads(model, keep) if keep else copy.deepcopy(model)
    layout = find_backbone(new)
    spec = _token_spec(space, removed, layout)
    if spec is not None:
        attach_reducers(new, spec)
        if getattr(new, "arch", None) is not None:
            new.arch = dataclasses.replace(new.arch, tokens=spec)
    return new


def _token_spec(space: SearchSpace, removed: Sequence[int], layout: Any) -> dict[str, Any] | None:
    """The `arch.tokens` spec of the plan's token removals (None: no token is removed)."""
    from reidprune.models.tokens.spec import with_prefix

    lost = [0] * layout.depth
    units: list[list[int] | None] = [None] * layout.depth
    for group, n in zip(space.groups, removed, strict=True):
        if group.kind == "tokens" and n:
            lost[group.block] = n
            units[group.block] = kept_units(group, n)
    if not any(lost):
        return None
    prefix = list(range(layout.num_prefix_tokens))
    if space.token_method == "amg":
        kept = [[*prefix, *u] if u is not None else None for u in units]
        spec = {"method": "amg", "mode": space.mode, "num_tokens": layout.num_tokens, "kept": kept}
    elif space.token_method == "topk":
        keep: list[int | None] = []
        patches = layout.num_patches
        for n in lost:
            patches -= n
            keep.append(patches if n else None)
        spec = {"method": "topk", "num_tokens": layout.num_tokens, "fuse": False, "keep": keep}
    else:
        spec = {"method": "tome", "num_tokens": layout.num_tokens, "prop_attn": True, "r": lost}
    return with_prefix(spec, layout.num_prefix_tokens)


def _apply_cnn(model: nn.Module, space: SearchSpace, removed: Sequence[int]) -> nn.Module:
    from reidprune.compress.filters.extraction import copy_model, extract_pruned
    from reidprune.compress.filters.targets import prunable_convs, zero_filters

    masked = copy_model(model)
    targets = {t.conv: t for t in prunable_convs(masked, "internal")}
    for group, n in zip(space.groups, removed, strict=True):
        if n:
            zero_filters(masked, targets[group.name], torch.tensor(sorted(group.order[:n]), dtype=torch.long))
    small, _ = extract_pruned(
        masked, method="budget-search", details={"criterion": space.info.get("criterion")}
    )
    return small
