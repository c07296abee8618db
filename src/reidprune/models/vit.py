"""A pruning-aware Vision Transformer backbone with timm parameter names.

What differs from timm's VisionTransformer, and why:
- every block has its own number of heads (head pruning removes heads block by block), while the
  head dimension and the softmax scale stay as trained;
- the block body exists once (`Block.run`); a token reducer (`Block.reducer`, a `TokenHooks`)
  acts through hooks around it: which tokens the block runs on, which give keys / values, an
  attention bias, a reduction between attention and MLP, and a write-back after the block;
- LayerScale (`ls1` / `ls2`), qk-norm (`attn.q_norm` / `attn.k_norm`) and any number of prefix
  tokens (class, DeiT's distillation token, registers; `num_prefix_tokens`) as in timm;
- the patch embedding may overlap (TransReID stride 12 / 11), and an optional camera
  side-information embedding (TransReID SIE) is added to every token;
- attention can be probed (`Attention.probe`) to collect attention maps and their gradients for
  calibration, otherwise it runs as fused scaled-dot-product attention;
- the image feature is the CLS token (`global_pool="token"`; with a DeiT distillation token the mean
  of the CLS and distillation tokens, as timm's distilled DeiT in eval) or, as in MAE fine-tunes and
  timm's `global_pool="avg"`, the mean of the patch positions followed by `fc_norm`. The mean runs over
  the grid restored by `restore_grid`, so every original patch position counts once whatever the
  token reducers did (a merged position with its merged token, a dropped one with its features
  when it was dropped): with identity blocks every reducer gives the dense model's feature.

Parameter names match timm (`patch_embed.proj`, `cls_token`, `dist_token`, `reg_token`,
`pos_embed`, `blocks.{i}.attn.qkv`, `blocks.{i}.attn.q_norm`, `blocks.{i}.ls1.gamma`,
`blocks.{i}.mlp.fc1`, `norm`, `fc_norm`, `head`), so timm, DeiT and MAE state dicts load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class TokenState:
    """Bookkeeping that travels with the token sequence through the blocks.

    Positions are ORIGINAL positions: 0..num_prefix_tokens-1 are the prefix tokens (class,
    distillation, registers, in that order), then the P patches in raster order. Invariants every
    reducer keeps:
    - the prefix tokens are never dropped or merged, and they lead the sequence in their original
      order: current tokens 0..num_prefix_tokens-1 are always the prefix tokens;
    - a field is None until a reducer first changes what it describes, so a dense model carries an
      empty state and `restore_grid` returns its tokens unchanged.

    source: (B, N_cur) long, the original position of each current token; None while the sequence
      is still the original one (reducers that only permute the sequence set it).
    size: (B, N_cur, 1) float, how many original tokens each current token stands for (merging
      reducers use it for proportional attention); None while every token stands for one.
    slot: (B, num_prefix_tokens + P) long, for each original position the index of the current
      token that carries it (merged positions share a token), or -1 once the token was dropped from
      the sequence; None while the sequence is still the original one. Set by dropping / merging
      reducers; when set it wins over `source`.
    grid: (B, num_prefix_tokens + P, D), the last features of every original position, kept up to
      date for dropped positions (rows of positions still carried are stale); None when nothing
      was dropped.
    """

    source: Tensor | None = None
    size: Tensor | None = None
    slot: Tensor | None = None
    grid: Tensor | None = None


class TokenHooks(nn.Module):
    """A token reducer: hooks around the one block body (`Block.run`), each a no-op by default.

    The block computes, with z the sequence it runs on:
        z = before_attention(x)                  # the tokens the block processes (queries too)
        h = norm1(z); kv = keys_values(h)        # the normed tokens that give keys / values
        a = attn(h, kv, bias=attention_bias(z))  # q from h, k / v from kv (None = h)
        z = z + drop_path(ls1(a))
        z = after_attention(z, q, k)             # drop / merge between attention and MLP
        y = z + drop_path(ls2(mlp(norm2(z))))
        out = after_block(x, z0, y)              # z0: before_attention's output; write back
    Every hook takes the block first (for its attention scale, heads, ...) and the TokenState last;
    the ones that change the sequence return the new state with it. Calling the reducer as
    `reducer(block, x, state)` runs the block with its hooks, which is what `Block.forward` does.
    """

    def before_attention(self, block: Block, x: Tensor, state: TokenState) -> Tensor:
        return x

    def keys_values(self, block: Block, h: Tensor, state: TokenState) -> Tensor | None:
        return None

    def attention_bias(self, block: Block, x: Tensor, state: TokenState) -> Tensor | None:
        return None

    def after_attention(
        self, block: Block, x: Tensor, q: Tensor, k: Tensor, state: TokenState
    ) -> tuple[Tensor, TokenState]:
        return x, state

    def after_block(
        self, block: Block, x: Tensor, z: Tensor, y: Tensor, state: TokenState
    ) -> tuple[Tensor, TokenState]:
        return y, state

    def forward(self, block: Block, x: Tensor, state: TokenState) -> tuple[Tensor, TokenState]:
        return block.run(x, state, self)


_NO_HOOKS = TokenHooks()  # the dense block: every hook a no-op


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016); identity in eval mode."""

    def __init__(self, prob: float = 0.0) -> None:
        super().__init__()
        self.prob = prob

    def forward(self, x: Tensor) -> Tensor:
        if self.prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (CaiT / DeiT-III), timm's `ls1.gamma` / `ls2.gamma`."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, N, D) with a possibly overlapping stride (TransReID)."""

    def __init__(
        self, img_size: Sequence[int], patch_size: int, stride: int, in_chans: int, dim: int
    ) -> None:
        super().__init__()
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.patch_size = patch_size
        self.stride = stride
        self.grid_size = (
            (self.img_size[0] - patch_size) // stride + 1,
            (self.img_size[1] - patch_size) // stride + 1,
        )
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        if (
            not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
            and tuple(x.shape[-2:]) != self.img_size
        ):
            raise ValueError(
                f"input size {tuple(x.shape[-2:])} does not match the model's img_size {self.img_size}; "
                "build the model for this size (position embeddings are resized when weights load)"
            )
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with `num_heads` heads of `head_dim` each.

    qkv: Linear(dim -> 3 * num_heads * head_dim), rows ordered (q|k|v, head, channel) as in timm.
    q_norm / k_norm: LayerNorm over head_dim applied to q and k (timm's qk_norm), else Identity.
    proj: Linear(num_heads * head_dim -> dim).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        qkv_bias: bool,
        scale: float,
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"an attention layer needs at least one head, got num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = scale
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.q_norm: nn.Module = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(inner, dim)
        # Calibration hook: receives the (B, H, N_q, N_k) attention probabilities and returns the
        # tensor used downstream (so that gradients with respect to it can be taken).
        self.probe: Callable[[Tensor], Tensor] | None = None

    def split_qkv(self, h: Tensor, h_kv: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Normed tokens -> q (B, H, N, d) and k, v (B, H, N_kv, d), q / k normed when qk_norm.

        h: (B, N, D) the query tokens; h_kv: (B, N_kv, D) the tokens that give keys and values
        (None: h itself, one fused projection). With h_kv only its rows are projected to k / v.
        """
        b, n, _ = h.shape
        if h_kv is None:
            qkv = self.qkv(h).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            inner = self.num_heads * self.head_dim
            weight, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(h, weight[:inner], bias[:inner] if bias is not None else None)
            kv = F.linear(h_kv, weight[inner:], bias[inner:] if bias is not None else None)
            q = q.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
            kv = kv.reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            k, v = kv[0], kv[1]
        return self.q_norm(q), self.k_norm(k), v

    def attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
        """Attention of q (B, H, Nq, d) over k, v (B, H, Nk, d) -> (B, Nq, H * d) before proj.

        bias: optional additive logit bias broadcastable to (B, H, Nq, Nk) (e.g. log token sizes).
        """
        if self.probe is not None:
            logits = (q * self.scale) @ k.transpose(-2, -1)
            if bias is not None:
                logits = logits + bias
            out = self.probe(logits.softmax(dim=-1)) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        b, _, nq, _ = out.shape
        return out.transpose(1, 2).reshape(b, nq, self.num_heads * self.head_dim)

    def forward(self, h: Tensor, h_kv: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        """(B, N, D) normed tokens -> (B, N, D); keys / values from h_kv when given."""
        q, k, v = self.split_qkv(h, h_kv)
        return self.proj(self.attend(q, k, v, bias))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (timm names: norm1, attn, ls1, norm2, mlp, ls2).

    `reducer`, when set, is a token reducer: a `TokenHooks` whose hooks `run` calls around the one
    block body (any module called as reducer(block, x, state) -> (x, state) also works).
    init_values: LayerScale init (None or 0 = no LayerScale, as timm, ls1 / ls2 are Identity); qk_norm: LayerNorm
    on q and k per head.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        mlp_hidden: int,
        qkv_bias: bool,
        scale: float,
        norm_eps: float,
        drop_path: float,
        init_values: float | None = None,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, head_dim, qkv_bias, scale, qk_norm=qk_norm, norm_eps=norm_eps)
        self.ls1: nn.Module = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden)
        self.ls2: nn.Module = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path = DropPath(drop_path)
        self.reducer: nn.Module | None = None

    def run(self, x: Tensor, state: TokenState, hooks: TokenHooks | None = None) -> tuple[Tensor, TokenState]:
        """The block body, with a reducer's hooks (see `TokenHooks`) or none (the dense block)."""
        hooks = hooks if hooks is not None else _NO_HOOKS
        z0 = hooks.before_attention(self, x, state)
        h = self.norm1(z0)
        q, k, v = self.attn.split_qkv(h, hooks.keys_values(self, h, state))
        a = self.attn.proj(self.attn.attend(q, k, v, hooks.attention_bias(self, z0, state)))
        z = z0 + self.drop_path(self.ls1(a))
        z, state = hooks.after_attention(self, z, q, k, state)
        y = z + self.drop_path(self.ls2(self.mlp(self.norm2(z))))
        return hooks.after_block(self, x, z0, y, state)

    def forward_dense(self, x: Tensor) -> Tensor:
        """The block without its reducer: (B, N, D) -> (B, N, D)."""
        return self.run(x, TokenState())[0]

    def forward(self, x: Tensor, state: TokenState | None = None) -> tuple[Tensor, TokenState]:
        state = state if state is not None else TokenState()
        if self.reducer is not None:
            return self.reducer(self, x, state)
        return self.run(x, state)


class VisionTransformer(nn.Module):
    """ViT backbone (+ optional linear head) with per-block heads and token reducers.

    forward_tokens: (B, 3, H, W) -> (B, N_out, D) tokens after the final norm, plus the TokenState.
    pool: those tokens -> (B, D) image feature (CLS, or mean of the patch positions + fc_norm).
    forward: classification logits (B, num_classes), or the pooled feature (B, D) when num_classes=0.
    global_pool: "token" | "avg". fc_norm: LayerNorm after pooling instead of the final norm on
      the tokens (None: with "avg", as timm).
    Prefix tokens (timm's names): class_token (`cls_token`), dist_token (DeiT's distillation token
      `dist_token`), reg_tokens registers (`reg_token`, (1, R, D)); the sequence is [class, dist,
      registers, patches] and `num_prefix_tokens` counts the first three. no_embed_class: the
      position embedding covers the patches only and prefix tokens are added after it (DeiT-III,
      timm's no_embed_class); otherwise it covers the prefix tokens too.
    init_values: LayerScale init of every block (None = none); qk_norm: LayerNorm on q and k.
    """

    def __init__(
        self,
        img_size: Sequence[int] = (224, 224),
        patch_size: int = 16,
        stride: int | None = None,
        in_chans: int = 3,
        embed_dim: int = 768,
        num_heads: Sequence[int] = (12,) * 12,
        head_dim: int = 64,
        mlp_hidden: Sequence[int] | None = None,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        norm_eps: float = 1e-6,
        drop_path: float = 0.0,
        num_cameras: int = 0,
        sie_coef: float = 3.0,
        num_classes: int = 0,
        global_pool: str = "token",
        fc_norm: bool | None = None,
        class_token: bool = True,
        dist_token: bool = False,
        reg_tokens: int = 0,
        no_embed_class: bool = False,
        init_values: float | None = None,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs the class token (class_token=True)")
        if reg_tokens < 0:
            raise ValueError(f"reg_tokens must be >= 0, got {reg_tokens}")
        if dist_token and (not class_token or global_pool != "token"):
            raise ValueError(
                "a distillation token is read next to the class token: needs global_pool='token'"
            )
        fc_norm = global_pool == "avg" if fc_norm is None else fc_norm
        if dist_token and fc_norm:
            raise ValueError("timm's distilled DeiT has no fc_norm: dist_token needs fc_norm=False")
        self.global_pool = global_pool
        depth = len(num_heads)
        mlp_hidden = list(mlp_hidden) if mlp_hidden is not None else [4 * embed_dim] * depth
        if len(mlp_hidden) != depth:
            raise ValueError(f"mlp_hidden has {len(mlp_hidden)} entries for {depth} blocks")
        self.embed_dim = embed_dim
        self.num_prefix_tokens = int(class_token) + int(dist_token) + reg_tokens
        self.no_embed_class = no_embed_class
        self.sie_coef = sie_coef
        self.patch_embed = PatchEmbed(img_size, patch_size, stride or patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if dist_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        embed_len = self.patch_embed.num_patches + (0 if no_embed_class else self.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, embed_dim))
        # TransReID side information: one learnable embedding per camera, added to every token
        self.sie_embed = nn.Parameter(torch.zeros(num_cameras, 1, embed_dim)) if num_cameras > 0 else None
        scale = qk_scale if qk_scale is not None else head_dim**-0.5
        rates = torch.linspace(0, drop_path, depth, device="cpu").tolist()  # cpu: builds on meta too
        self.blocks = nn.ModuleList(
            Block(embed_dim, h, head_dim, m, qkv_bias, scale, norm_eps, r, init_values, qk_norm)
            for h, m, r in zip(num_heads, mlp_hidden, rates, strict=True)
        )
        self.norm = nn.Identity() if fc_norm else nn.LayerNorm(embed_dim, eps=norm_eps)
        self.fc_norm = nn.LayerNorm(embed_dim, eps=norm_eps) if fc_norm else nn.Identity()
        self.head: nn.Module = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for token in (self.cls_token, self.reg_token):
            if token is not None:
                nn.init.normal_(token, std=1e-6)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)
        if self.sie_embed is not None:
            nn.init.trunc_normal_(self.sie_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.patch_embed.grid_size

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.patch_embed.num_patches

    def embed(self, x: Tensor, camids: Tensor | None = None) -> Tensor:
        """(B, 3, H, W) -> (B, num_prefix_tokens + P, D): prefix tokens, patches, position and camera
        embeddings."""
        x = self.patch_embed(x)
        prefix = [
            token.expand(x.shape[0], -1, -1)
            for token in (self.cls_token, self.dist_token, self.reg_token)
            if token is not None
        ]
        if self.no_embed_class:
            x = torch.cat([*prefix, x + self.pos_embed], dim=1)
        else:
            x = torch.cat([*prefix, x], dim=1) + self.pos_embed
        if self.sie_embed is not None:
            if camids is None:
                raise ValueError("this model has a camera side-information embedding; pass camids")
            x = x + self.sie_coef * self.sie_embed[camids]
        return x

    def run_blocks(
        self, x: Tensor, blocks: Sequence[nn.Module] | None = None, state: TokenState | None = None
    ) -> tuple[Tensor, TokenState]:
        state = state if state is not None else TokenState()
        for block in self.blocks if blocks is None else blocks:
            x, state = block(x, state)
        return x, state

    def forward_tokens(self, x: Tensor, camids: Tensor | None = None) -> tuple[Tensor, TokenState]:
        x, state = self.run_blocks(self.embed(x, camids))
        if state.grid is not None:  # dropped tokens' features must match the normed sequence
            state.grid = self.norm(state.grid)
        return self.norm(x), state

    def restore_grid(self, x: Tensor, state: TokenState) -> Tensor:
        """Put tokens back in original order: (B, N_cur, D) -> (B, num_prefix_tokens + P, D).

        Reducers that drop or merge tokens extend this through the state they leave behind; a
        sequence that was only permuted is scattered back by source index. With `state.slot`
        (dropping / merging reducers) every position takes the features of the token that carries
        it, and a dropped position its last features from `state.grid`.
        """
        if state.slot is not None:
            index = state.slot.clamp(min=0).unsqueeze(-1).expand(-1, -1, x.shape[-1])
            out = x.gather(1, index)
            if state.grid is not None:
                out = torch.where((state.slot >= 0).unsqueeze(-1), out, state.grid)
            return out
        if state.source is None:
            return x
        if x.shape[1] != self.num_tokens:
            raise ValueError(
                f"cannot restore the token grid: {x.shape[1]} tokens for {self.num_tokens} positions; "
                "this reducer does not keep every token"
            )
        index = state.source.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        return torch.empty_like(x).scatter_(1, index, x)

    def pool(self, tokens: Tensor, state: TokenState) -> Tensor:
        """forward_tokens' output (B, N_cur, D) -> (B, D): the CLS token, or the mean of the P restored
        patch positions (see the module doc), then fc_norm."""
        if self.global_pool == "avg":
            return self.fc_norm(self.restore_grid(tokens, state)[:, self.num_prefix_tokens :].mean(dim=1))
        if self.dist_token is not None:  # timm's distilled DeiT: the mean of both tokens' features
            return (tokens[:, 0] + tokens[:, 1]) / 2
        return self.fc_norm(tokens[:, 0])

    def forward(self, x: Tensor, camids: Tensor | None = None) -> Tensor:
        tokens, state = self.forward_tokens(x, camids)
        return self.head(self.pool(tokens, state))


def resample_pos_embed(
    pos_embed: Tensor,
    new_grid: Sequence[int],
    old_grid: Sequence[int] | None = None,
    num_prefix: int = 1,
    mode: str = "bilinear",
) -> Tensor:
    """Resize a (1, num_prefix + h*w, D) position embedding to a new (h', w') grid.

    old_grid defaults to the square grid implied by the token count. Prefix tokens are kept.
    """
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    if old_grid is None:
        side = math.isqrt(grid.shape[1])
        if side * side != grid.shape[1]:
            raise ValueError(
                f"position embedding with {grid.shape[1]} patch tokens is not square; give old_grid"
            )
        old_grid = (side, side)
    old_h, old_w = int(old_grid[0]), int(old_grid[1])
    if old_h * old_w != grid.shape[1]:
        raise ValueError(f"old_grid {tuple(old_grid)} does not hold {grid.shape[1]} patch tokens")
    if (old_h, old_w) == tuple(new_grid):
        return pos_embed
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_h, old_w, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=tuple(int(s) for s in new_grid), mode=mode, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)
