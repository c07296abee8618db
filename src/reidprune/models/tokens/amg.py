"""AMG token pruning: static, input-independent kept-token sets per block (amg.md §2).

Selection: gradient-weighted attention scores (`scores.py`), L2-normalised per block, times a
depth discount (1 - c*l), then the n globally lowest (block, patch) pairs are removed. Kept sets
are stored as ORIGINAL positions, so a second round scores only the still-kept keys, maps them
back and removes more, and any cascade (tokens after heads, heads after tokens) composes.

Options (prune_tokens): mode "kv" | "skip"; depth_discount c (default 0.03 kv, 0.015 skip);
selection "taylor" | "random" (seeded by `seed`; with scores, random positions at AMG's per-block
counts, i.e. equal GMACs; without, counts spread evenly); min_keep patch tokens per block (>= 1).
rate: fraction of the P x L_s (patch, scored block) pairs removed, counted against the ORIGINAL
pairs; planning again on an AMG model removes that many more (two rounds of 0.2 = 0.4 in all).

Application, one reducer per reduced block:
- `KeyValueReducer` ("kv", the paper / LA semantics): every token stays a query and goes through
  the MLP; keys and values are projected ONLY for the kept tokens (gathered before projecting).
- `SkipReducer` ("skip", the TransReID-code semantics): only the kept tokens go through the block
  (as queries and keys, and the MLP); the others pass unchanged. The kept tokens are gathered
  and written back in place, so the sequence stays in raster order at every block boundary:
  nothing to un-permute at the end, and no per-forward argsort.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from reidprune.errors import CompressionError
from reidprune.models.tokens.layout import BackboneLayout
from reidprune.models.tokens.method import (
    Plan,
    Scores,
    TokenMethod,
    check_number,
    json_scores,
    normalise_scores,
)
from reidprune.models.tokens.spec import int_list, per_block, spec_error, with_prefix
from reidprune.models.vit import Block, TokenHooks, TokenState

AMG_MODES = ("kv", "skip")
DEFAULT_DEPTH_DISCOUNT = {"kv": 0.03, "skip": 0.015}  # LA / TransReID seeds (amg.md §2.2)


class KeyValueReducer(TokenHooks):
    """Block with all N queries and c kept keys/values. kept: (c,) original positions, every prefix
    token included (the spec guarantees it)."""

    def __init__(self, kept: Sequence[int]) -> None:
        super().__init__()
        self.register_buffer("kept", torch.as_tensor(list(kept), dtype=torch.long), persistent=False)

    def extra_repr(self) -> str:
        return f"kept={self.kept.numel()}"

    def keys_values(self, block: Block, h: Tensor, state: TokenState) -> Tensor:
        # gathered before the k / v projection: only the kept rows are projected
        return h.index_select(1, self.kept)


class SkipReducer(TokenHooks):
    """Only the kept tokens (c,) go through the block; the others keep their features.

    Output = cat([block(x[kept]), x[skipped]])[order] with the static inverse permutation `order`:
    gathers only (no scatter), which is faster on CPU than index_copy and exports to plain ONNX
    Gather nodes that every runtime supports.
    """

    def __init__(self, kept: Sequence[int], num_tokens: int) -> None:
        super().__init__()
        kept_t = torch.as_tensor(list(kept), dtype=torch.long)
        is_kept = torch.zeros(num_tokens, dtype=torch.bool)
        is_kept[kept_t] = True
        skipped = torch.nonzero(~is_kept).flatten()
        order = torch.empty(num_tokens, dtype=torch.long)
        order[torch.cat([kept_t, skipped])] = torch.arange(num_tokens)
        self.register_buffer("kept", kept_t, persistent=False)
        self.register_buffer("skipped", skipped, persistent=False)
        self.register_buffer("order", order, persistent=False)

    def extra_repr(self) -> str:
        return f"kept={self.kept.numel()}"

    def before_attention(self, block: Block, x: Tensor, state: TokenState) -> Tensor:
        return x.index_select(1, self.kept)

    def after_block(
        self, block: Block, x: Tensor, z: Tensor, y: Tensor, state: TokenState
    ) -> tuple[Tensor, TokenState]:
        return torch.cat([y, x.index_select(1, self.skipped)], dim=1).index_select(1, self.order), state


def select_lowest(values: Tensor, n_remove: int, min_keep: int = 1) -> Tensor:
    """Remove the n globally lowest candidate (block, position) pairs.

    values: (L, N) normalised scores, NaN where a pair is not a candidate (CLS, already removed,
    unscored block). min_keep: candidates each block keeps at least (its top-scoring ones).
    Returns a (L, N) bool mask of the pairs to remove; exactly n_remove are True. Ties go to the
    lower (block, position) first, so the result is deterministic.
    """
    candidates = ~torch.isnan(values)
    eligible = candidates & ~_protected(values, candidates, min_keep)
    available = int(eligible.sum())
    if n_remove > available:
        raise CompressionError(
            f"cannot remove {n_remove} (block, token) pairs: only {available} are left while every block "
            f"keeps at least {min_keep} patch token(s); lower the rate"
        )
    flat = torch.where(eligible, values, torch.full_like(values, float("inf"))).flatten()
    order = torch.argsort(flat, stable=True)[:n_remove]
    remove = torch.zeros(flat.numel(), dtype=torch.bool)
    remove[order] = True
    return remove.view_as(values)


def select_random(values: Tensor, per_block: Tensor, generator: torch.Generator, min_keep: int = 1) -> Tensor:
    """Remove `per_block[l]` uniformly random candidate positions from each block l.

    values: (L, N) with NaN for non-candidates (only the NaN pattern is used); per_block: (L,) long.
    Returns a (L, N) bool removal mask.
    """
    candidates = ~torch.isnan(values)
    eligible = candidates.clone()
    available = eligible.sum(dim=1) - min_keep
    if bool((per_block > available.clamp_min(0)).any()):
        raise CompressionError("random selection: a block has fewer removable tokens than asked for")
    keys = torch.rand(values.shape, generator=generator, dtype=torch.float64)
    keys = torch.where(eligible, keys, torch.full_like(keys, float("inf")))
    rank = torch.argsort(torch.argsort(keys, dim=1, stable=True), dim=1, stable=True)
    return (rank < per_block.unsqueeze(1)) & eligible


def _protected(values: Tensor, candidates: Tensor, min_keep: int) -> Tensor:
    """The min_keep highest candidates of every block."""
    if min_keep <= 0:
        return torch.zeros_like(candidates)
    ranked = torch.where(candidates, values, torch.full_like(values, float("-inf")))
    top = ranked.topk(min(min_keep, values.shape[1]), dim=1).indices
    protected = torch.zeros_like(candidates)
    protected.scatter_(1, top, True)
    return protected & candidates


def uniform_counts(n_remove: int, blocks: int) -> Tensor:
    """n_remove spread over `blocks` as evenly as possible (earlier blocks take the remainder)."""
    base, extra = divmod(n_remove, blocks)
    return torch.tensor([base + (i < extra) for i in range(blocks)], dtype=torch.long)


@dataclass(frozen=True)
class AmgSpec:
    mode: str
    num_tokens: int
    kept: tuple[tuple[int, ...] | None, ...]
    num_prefix_tokens: int = 1

    method = "amg"

    def to_dict(self) -> dict[str, Any]:
        return with_prefix(
            {
                "method": "amg",
                "mode": self.mode,
                "num_tokens": self.num_tokens,
                "kept": [list(k) if k is not None else None for k in self.kept],
            },
            self.num_prefix_tokens,
        )

    def kept_counts(self) -> list[int]:
        """Tokens (prefix included) that each block processes as keys (kv) or at all (skip)."""
        return [len(k) if k is not None else self.num_tokens for k in self.kept]


def _parse_amg(values: Mapping[str, Any], depth: int, num_tokens: int, where: str, prefix: int) -> AmgSpec:
    mode = values.get("mode")
    if mode not in AMG_MODES:
        raise spec_error(where, f"amg 'mode' must be 'kv' or 'skip'; got {mode!r}")
    kept: list[tuple[int, ...] | None] = []
    for i, entry in enumerate(per_block(values.get("kept"), depth, f"{where}.kept")):
        if entry is None:
            kept.append(None)
            continue
        positions = int_list(entry, f"{where}.kept[{i}]")
        if positions[:prefix] != list(range(prefix)):
            first = "position 0" if prefix == 1 else f"positions 0..{prefix - 1}"
            raise spec_error(
                f"{where}.kept[{i}]", f"must start with {first} (CLS is never removed, nor any prefix token)"
            )
        if any(b <= a for a, b in itertools.pairwise(positions)):
            raise spec_error(f"{where}.kept[{i}]", "positions must be strictly increasing")
        if positions[-1] >= num_tokens:
            raise spec_error(f"{where}.kept[{i}]", f"position {positions[-1]} is outside 0..{num_tokens - 1}")
        if len(positions) < prefix + 1:
            raise spec_error(f"{where}.kept[{i}]", "keeps no patch token")
        kept.append(tuple(positions))
    return AmgSpec(mode=mode, num_tokens=num_tokens, kept=tuple(kept))


def _check(opts: dict[str, Any], layout: BackboneLayout, rate: float, existing: AmgSpec | None) -> None:
    if opts["mode"] is None:
        opts["mode"] = existing.mode if isinstance(existing, AmgSpec) else "kv"
    if opts["mode"] not in DEFAULT_DEPTH_DISCOUNT:
        raise CompressionError(f"amg mode must be 'kv' or 'skip'; got {opts['mode']!r}")
    if isinstance(existing, AmgSpec) and existing.mode != opts["mode"]:
        raise CompressionError(
            f"the model's AMG masks use mode '{existing.mode}'; a further round cannot switch to '{opts['mode']}'"
        )
    if opts["selection"] not in ("taylor", "random"):
        raise CompressionError(f"amg selection must be 'taylor' or 'random'; got {opts['selection']!r}")
    if opts["depth_discount"] is None:
        opts["depth_discount"] = DEFAULT_DEPTH_DISCOUNT[opts["mode"]]
    check_number(opts["depth_discount"], "depth_discount", 0.0, 1.0)
    if isinstance(opts["min_keep"], bool) or not isinstance(opts["min_keep"], int) or opts["min_keep"] < 1:
        raise CompressionError(
            f"min_keep must be an int >= 1 (CLS alone keeps no patch); got {opts['min_keep']!r}"
        )


def _alive(spec: AmgSpec | None, depth: int, num_tokens: int) -> Tensor:
    """(L, N) bool: which positions each block currently keeps."""
    alive = torch.ones(depth, num_tokens, dtype=torch.bool)
    if spec is not None:
        for i, kept in enumerate(spec.kept):
            if kept is not None:
                alive[i] = False
                alive[i, list(kept)] = True
    return alive


def _plan(
    layout: BackboneLayout, rate: float, opts: dict[str, Any], existing: AmgSpec | None, scores: Scores | None
) -> Plan:
    depth, n_tok = layout.depth, layout.num_tokens
    alive = _alive(existing, depth, n_tok)
    if scores is not None:
        raw, scored = scores.raw.clone(), list(scores.scored)
    else:
        raw = torch.where(alive, 0.0, float("nan")).double()
        raw[:, : layout.num_prefix_tokens] = float("nan")
        scored = [True] * depth
    raw[torch.tensor([not s for s in scored])] = float("nan")
    scored_rank = torch.cumsum(torch.tensor(scored, dtype=torch.long), 0) - 1
    discount = 1.0 - opts["depth_discount"] * scored_rank.double()
    values = normalise_scores(raw, discount)
    n_scored = sum(scored)
    n_remove = math.floor(layout.num_patches * n_scored * rate)
    if opts["selection"] == "taylor":
        remove = select_lowest(values, n_remove, opts["min_keep"])
    else:
        gen = torch.Generator().manual_seed(int(opts["seed"]))
        if scores is not None:
            per_block_counts = select_lowest(values, n_remove, opts["min_keep"]).sum(dim=1)
        else:
            per_block_counts = torch.zeros(depth, dtype=torch.long)
            per_block_counts[torch.tensor(scored)] = uniform_counts(n_remove, n_scored)
        remove = select_random(values, per_block_counts, gen, opts["min_keep"])
    alive &= ~remove
    kept = [None if bool(row.all()) else torch.nonzero(row).flatten().tolist() for row in alive]
    spec = {"method": "amg", "mode": opts["mode"], "num_tokens": n_tok, "kept": kept}
    details = {
        "mode": opts["mode"],
        "selection": opts["selection"],
        "depth_discount": opts["depth_discount"],
        "removed_pairs": n_remove,
        "scored_blocks": [i for i, s in enumerate(scored) if s],
        "kept_tokens": [int(row.sum()) for row in alive],
        "calibration": dict(scores.seen) if scores is not None else {},
        "scores": json_scores(values) if scores is not None else None,
    }
    return with_prefix(spec, layout.num_prefix_tokens), details, {}


def _reducers(spec: AmgSpec, layout: BackboneLayout, weights: Mapping[int, Tensor]) -> list[nn.Module | None]:
    if spec.mode == "kv":
        return [KeyValueReducer(k) if k is not None else None for k in spec.kept]
    return [SkipReducer(k, spec.num_tokens) if k is not None else None for k in spec.kept]


METHOD = TokenMethod(
    name="amg",
    aliases=("token-amg",),
    options={"mode": None, "depth_discount": None, "selection": "taylor", "seed": 0, "min_keep": 1},
    spec_keys=frozenset({"mode", "kept"}),
    parse=_parse_amg,
    check=_check,
    plan=_plan,
    reducers=_reducers,
    scores=lambda opts: "required" if opts["selection"] == "taylor" else "optional",
    key_positions=lambda existing, depth: list(existing.kept) if existing is not None else [None] * depth,
    repeatable=True,
)
