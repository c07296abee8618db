"""What the search's top-k drops and ToMe merges lose, measured on the dense model in the same
calibration pass as the head entropies (docs/budget_search.md, "top-k and ToMe").

- top-k (EViT): `ClsAttentionMass`, per block the class token's head-averaged attention to every
  patch token (a model without a class token: the attention each patch receives, averaged over
  queries, as `TopKReducer` ranks them), sorted ascending per image and averaged over images:
  entry r is the attention mass the (r+1)-th dropped token takes with it, since the block keeps
  the tokens attended most.
- ToMe: `MergeDistance`, per block ToMe's bipartite matching on the dense keys (head-averaged,
  cosine similarity; A = even, B = odd positions; prefix tokens never merge): per image the best
  A->B links sorted by similarity, entry r = 1 - similarity of the (r+1)-th best link (what that
  merge loses), averaged over images.

Both are dense-model estimates: in the compressed model block i sees the tokens earlier blocks
left, not the dense model's, and its attention and keys differ accordingly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from reidprune.compress.ranks import all_reduce_sum, world_size
from reidprune.errors import CompressionError
from reidprune.models.tokens.layout import BackboneLayout
from reidprune.models.tokens.tome import tome_max_r


class _SortedMeans:
    """Per layer: the sum over images of a sorted (R,) vector, and the image count."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, rows: Tensor) -> None:
        """rows: (B, R) float64, already sorted along R."""
        total = rows.sum(dim=0)
        if name in self.sums and self.sums[name].shape != total.shape:
            raise CompressionError(
                f"{self.what}: layer '{name}' gave {total.shape[0]} tokens after {self.sums[name].shape[0]}"
            )
        self.sums[name] = self.sums[name] + total if name in self.sums else total
        self.counts[name] = self.counts.get(name, 0) + int(rows.shape[0])

    def mean(self, name: str) -> Tensor:
        if name not in self.sums:
            raise CompressionError(f"{self.what}: the calibration pass did not reach '{name}'")
        return self.sums[name] / self.counts[name]

    def all_reduce(self) -> None:
        if world_size() == 1:
            return
        for name in sorted(self.sums):
            self.sums[name] = all_reduce_sum(self.sums[name])
            count = torch.tensor([float(self.counts[name])], dtype=torch.float64)
            self.counts[name] = int(all_reduce_sum(count).item())


class ClsAttentionMass:
    """Calibration statistic (`AttentionStatistic`) of the top-k drops, see the module docstring.

    names: the backbone blocks' attention layers; other layers (JPM copies) are ignored.
    mean(name) -> (P,) float64 ascending: the mean r-th smallest attention mass of a patch.
    """

    needs_grad = False

    def __init__(self, names: list[str], num_prefix_tokens: int = 1, class_token: bool = True) -> None:
        self.names = set(names)
        self.prefix = int(num_prefix_tokens)
        self.class_token = bool(class_token)
        self._means = _SortedMeans("class-token attention")

    @torch.no_grad()
    def update(self, name: str, attn: Tensor, grad: Tensor | None = None) -> None:
        """attn: (B, H, N, N) post-softmax probabilities of one backbone block."""
        if name not in self.names:
            return
        rows = attn[:, :, :1] if self.class_token else attn
        mass = rows.double().mean(dim=(1, 2))[:, self.prefix :]  # (B, P)
        self._means.add(name, mass.sort(dim=1).values)

    def mean(self, name: str) -> Tensor:
        return self._means.mean(name)

    def all_reduce(self) -> None:
        self._means.all_reduce()


def merge_losses(keys: Tensor, num_prefix_tokens: int = 1) -> Tensor:
    """1 - similarity of ToMe's possible merges, best first (as `tome.bipartite_matching` ranks them).

    keys: (B, H, N, d) the block's keys. Returns (B, R) float64 ascending, R = tome_max_r(N, p):
    for every A token that may merge, 1 - cosine similarity to its most similar B token."""
    metric = keys.double().mean(dim=1)
    metric = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    a, b = metric[:, ::2], metric[:, 1::2]
    prefix_a, prefix_b = (num_prefix_tokens + 1) // 2, num_prefix_tokens // 2
    scores = (a @ b.transpose(1, 2))[:, prefix_a:, prefix_b:]  # prefix tokens never merge
    count = tome_max_r(keys.shape[2], num_prefix_tokens)
    if count == 0:
        return keys.new_zeros(keys.shape[0], 0, dtype=torch.float64)
    best = scores.max(dim=-1).values.sort(dim=1, descending=True).values[:, :count]
    return (1.0 - best).clamp_min(0.0)


class MergeDistance:
    """What ToMe's merges lose per backbone block (module docstring), from the keys of the blocks'
    attention: `capturing()` hooks every block's `attn.k_norm` (the keys ToMe matches on) while
    the calibration pass runs. mean(name) -> (R,) float64 ascending."""

    def __init__(self, layout: BackboneLayout) -> None:
        self.layout = layout
        self._means = _SortedMeans("ToMe merge distance")

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        prefix = self.layout.num_prefix_tokens

        def hook(name: str):  # type: ignore[no-untyped-def]
            def record(_module, _inputs, keys: Tensor) -> None:  # type: ignore[no-untyped-def]
                with torch.no_grad():
                    self._means.add(name, merge_losses(keys.detach(), prefix))

            return record

        handles = [
            block.attn.k_norm.register_forward_hook(hook(self.layout.attn_name(i)))
            for i, block in enumerate(self.layout.blocks)
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def mean(self, name: str) -> Tensor:
        return self._means.mean(name)

    def all_reduce(self) -> None:
        self._means.all_reduce()
