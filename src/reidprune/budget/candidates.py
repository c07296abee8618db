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
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from reidprune.budget.sketch import CnnSketch, Sketch, VitSketch
from reidprune.errors import CompressionError

KINDS = ("tokens", "heads", "filters")
FILTER_CRITERIA = ("l1", "l2", "fpgm")
TOKEN_DISCOUNT = {"kv": 0.03, "skip": 0.015}  # AMG's depth discounts (compress.tokens)
HEAD_DEPTH_WEIGHT = 0.02  # AMG's delta (compress.heads)
MIN_DEPTH_FACTOR = 0.1  # keeps 1 - c*l positive in backbones deeper than AMG's 12 blocks


@dataclass(frozen=True)
class Group:
    """Removable units of one block (tokens, heads) or conv (filters), least important first.

    kind: "tokens" | "heads" | "filters"; block: backbone / residual block index; slot: conv index
    inside the block (filters), else 0; name: attention layer or conv module path.
    order: unit ids (token positions, head indices, filter indices) in removal order.
    importance: normalised importance of each unit of `order`, same order.
    min_keep: units the group always keeps; step: units removed per search step.
    """

    kind: str
    block: int
    slot: int
    name: str
    order: tuple[int, ...]
    importance: tuple[float, ...]
    min_keep: int
    step: int

    @property
    def size(self) -> int:
        return len(self.order)

    @property
    def removable(self) -> int:
        return self.size - self.min_keep

    def loss(self, removed: int) -> float:
        """Importance lost when the first `removed` units go: -mass * ln(kept mass / mass).

        About the removed mass while little is removed, growing without bound as the group
        empties, so the search spreads removals instead of emptying the cheapest block."""
        if removed <= 0:
            return 0.0
        mass = sum(self.importance)
        kept = sum(self.importance[removed:])
        return mass * (math.log(mass) - math.log(max(kept, mass * 1e-12)))


@dataclass
class SearchSpace:
    """Groups of a model plus its dense sketch; `sketch(removed)` describes any plan."""

    family: str  # "vit" | "cnn"
    groups: list[Group]
    base: Sketch
    mode: str = "kv"
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def sketch(self, removed: Sequence[int]) -> Sketch:
        if isinstance(self.base, VitSketch):
            kept, heads = list(self.base.kept), list(self.base.heads)
            for group, n in zip(self.groups, removed, strict=True):
                if group.kind == "tokens":
                    kept[group.block] -= n
                else:
                    heads[group.block] -= n
            return VitSketch(self.base.tokens, tuple(kept), tuple(heads), self.base.mode)
        widths = [list(w) for w in self.base.widths]
        for group, n in zip(self.groups, removed, strict=True):
            widths[group.block][group.slot] -= n
        return CnnSketch(tuple(tuple(w) for w in widths))

    def most_removed(self) -> list[int]:
        return [g.removable for g in self.groups]


def is_vit(model: nn.Module) -> bool:
    from reidprune.models.vit import VisionTransformer

    return any(isinstance(m, VisionTransformer) for m in model.modules())


def base_sketch(model: nn.Module, mode: str = "kv") -> Sketch:
    """The sketch of `model` as it is (no reduction by this search)."""
    if is_vit(model):
        layout = _dense_layout(model)
        n = layout.num_tokens
        heads = tuple(block.attn.num_heads for block in layout.blocks)
        return VitSketch((n,) * layout.depth, (n,) * layout.depth, heads, mode)
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
    min_tokens: int = 1,
    min_heads: int = 1,
    token_step: int | None = None,
    device: torch.device | str | None = None,
) -> SearchSpace:
    """Token and head groups of a ViT, scored by ONE calibration pass (Taylor key scores and head
    entropies together). batches: calibration batch dicts with "image" and "label".

    min_tokens: patch tokens every block keeps (CLS is always kept); min_heads: heads per block.
    token_step: tokens removed per search step (default P // 32, at least 1).
    """
    from reidprune.compress.calibration import calibrate
    from reidprune.compress.heads.importance import HeadEntropy
    from reidprune.compress.tokens.scores import TaylorKeyScore, scores_by_position

    if mode not in TOKEN_DISCOUNT:
        raise CompressionError(f"token mode must be 'kv' or 'skip'; got {mode!r}")
    layout = _dense_layout(model)
    depth, n_tok, patches = layout.depth, layout.num_tokens, layout.num_patches
    if not 1 <= min_tokens <= patches:
        raise CompressionError(f"min_tokens={min_tokens}: expected 1..{patches} (patch tokens per block)")
    names = [layout.attn_name(i) for i in range(depth)]
    tokens_stat, heads_stat = TaylorKeyScore(names), HeadEntropy()
    summary = calibrate(model, batches, [tokens_stat, heads_stat], device=device)
    raw = scores_by_position(tokens_stat, names, [None] * depth, n_tok)
    entropies = heads_stat.entropies()
    missing = [name for name in names if name not in tokens_stat.sums or name not in entropies]
    if missing:
        raise CompressionError(f"calibration did not reach the attention layers {missing}")
    step = token_step if token_step is not None else max(1, patches // 32)
    groups: list[Group] = []
    positions = torch.arange(1, n_tok)
    for i, name in enumerate(names):
        discount = max(1.0 - TOKEN_DISCOUNT[mode] * i, MIN_DEPTH_FACTOR)
        groups.append(
            _group("tokens", i, 0, name, positions, _normalised(raw[i, 1:], discount), min_tokens, step)
        )
        heads = layout.blocks[i].attn.num_heads
        if heads > min_heads:
            concentration = math.log2(n_tok) - entropies[name].double()
            weights = _normalised(concentration, 1.0 / (1.0 + HEAD_DEPTH_WEIGHT * i))
            groups.append(_group("heads", i, 0, name, torch.arange(heads), weights, min_heads, 1))
    info = {"calibration": {"batches": summary.batches, "images": summary.images}, "mode": mode}
    return SearchSpace("vit", groups, base_sketch(model, mode), mode, info)


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
    kept: list[list[int] | None] = [None] * layout.depth
    for group, n in zip(space.groups, removed, strict=True):
        if group.kind == "tokens" and n:
            kept[group.block] = [0, *kept_units(group, n)]
    if any(k is not None for k in kept):
        spec = {"method": "amg", "mode": space.mode, "num_tokens": layout.num_tokens, "kept": kept}
        attach_reducers(new, spec)
        if getattr(new, "arch", None) is not None:
            new.arch = dataclasses.replace(new.arch, tokens=spec)
    return new


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
