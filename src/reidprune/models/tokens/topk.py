"""EViT-style dynamic token dropping: keep the patch tokens the CLS token attends to most.

In a reduction block, after the attention residual and before the MLP, each image keeps its top-k
non-prefix tokens (every prefix token -- class, distillation, registers -- is always kept) by
head-averaged CLS attention (its own set: dynamic, per image; the count k is fixed, so shapes are
static). Optionally the dropped tokens are fused into one extra token, a sum of their features
weighted by their CLS attention (EViT's "inattentive token fusion", not renormalised). The block
itself runs fused scaled-dot-product attention; the CLS attention row is computed separately,
(B, H, 1, N), never the full N x N map.

A backbone without a class token (pooled patches, e.g. timm's `*_reg4_gap_*`) has no CLS row to
rank by: there the score of a token is the attention it receives, averaged over every query and
head (the full (B, H, N, N) map, formed in the reduction blocks only).

Options (prune_tokens): locations (0-based blocks; default EViT's 4/7/10 of 12 scaled to depth);
fuse. rate: the fraction of the tokens reaching a reduction block that it drops (keep rate 1 - rate).

Kept tokens stay in raster order. `TokenState.slot` tracks which current token carries each
original position and `TokenState.grid` the last features of dropped ones, so that
`VisionTransformer.restore_grid` gives heads that need the spatial grid (LA stripes, JPM) every
position back: dropped tokens with the features they had when they were dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from reidprune.errors import CompressionError
from reidprune.models.tokens.indexing import take_rows
from reidprune.models.tokens.layout import BackboneLayout
from reidprune.models.tokens.method import Plan, Scores, TokenMethod
from reidprune.models.tokens.spec import per_block, spec_error, with_prefix
from reidprune.models.vit import Block, TokenHooks, TokenState


def default_locations(depth: int) -> list[int]:
    """EViT's blocks 4, 7, 10 of 12 (0-based 3, 6, 9), scaled to `depth`."""
    return sorted({min(depth - 1, max(0, round(depth * f / 12))) for f in (3, 6, 9)})


def keep_count(tokens: int, keep_rate: float) -> int:
    """Non-prefix tokens kept out of `tokens`: ceil(keep_rate * tokens) (EViT), at least 1."""
    # the small tolerance keeps float noise (0.5 * 10 = 5.000000001) from rounding up
    return max(1, min(tokens, math.ceil(keep_rate * tokens - 1e-9)))


def cls_attention(
    block: Block, q: Tensor, k: Tensor, num_prefix_tokens: int = 1, class_token: bool = True
) -> Tensor:
    """Head-averaged attention of the class-token query over the non-prefix keys.

    q, k: (B, H, N, d) with the class token first -> (B, N - num_prefix_tokens). Only the class
    token's row (B, H, 1, N) is ever formed. class_token=False: the attention each key receives,
    averaged over all N queries and the heads (no class token to read).
    """
    queries = q[:, :, :1] if class_token else q
    logits = (queries * block.attn.scale) @ k.transpose(-2, -1)
    return logits.softmax(dim=-1).mean(dim=(1, 2))[:, num_prefix_tokens:]


def carried_positions(state: TokenState, batch: int, tokens: int, device: torch.device) -> Tensor:
    """state.slot, or the identity map (B, N) while the sequence is still the original one."""
    if state.slot is not None:
        return state.slot
    return torch.arange(tokens, device=device).unsqueeze(0).expand(batch, -1)


class TopKReducer(TokenHooks):
    """Keep `keep` non-prefix tokens (+ an optional fused token) after this block's attention.

    num_prefix_tokens: the leading tokens (class first, then distillation / registers) that are
    always kept; the class token's attention ranks the others (class_token=False: the attention
    they receive from every query, see the module doc).
    """

    def __init__(
        self, keep: int, fuse: bool = False, num_prefix_tokens: int = 1, class_token: bool = True
    ) -> None:
        super().__init__()
        self.keep = int(keep)
        self.fuse = bool(fuse)
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.class_token = bool(class_token)

    def extra_repr(self) -> str:
        return f"keep={self.keep}, fuse={self.fuse}, class_token={self.class_token}"

    def after_attention(
        self, block: Block, x: Tensor, q: Tensor, k: Tensor, state: TokenState
    ) -> tuple[Tensor, TokenState]:
        b, n, _ = x.shape
        p = self.num_prefix_tokens
        score = cls_attention(block, q, k, p, self.class_token)  # (B, N - p)
        top = score.topk(self.keep, dim=1, sorted=False).indices.sort(dim=1).values  # raster order
        kept = take_rows(x, top + p)
        parts = [x[:, :p], kept]
        if self.fuse:
            weight = score.scatter(1, top, 0.0)  # class attention of the dropped tokens only
            parts.append(weight.unsqueeze(1) @ x[:, p:])
        return torch.cat(parts, dim=1), self._track(state, x, top, b, n)

    def _track(self, state: TokenState, x: Tensor, top: Tensor, b: int, n: int) -> TokenState:
        """New slot map (dropped -> -1) and grid (features of every position as of now)."""
        p = self.num_prefix_tokens
        slot = carried_positions(state, b, n, x.device)
        grid = take_rows(x, slot.clamp(min=0))
        if state.grid is not None:
            grid = torch.where((slot >= 0).unsqueeze(-1), grid, state.grid)
        # new index of every current token: prefix -> 0..p-1, kept -> p.., dropped -> -1
        order = torch.arange(p, p + self.keep, device=x.device).unsqueeze(0).expand(b, -1)
        patches = torch.full((b, n - p), -1, dtype=torch.long, device=x.device).scatter(1, top, order)
        prefix = torch.arange(p, device=x.device).unsqueeze(0).expand(b, -1)
        new_index = torch.cat([prefix, patches], dim=1)
        new_slot = torch.where(slot >= 0, new_index.gather(1, slot.clamp(min=0)), slot)
        return TokenState(source=None, size=None, slot=new_slot, grid=grid)


@dataclass(frozen=True)
class TopkSpec:
    num_tokens: int
    keep: tuple[int | None, ...]
    fuse: bool
    num_prefix_tokens: int = 1

    method = "topk"

    def to_dict(self) -> dict[str, Any]:
        return with_prefix(
            {"method": "topk", "num_tokens": self.num_tokens, "fuse": self.fuse, "keep": list(self.keep)},
            self.num_prefix_tokens,
        )

    def token_counts(self) -> list[int]:
        """Tokens (prefix and fused included) entering each block."""
        counts, current = [], self.num_tokens
        for keep in self.keep:
            counts.append(current)
            if keep is not None:
                current = self.num_prefix_tokens + keep + int(self.fuse)
        return counts


def _parse_topk(values: Mapping[str, Any], depth: int, num_tokens: int, where: str, prefix: int) -> TopkSpec:
    fuse = values.get("fuse", False)
    if not isinstance(fuse, bool):
        raise spec_error(where, f"'fuse' must be true or false; got {fuse!r}")
    keep: list[int | None] = []
    current = num_tokens - prefix  # non-prefix tokens entering the block
    for i, entry in enumerate(per_block(values.get("keep"), depth, f"{where}.keep")):
        if entry is None:
            keep.append(None)
            continue
        if isinstance(entry, bool) or not isinstance(entry, int):
            raise spec_error(f"{where}.keep[{i}]", f"expected an int or null, got {entry!r}")
        if entry < 1:
            raise spec_error(f"{where}.keep[{i}]", f"keeps {entry} patch tokens; at least 1 is needed")
        if entry >= current:
            raise spec_error(
                f"{where}.keep[{i}]", f"keeps {entry} of the {current} tokens that reach block {i}"
            )
        keep.append(int(entry))
        current = entry + int(fuse)
    return TopkSpec(num_tokens=num_tokens, keep=tuple(keep), fuse=fuse)


def _check(opts: dict[str, Any], layout: BackboneLayout, rate: float, existing: Any) -> None:
    locations = opts["locations"]
    if locations is None:
        return
    if not isinstance(locations, list | tuple) or not locations:
        raise CompressionError(f"topk locations must be a non-empty list of block indices; got {locations!r}")
    for loc in locations:
        if isinstance(loc, bool) or not isinstance(loc, int) or not 0 <= loc < layout.depth:
            raise CompressionError(
                f"topk location {loc!r} is not a block index of this backbone (0..{layout.depth - 1})"
            )
    if len(set(locations)) != len(locations):
        raise CompressionError(f"topk locations repeat a block: {list(locations)}")


def _plan(
    layout: BackboneLayout, rate: float, opts: dict[str, Any], existing: Any, scores: Scores | None
) -> Plan:
    locations = (
        sorted(opts["locations"]) if opts["locations"] is not None else default_locations(layout.depth)
    )
    fuse = bool(opts["fuse"])
    keep: list[int | None] = [None] * layout.depth
    current = layout.num_patches
    for loc in locations:
        k = keep_count(current, 1.0 - rate)
        if k < current:
            keep[loc] = k
            current = k + int(fuse)
    spec = {"method": "topk", "num_tokens": layout.num_tokens, "fuse": fuse, "keep": keep}
    details = {"locations": locations, "keep_rate": 1.0 - rate, "fuse": fuse, "kept_tokens": keep}
    return with_prefix(spec, layout.num_prefix_tokens), details, {}


def _reducers(
    spec: TopkSpec, layout: BackboneLayout, weights: Mapping[int, Tensor]
) -> list[nn.Module | None]:
    p = layout.num_prefix_tokens
    cls = layout.has_class_token
    return [TopKReducer(k, spec.fuse, p, cls) if k is not None else None for k in spec.keep]


METHOD = TokenMethod(
    name="topk",
    aliases=("token-topk", "attn-topk"),
    options={"locations": None, "fuse": False},
    spec_keys=frozenset({"fuse", "keep"}),
    parse=_parse_topk,
    check=_check,
    plan=_plan,
    reducers=_reducers,
)
