"""From per-head scores to a global decision: which heads go, how many, and in which rounds.

Pure functions on plain lists and tensors. A *priority* is "remove me first": the n heads with
the highest priority over the whole network are removed, except that every layer keeps its
lowest-priority head (a block never loses its last head).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from reidprune.errors import CompressionError


def amg_depth_weights(depths: list[int], head_counts: list[int], delta: float) -> list[float]:
    """AMG depth weight alpha_k = 1 + delta * k for each layer (amg.md §3.3).

    k counts the *participating* depths before this one, walking from the input: only layers with
    more than one head participate (a single head can never be removed); layers at the same depth
    (TransReID's JPM copies of the last block) share k. Non-participating layers get weight 1.
    With delta > 0 deeper heads score higher and are removed first.
    """
    participating = sorted({d for d, h in zip(depths, head_counts, strict=True) if h > 1})
    rank = {d: k for k, d in enumerate(participating)}
    return [1.0 + delta * rank[d] if d in rank else 1.0 for d in depths]


def select_removal(priorities: list[Tensor], num_remove: int) -> list[list[int]]:
    """Global top-n removal with every layer keeping at least one head.

    priorities: one (H_l,) tensor per layer; higher = removed earlier. Ties go to the earlier
      layer, then the earlier head (a stable order, so the result is reproducible).
    Returns the removed head indices per layer, ascending. Equivalent to walking the heads from
    the highest priority down and skipping a head when it is the last one left in its layer.
    """
    counts = [int(p.numel()) for p in priorities]
    removable = sum(counts) - len(counts)
    if not 0 <= num_remove <= removable:
        raise CompressionError(
            f"cannot remove {num_remove} heads: the {len(counts)} attention layers have {sum(counts)} "
            f"heads and each keeps at least one, so at most {removable} can go"
        )
    flat = torch.cat([p.detach().float().cpu().reshape(-1) for p in priorities])
    if not torch.isfinite(flat).all():
        raise CompressionError("head scores contain NaN or inf; the calibration pass produced bad maps")
    order = torch.sort(flat, descending=True, stable=True).indices
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel())
    protected = torch.zeros(flat.numel(), dtype=torch.bool)
    start = 0
    for count in counts:  # the head each layer would lose last is the one it keeps
        protected[start + int(position[start : start + count].argmax())] = True
        start += count
    chosen = order[~protected[order]][:num_remove]
    removed: list[list[int]] = [[] for _ in counts]
    offsets = torch.tensor([0, *counts]).cumsum(0)
    for flat_index in sorted(chosen.tolist()):
        layer = int(torch.searchsorted(offsets, flat_index, right=True)) - 1
        removed[layer].append(flat_index - int(offsets[layer]))
    return removed


def check_rate(rate: float) -> float:
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0.0 <= rate < 1.0:
        raise CompressionError(f"head pruning rate={rate!r}: expected a fraction in [0, 1)")
    return float(rate)


def heads_to_remove(total_heads: int, rate: float) -> int:
    """floor(rate * total_heads) as AMG counts it, robust to float fuzz (0.25 * 12 = 3, not 2)."""
    return math.floor(check_rate(rate) * total_heads + 1e-9)


def split_rounds(total_heads: int, rate: float, rounds: int) -> list[int]:
    """Heads to remove in each round of an iterative schedule, summing to floor(rate * total_heads).

    total_heads: the heads that take part before the first round. AMG removes
    floor(n_total / rounds) per round and never prunes the remainder; here the remainder is
    spread over the first rounds, so the requested rate is met (amg.md §3.3, §4). The released
    AMG recipes use one head per round (e.g. LA-Tiny 67 %: 24 rounds of 1 of 36 heads).
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise CompressionError(f"rounds={rounds!r}: expected an integer >= 1")
    base, extra = divmod(heads_to_remove(total_heads, rate), rounds)
    return [base + 1] * extra + [base] * (rounds - extra)
