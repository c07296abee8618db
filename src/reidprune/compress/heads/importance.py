"""How important each attention head is: AMG map entropy, weight magnitude, and a seeded random baseline.

Every function returns one score vector per attention layer, shape (H_l,). What "important"
means differs: entropy is a *removal priority* (high entropy = diffuse = removed first, AMG),
magnitude is a *keep priority* (small weights = removed first). `compress/heads/selection.py`
turns either into a global decision.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reidprune.compress.ranks import all_reduce_sum, check_same_layout, world_size
from reidprune.errors import CompressionError
from reidprune.models.vit import Attention

ENTROPY_EPS = 1e-12


def map_entropy(mean_map: Tensor, eps: float = ENTROPY_EPS) -> Tensor:
    """AMG "map entropy" of per-head attention maps, in bits.

    mean_map: (H, N_q, N_k) attention probabilities (rows sum to 1), normally the dataset mean.
    Returns (H,): for each head, the entropy over keys of every query row, averaged over rows.
    The epsilon only guards log(0); an exact zero probability contributes exactly 0.
    """
    p = mean_map.float()
    return -(p * torch.log2(p.clamp_min(eps))).sum(dim=-1).mean(dim=-1)


class HeadEntropy:
    """Calibration statistic (`AttentionStatistic`): dataset-mean attention map per head.

    Fed by the shared calibration pass (`compress/calibration.py`), which calls
    `update(name, attn, grad)` for every attention layer and batch, so that head and token
    statistics come from one pass. Every batch counts, the ragged last one included: the mean
    map is (sum of all attention maps) / (number of maps), accumulated in float32.

    A layer that runs several times per forward (e.g. TransReID's JPM branch over four token
    groups) contributes every call; its mean is over all the maps it produced.

    Under torchrun `all_reduce()` sums the maps and counts over ranks, so every rank holds the mean
    over the union of their shards (one process over the same images, up to float summation order).
    """

    needs_grad = False

    def __init__(self, eps: float = ENTROPY_EPS) -> None:
        self.eps = eps
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}
        self.reduced = False  # all_reduce() ran: the sums are global, no more updates

    def reset(self) -> None:
        self._sums.clear()
        self._counts.clear()
        self.reduced = False

    def all_reduce(self) -> None:
        """Sum every rank's maps and counts (collective; once, on every rank, after calibrating)."""
        if world_size() == 1 or self.reduced:
            return
        self.reduced = True
        check_same_layout("head entropy", {name: list(total.shape) for name, total in self._sums.items()})
        for name in sorted(self._sums):
            self._sums[name] = all_reduce_sum(self._sums[name])
            count = torch.tensor([float(self._counts[name])], dtype=torch.float64)
            self._counts[name] = int(all_reduce_sum(count).item())

    @torch.no_grad()
    def update(self, name: str, attn: Tensor, grad: Tensor | None = None) -> None:
        """Add one batch. attn: (B, H, N_q, N_k) post-softmax probabilities; grad is ignored."""
        if self.reduced:
            raise CompressionError(f"head entropy: update of '{name}' after all_reduce(); call reset() first")
        if attn.ndim != 4:
            raise CompressionError(
                f"head entropy: layer '{name}' gave attention of shape "
                f"{tuple(attn.shape)}; expected (B, H, N_q, N_k)"
            )
        batch_sum = attn.detach().float().sum(dim=0)
        total = self._sums.get(name)
        if total is None:
            self._sums[name] = batch_sum
            self._counts[name] = attn.shape[0]
            return
        if total.shape != batch_sum.shape:
            raise CompressionError(
                f"head entropy: layer '{name}' gave attention maps of shape (H, N_q, N_k)="
                f"{tuple(batch_sum.shape)} after {tuple(total.shape)}; a mean map needs one token "
                "layout per layer (a reducer with a per-image token count cannot be averaged)"
            )
        total += batch_sum
        self._counts[name] += attn.shape[0]

    @property
    def names(self) -> list[str]:
        """Layers seen so far, in the order they first reported."""
        return list(self._sums)

    def num_maps(self, name: str) -> int:
        """How many (image, call) attention maps were averaged for `name`."""
        return self._counts.get(name, 0)

    def mean_map(self, name: str) -> Tensor:
        """(H, N_q, N_k) float32 dataset-mean attention map of one layer."""
        if name not in self._sums:
            raise CompressionError(f"head entropy: no attention maps were recorded for layer '{name}'")
        return self._sums[name] / self._counts[name]

    def entropies(self) -> dict[str, Tensor]:
        """{layer name: (H,) map entropy in bits} on the CPU."""
        return {name: map_entropy(self.mean_map(name), self.eps).cpu() for name in self._sums}


@torch.no_grad()
def head_magnitude(attn: Attention) -> Tensor:
    """(H,) L2 norm of everything that belongs to one head alone.

    That is the head's q, k and v rows of the qkv projection (bias entries included) and its
    head_dim columns of the output projection. The proj bias is shared by all heads and left out.
    """
    h, d = attn.num_heads, attn.head_dim
    qkv = attn.qkv.weight.detach().float().reshape(3, h, d, -1).square().sum(dim=(0, 2, 3))
    if attn.qkv.bias is not None:
        qkv = qkv + attn.qkv.bias.detach().float().reshape(3, h, d).square().sum(dim=(0, 2))
    proj = attn.proj.weight.detach().float().reshape(-1, h, d).square().sum(dim=(0, 2))
    return (qkv + proj).sqrt().cpu()


def random_scores(head_counts: list[int], seed: int) -> list[Tensor]:
    """Uniform random scores per head, reproducible from `seed` (the random baseline)."""
    generator = torch.Generator().manual_seed(seed)
    flat = torch.rand(sum(head_counts), generator=generator)
    return list(flat.split(head_counts))
