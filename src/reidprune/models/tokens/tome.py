"""Token merging by bipartite soft matching (Bolya et al., "Token Merging: Your ViT but Faster",
ICLR 2023), written from the paper as a baseline.

In each block, between the attention and the MLP, r tokens are merged away:
1. the tokens are split alternately into sets A (even positions, CLS included) and B (odd);
2. each A token is linked to its most similar B token (cosine similarity of the attention keys,
   averaged over heads);
3. the r links with the highest similarity are kept (prefix tokens -- class, distillation,
   registers -- are never merged, nor merged into);
4. each linked A token is merged into its B token: a size-weighted average, computed as
   scatter-add sums divided by the summed sizes (exportable to ONNX, unlike a scatter "mean");
5. the sequence becomes [prefix tokens, unmerged A tokens in their order, B tokens].
Token sizes (how many patches a token stands for) are tracked across blocks; with proportional
attention log(size) is added to the attention logits of every key.
Options (prune_tokens): r (int, or one int per block; overrides rate); prop_attn (proportional
attention). rate: a constant r per block such that about this fraction of (block, patch) pairs
is saved.
`TokenState.slot` maps every original position to the token that now carries it, so
`restore_grid` "unmerges" for heads that need the spatial grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from reidprune.errors import CompressionError
from reidprune.models.tokens.indexing import exporting, take_rows
from reidprune.models.tokens.layout import BackboneLayout
from reidprune.models.tokens.method import Plan, Scores, TokenMethod
from reidprune.models.tokens.spec import int_list, per_block, spec_error, with_prefix
from reidprune.models.tokens.topk import carried_positions
from reidprune.models.vit import Block, TokenHooks, TokenState


def bipartite_matching(metric: Tensor, r: int, num_prefix_tokens: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """Which A tokens merge into which B tokens.

    metric: (B, N, d) token descriptors; A = even positions, B = odd. The first num_prefix_tokens
    positions (class, distillation, registers) never merge: a prefix A token is never a source
    and a prefix B token never a destination (ToMe's class / distillation token rule).
    Returns (unmerged, src, dst): unmerged (B, N_A - r) A indices in increasing order, src (B, r)
    the merged A indices, dst (B, r) the B index each src token merges into.
    """
    metric = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    a, b = metric[:, ::2], metric[:, 1::2]
    scores = a @ b.transpose(1, 2)
    prefix_a, prefix_b = (num_prefix_tokens + 1) // 2, num_prefix_tokens // 2
    if prefix_b:
        scores = torch.cat(
            [torch.full_like(scores[..., :prefix_b], float("-inf")), scores[..., prefix_b:]], -1
        )
    best, best_b = scores.max(dim=-1)  # best B match of every A token: (B, N_A)
    # (not `best + constant mask`: OpenVINO then ranked a dynamic-batch graph's tokens wrongly)
    best = torch.cat([torch.full_like(best[:, :prefix_a], float("-inf")), best[:, prefix_a:]], dim=1)
    order = best.argsort(dim=-1, descending=True)  # (a stable sort does not export to ONNX)
    src, rest = order.split([r, order.shape[1] - r], dim=-1)
    unmerged = rest.sort(dim=-1).values
    dst = best_b.gather(1, src)
    return unmerged, src, dst


def merge_tokens(
    x: Tensor, size: Tensor, unmerged: Tensor, src: Tensor, dst: Tensor, num_prefix_tokens: int = 1
) -> tuple[Tensor, Tensor, Tensor]:
    """Size-weighted merge of A[src] into B[dst].

    x: (B, N, D), size: (B, N, 1). Returns the merged x (B, N - r, D), its sizes (B, N - r, 1) and
    new_index (B, N): the new index of every input token (merged tokens -> their B token). The
    output is [prefix tokens in their order, unmerged A tokens, B tokens].
    """
    batch, n, d = x.shape
    n_a = (n + 1) // 2
    r = src.shape[1]
    if exporting():
        merged, new_size = _merge_exported(x, size, unmerged, src, dst)
    else:
        weighted = x * size
        sa, sb = size[:, ::2], size[:, 1::2]
        # A token a is sequence position 2a: rows are taken from the full (contiguous) sequence
        rows, sizes = take_rows(weighted, 2 * src), sa.gather(1, src.unsqueeze(-1))
        xb = weighted[:, 1::2].scatter_add(1, dst.unsqueeze(-1).expand(-1, -1, d), rows)
        sb = sb.scatter_add(1, dst.unsqueeze(-1), sizes)
        xa = take_rows(weighted, 2 * unmerged)
        sa = sa.gather(1, unmerged.unsqueeze(-1))
        new_size = torch.cat([sa, sb], dim=1)
        merged = torch.cat([xa, xb], dim=1) / new_size
    # new index of each input token: A tokens by (unmerged | src -> dst), B tokens after the A block
    kept_a = n_a - r
    ranks = torch.arange(kept_a, device=x.device).unsqueeze(0).expand(batch, -1)
    targets = torch.cat([unmerged, src], dim=1)  # every A index exactly once
    index_a = torch.empty_like(targets).scatter(1, targets, torch.cat([ranks, kept_a + dst], dim=1))
    n_b = n - n_a
    index_b = (kept_a + torch.arange(n_b, device=x.device)).unsqueeze(0).expand(batch, -1)
    # interleave back to the input order: even positions from A, odd from B
    new_index = torch.stack([index_a[:, :n_b], index_b], dim=2).reshape(batch, 2 * n_b)
    if n_a > n_b:
        new_index = torch.cat([new_index, index_a[:, n_b:]], dim=1)
    if num_prefix_tokens > 1:  # prefix B tokens sit after the A block: move them back to the front
        perm, inverse = _prefix_first(num_prefix_tokens, kept_a, n - r, x.device)
        merged, new_size = merged.index_select(1, perm), new_size.index_select(1, perm)
        new_index = inverse[new_index]
    return merged, new_size, new_index


def _merge_exported(
    x: Tensor, size: Tensor, unmerged: Tensor, src: Tensor, dst: Tensor
) -> tuple[Tensor, Tensor]:
    """`merge_tokens`' merged tokens and sizes, the same values with about half the ONNX nodes: the
    size rides along as an extra channel (one gather and one product serve both), the A rows are
    taken in one gather, and the merged rows are added to their B tokens by a (B, N_B, r) one-hot
    MatMul instead of scatter_add (ONNX Runtime and OpenVINO run ScatterElements with a reduction
    element by element; the product costs N_B x r x (D + 1) MACs, r is small)."""
    n, d = x.shape[1], x.shape[2]
    n_a, kept_a = (n + 1) // 2, unmerged.shape[1]
    carried = torch.cat([x * size, size], dim=-1)  # (B, N, D + 1)
    rows = take_rows(carried, 2 * torch.cat([unmerged, src], dim=1))  # A token a is position 2a
    into = (dst.unsqueeze(1) == torch.arange(n - n_a, device=x.device).view(1, -1, 1)).to(x.dtype)
    kept, moved = rows.split([kept_a, rows.shape[1] - kept_a], dim=1)
    out = torch.cat([kept, carried[:, 1::2] + into @ moved], dim=1)
    features, new_size = out.split([d, 1], dim=-1)
    return features / new_size, new_size


def _prefix_first(prefix: int, kept_a: int, total: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Static permutation of [unmerged A, B] putting the prefix tokens first, and its inverse.

    Prefix position i is A token i // 2 (even i, first among the unmerged: they never merge) or
    B token i // 2 (odd i).
    """
    prefix_a, prefix_b = (prefix + 1) // 2, prefix // 2
    head = [i // 2 if i % 2 == 0 else kept_a + i // 2 for i in range(prefix)]
    rest = list(range(prefix_a, kept_a)) + list(range(kept_a + prefix_b, total))
    perm = torch.tensor(head + rest, dtype=torch.long, device=device)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(total, device=device)
    return perm, inverse


class ToMeReducer(TokenHooks):
    """Merge `r` tokens after this block's attention (bipartite soft matching); the first
    `num_prefix_tokens` tokens are never merged."""

    def __init__(self, r: int, prop_attn: bool = True, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        self.r = int(r)
        self.prop_attn = bool(prop_attn)
        self.num_prefix_tokens = int(num_prefix_tokens)

    def extra_repr(self) -> str:
        return f"r={self.r}, prop_attn={self.prop_attn}"

    def attention_bias(self, block: Block, x: Tensor, state: TokenState) -> Tensor | None:
        # proportional attention: log(size) added to every key's logit
        if self.prop_attn and state.size is not None:
            b, n, _ = state.size.shape
            return state.size.log().view(b, 1, 1, n)  # (B, 1, 1, N): one Reshape when exported
        return None

    def after_attention(
        self, block: Block, x: Tensor, q: Tensor, k: Tensor, state: TokenState
    ) -> tuple[Tensor, TokenState]:
        b, n, _ = x.shape
        size = state.size if state.size is not None else x.new_ones(b, n, 1)
        unmerged, src, dst = bipartite_matching(k.mean(dim=1), self.r, self.num_prefix_tokens)
        x, size, new_index = merge_tokens(x, size, unmerged, src, dst, self.num_prefix_tokens)
        slot = new_index.gather(1, carried_positions(state, b, n, x.device))
        return x, TokenState(source=None, size=size, slot=slot, grid=state.grid)


@dataclass(frozen=True)
class TomeSpec:
    num_tokens: int
    r: tuple[int, ...]
    prop_attn: bool
    num_prefix_tokens: int = 1

    method = "tome"

    def to_dict(self) -> dict[str, Any]:
        return with_prefix(
            {
                "method": "tome",
                "num_tokens": self.num_tokens,
                "prop_attn": self.prop_attn,
                "r": list(self.r),
            },
            self.num_prefix_tokens,
        )

    def token_counts(self) -> list[int]:
        """Tokens entering each block."""
        counts, current = [], self.num_tokens
        for r in self.r:
            counts.append(current)
            current -= r
        return counts


def tome_max_r(num_tokens: int, num_prefix_tokens: int = 1) -> int:
    """Most tokens one bipartite matching can merge away: every set-A (even position) token that
    is not a prefix token, as long as some set-B token is not a prefix token either."""
    if num_tokens // 2 <= num_prefix_tokens // 2:
        return 0
    return max(0, math.ceil(num_tokens / 2) - math.ceil(num_prefix_tokens / 2))


def _parse_tome(values: Mapping[str, Any], depth: int, num_tokens: int, where: str, prefix: int) -> TomeSpec:
    prop_attn = values.get("prop_attn", True)
    if not isinstance(prop_attn, bool):
        raise spec_error(where, f"'prop_attn' must be true or false; got {prop_attn!r}")
    r = int_list(per_block(values.get("r"), depth, f"{where}.r"), f"{where}.r")
    current = num_tokens
    for i, ri in enumerate(r):
        most = tome_max_r(current, prefix)
        if ri < 0 or ri > most:
            raise spec_error(
                f"{where}.r[{i}]",
                f"r={ri} but block {i} sees {current} tokens; one matching merges 0..{most}",
            )
        current -= ri
    return TomeSpec(num_tokens=num_tokens, r=tuple(r), prop_attn=prop_attn)


def _check(opts: dict[str, Any], layout: BackboneLayout, rate: float, existing: Any) -> None:
    r = opts["r"]
    if r is None:
        return
    values = r if isinstance(r, list | tuple) else [r]
    if isinstance(r, list | tuple) and len(r) != layout.depth:
        raise CompressionError(f"tome r has {len(r)} entries for {layout.depth} blocks")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CompressionError(f"tome r must be ints >= 0; got {value!r}")


def _plan(
    layout: BackboneLayout, rate: float, opts: dict[str, Any], existing: Any, scores: Scores | None
) -> Plan:
    r = opts["r"]
    if r is None:
        # constant r removing about `rate` of the (block, patch) pairs: P L - r L^2 / 2 = (1 - rate) P L
        r = round(2.0 * rate * layout.num_patches / layout.depth)
    schedule, current = [], layout.num_tokens
    for i in range(layout.depth):
        ri = r[i] if isinstance(r, list | tuple) else min(r, tome_max_r(current, layout.num_prefix_tokens))
        schedule.append(int(ri))
        current -= int(ri)
    spec = {
        "method": "tome",
        "num_tokens": layout.num_tokens,
        "prop_attn": bool(opts["prop_attn"]),
        "r": schedule,
    }
    details = {"r": schedule, "prop_attn": bool(opts["prop_attn"]), "final_tokens": current}
    return with_prefix(spec, layout.num_prefix_tokens), details, {}


def _reducers(
    spec: TomeSpec, layout: BackboneLayout, weights: Mapping[int, Tensor]
) -> list[nn.Module | None]:
    p = layout.num_prefix_tokens
    return [ToMeReducer(r, spec.prop_attn, p) if r > 0 else None for r in spec.r]


METHOD = TokenMethod(
    name="tome",
    aliases=("token-tome",),
    options={"r": None, "prop_attn": True},
    spec_keys=frozenset({"prop_attn", "r"}),
    parse=_parse_tome,
    check=_check,
    plan=_plan,
    reducers=_reducers,
)
