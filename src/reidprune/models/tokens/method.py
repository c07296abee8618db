"""What a token-reduction method provides (`TokenMethod`), and the calibrated scores its plan may take.

A method is one module (`amg.py`, `topk.py`, `pm.py`, `tome.py`) that ends with a `METHOD =
TokenMethod(...)`, and one row in `methods.METHODS`. The calibration pass that produces scores
belongs to `reidprune.compress` (it runs the model on data); everything here is pure planning on
tensors and specs, so that the model layer can rebuild a reduced model from its `arch.tokens`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from reidprune.errors import CompressionError
from reidprune.models.tokens.layout import BackboneLayout


@dataclass(frozen=True)
class Scores:
    """Gradient-weighted attention scores of one calibration pass, by original position.

    raw: (L, num_tokens) float64, NaN where a position was not a key of the block, for prefix
      keys and for blocks the pass did not reach. scored: (L,) which blocks the pass reached.
    seen: what the pass ran on ({"batches": n, "images": n}), reported in the plan's details.
    """

    raw: Tensor
    scored: list[bool]
    seen: dict[str, int] = field(default_factory=dict)


# (spec dict, plan details, initial reducer weights by block index)
Plan = tuple[dict[str, Any], dict[str, Any], dict[int, Tensor]]


@dataclass(frozen=True)
class TokenMethod:
    """One token-reduction method: its spec, options, checks, planning and reducers.

    name: the spec's "method" and prune_tokens' name; aliases: other names prune_tokens accepts.
    options: the options prune_tokens takes for it, with their defaults.
    spec_keys: the keys its `arch.tokens` dict may hold (besides "num_prefix_tokens").
    parse(values, depth, num_tokens, where, num_prefix_tokens) -> the validated spec dataclass.
    check(opts, layout, rate, existing): validate / complete the options in place before any work.
    scores(opts): "required" | "optional" (used when data is given) | "none" calibrated scores.
    key_positions(existing, depth): the original position of each key column of every block's
      attention in the model being scored (None = all positions).
    plan(layout, rate, opts, existing, scores) -> (spec dict, details, reducer weights).
    reducers(spec, layout, weights) -> one reducer (or None) per block.
    repeatable: a model reduced by this method may be reduced again by it (AMG rounds).
    """

    name: str
    aliases: tuple[str, ...]
    options: Mapping[str, Any]
    spec_keys: frozenset[str]
    parse: Callable[[Mapping[str, Any], int, int, str, int], Any]
    check: Callable[[dict[str, Any], BackboneLayout, float, Any], None]
    plan: Callable[[BackboneLayout, float, dict[str, Any], Any, Scores | None], Plan]
    reducers: Callable[[Any, BackboneLayout, Mapping[int, Tensor]], Sequence[nn.Module | None]]
    scores: Callable[[dict[str, Any]], Literal["required", "optional", "none"]] = lambda opts: "none"
    key_positions: Callable[[Any, int], list[Any]] = lambda existing, depth: [None] * depth
    repeatable: bool = False


def normalise_scores(scores: Tensor, discount: Tensor) -> Tensor:
    """Per-block L2 normalisation over the candidate (non-NaN) entries, times a depth factor.

    scores: (L, N) with NaN for non-candidates; discount: (L,) multiplier per block (1 - c*l).
    Returns (L, N) with NaN kept. A block whose scores are all zero stays zero.
    """
    finite = torch.nan_to_num(scores, nan=0.0).abs()
    norm = finite.pow(2).sum(dim=1, keepdim=True).sqrt().clamp_min(torch.finfo(scores.dtype).tiny)
    return scores.abs() / norm * discount.to(scores.dtype).unsqueeze(1)


def check_number(value: Any, name: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise CompressionError(f"{name} must be a number in [{low}, {high}]; got {value!r}")


def json_scores(values: Tensor) -> list[list[float | None]]:
    return [[None if math.isnan(v) else round(v, 6) for v in row] for row in values.tolist()]
