"""AMG token pruning: static, input-independent kept-token sets per block (amg.md §2).

Selection: gradient-weighted attention scores (`scores.py`), L2-normalised per block, times a
depth discount (1 - c*l), then the n globally lowest (block, patch) pairs are removed. Kept sets
are stored as ORIGINAL positions, so a second round scores only the still-kept keys, maps them
back and removes more, and any cascade (tokens after heads, heads after tokens) composes.

Application, one reducer per reduced block:
- `KeyValueReducer` ("kv", the paper / LA semantics): every token stays a query and goes through
  the MLP; keys and values are projected ONLY for the kept tokens (gathered before projecting).
- `SkipReducer` ("skip", the TransReID-code semantics): only the kept tokens go through the block
  (as queries and keys, and the MLP); the others pass unchanged. The kept tokens are gathered
  and written back in place, so the sequence stays in raster order at every block boundary:
  nothing to un-permute at the end, and no per-forward argsort.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from reidprune.errors import CompressionError
from reidprune.models.vit import Block, TokenHooks, TokenState


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
