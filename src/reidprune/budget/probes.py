"""The isolated pieces that the latency tables time, each a small module on a fixed input shape.

- `CallOverhead`: one Add; what any call of the runtime costs (a session run, a Python call),
  subtracted from every other probe so that parts add up to the whole model with one call.
- `AttentionProbe`: a ViT block's attention half (norm1, q / k / v projections, attention, proj,
  residual) with `queries` tokens, `keys` of them projected to keys and values (AMG kv gathers
  the kept ones first, as this probe does when keys < queries) and `heads` heads.
- `MlpProbe`: the MLP half (norm2, fc1, GELU, fc2, residual) on `tokens` tokens of width `hidden`.
- `BlockProbe`: a model's own block with its token reducer, fed a fresh `TokenState`.
- `EmbeddingProbe`: a whole model (or a copy with its blocks removed) returning the embedding.
- `LoadMeter`: a fixed workload timed next to every probe, so that the machine's load divides out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidprune.models.forward import embedding_of, forward_model
from reidprune.models.vit import Attention, Mlp, TokenState


class CallOverhead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias


class AttentionProbe(nn.Module):
    """(B, queries, dim) -> same; keys / values from the first `keys` tokens."""

    def __init__(self, dim: int, heads: int, head_dim: int, qkv_bias: bool, queries: int, keys: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, head_dim, qkv_bias, head_dim**-0.5)
        self.gather = keys < queries
        self.register_buffer("kept", torch.arange(keys), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        attn = self.attn
        h = self.norm(x)
        if not self.gather:
            return x + attn(h)
        b, n, _ = x.shape
        inner = attn.num_heads * attn.head_dim
        weight, bias = attn.qkv.weight, attn.qkv.bias
        q = F.linear(h, weight[:inner], bias[:inner] if bias is not None else None)
        kv = F.linear(
            h.index_select(1, self.kept), weight[inner:], bias[inner:] if bias is not None else None
        )
        q = q.reshape(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)
        kv = kv.reshape(b, -1, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        return x + attn.proj(attn.attend(q, kv[0], kv[1]))


class MlpProbe(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.norm(x))


class BlockProbe(nn.Module):
    """A ViT block with its reducer: (B, N, D) -> the block's output tokens."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x, TokenState())[0]


class EmbeddingProbe(nn.Module):
    """(images, camids) -> the model's embedding, as an exported graph computes it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.arch = getattr(model, "arch", None)

    def forward(self, images: Tensor, camids: Tensor) -> Tensor:
        return embedding_of(forward_model(self.model, images, camids))


class IdentityBlock(nn.Module):
    """Stands in for a ViT block when only the stem and the head are timed."""

    def forward(self, x: Tensor, state: TokenState | None = None) -> tuple[Tensor, TokenState]:
        return x, state if state is not None else TokenState()


class FeatureMapHead(nn.Module):
    """A ResNet's pooling and head on its last feature map: the model with `forward_features` skipped."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        model.forward_features = lambda x: x  # type: ignore[method-assign]  # a copy, never the user's model

    def forward(self, x: Tensor) -> Tensor:
        return embedding_of(self.model(x))


class LoadMeter(nn.Module):
    """A fixed workload (two MLP halves on TOKENS x DIM per image, fixed weights) that every probe is
    timed next to: how much slower it runs than its cached time is how busy the machine is now.

    It is timed in steady state like the probes (right after an untimed call of itself), and it is
    work of the probes' kind and size (about 1 ms per image on two cores): a 0.2 ms meter timed
    cold, after a cache flush, moved up to 1.6x between rounds on an idle machine while the probes
    next to it moved 3 %, and every normalised point moved with it."""

    TOKENS, DIM = 128, 192

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.layers = nn.Sequential(MlpProbe(self.DIM, 4 * self.DIM), MlpProbe(self.DIM, 4 * self.DIM))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
