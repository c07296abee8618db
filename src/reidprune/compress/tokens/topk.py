"""EViT-style dynamic token dropping: keep the patch tokens the CLS token attends to most.

In a reduction block, after the attention residual and before the MLP, each image keeps its top-k
non-prefix tokens (every prefix token -- class, distillation, registers -- is always kept) by head-averaged CLS attention (its own set: dynamic, per image; the count k is
fixed, so shapes are static). Optionally the dropped tokens are fused into one extra token, a
sum of their features weighted by their CLS attention (EViT's "inattentive token fusion", not
renormalised). The block itself runs fused scaled-dot-product attention; the CLS attention row
is computed separately, (B, H, 1, N), never the full N x N map.

Kept tokens stay in raster order. `TokenState.slot` tracks which current token carries each
original position and `TokenState.grid` the last features of dropped ones, so that
`VisionTransformer.restore_grid` gives heads that need the spatial grid (LA stripes, JPM) every
position back: dropped tokens with the features they had when they were dropped.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from reidprune.compress.tokens.indexing import take_rows
from reidprune.models.vit import Block, TokenHooks, TokenState


def default_locations(depth: int) -> list[int]:
    """EViT's blocks 4, 7, 10 of 12 (0-based 3, 6, 9), scaled to `depth`."""
    return sorted({min(depth - 1, max(0, round(depth * f / 12))) for f in (3, 6, 9)})


def keep_count(tokens: int, keep_rate: float) -> int:
    """Non-prefix tokens kept out of `tokens`: ceil(keep_rate * tokens) (EViT), at least 1."""
    # the small tolerance keeps float noise (0.5 * 10 = 5.000000001) from rounding up
    return max(1, min(tokens, math.ceil(keep_rate * tokens - 1e-9)))


def cls_attention(block: Block, q: Tensor, k: Tensor, num_prefix_tokens: int = 1) -> Tensor:
    """Head-averaged attention of the class-token query over the non-prefix keys.

    q, k: (B, H, N, d) with the class token first -> (B, N - num_prefix_tokens). Only the class
    token's row (B, H, 1, N) is ever formed.
    """
    logits = (q[:, :, :1] * block.attn.scale) @ k.transpose(-2, -1)
    return logits.softmax(dim=-1).mean(dim=1)[:, 0, num_prefix_tokens:]


def carried_positions(state: TokenState, batch: int, tokens: int, device: torch.device) -> Tensor:
    """state.slot, or the identity map (B, N) while the sequence is still the original one."""
    if state.slot is not None:
        return state.slot
    return torch.arange(tokens, device=device).unsqueeze(0).expand(batch, -1)


class TopKReducer(TokenHooks):
    """Keep `keep` non-prefix tokens (+ an optional fused token) after this block's attention.

    num_prefix_tokens: the leading tokens (class first, then distillation / registers) that are
    always kept; the class token's attention ranks the others.
    """

    def __init__(self, keep: int, fuse: bool = False, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        self.keep = int(keep)
        self.fuse = bool(fuse)
        self.num_prefix_tokens = int(num_prefix_tokens)

    def extra_repr(self) -> str:
        return f"keep={self.keep}, fuse={self.fuse}"

    def after_attention(
        self, block: Block, x: Tensor, q: Tensor, k: Tensor, state: TokenState
    ) -> tuple[Tensor, TokenState]:
        b, n, _ = x.shape
        p = self.num_prefix_tokens
        score = cls_attention(block, q, k, p)  # (B, N - p)
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
