"""Gradient-weighted attention scores of key tokens (AMG / Prune-and-Merge), from one calibration pass.

Score of key token j in block l (first-order Taylor estimate of the loss change if j were
removed from block l's attention), summed over calibration batches:

    s_l[j] = sum_batches | sum_{b,h,i} A[b,h,i,j] * dL/dA[b,h,i,j] | / (B * H * N_q)

The abs is taken per batch (amg.md §2.1). The prefix keys (CLS, ...) are scored but never removal candidates.

Under torchrun each rank calibrates on its shard; `all_reduce()` then combines the ranks' terms
batch by batch, so the scores equal one process whose batch k is the union of the ranks' batch k
(the task loss being a mean over the batch's images, as the default loss is).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from reidprune.compress.ranks import all_reduce_sum, check_same_layout, world_size
from reidprune.errors import CompressionError
from reidprune.models.tokens.method import normalise_scores

__all__ = ["TaylorKeyScore", "normalise_scores", "scores_by_position"]


class TaylorKeyScore:
    """`AttentionStatistic` accumulating s_l (float64, one value per key) for the named layers."""

    needs_grad = True

    def __init__(self, names: Iterable[str] | None = None) -> None:
        self.names = set(names) if names is not None else None
        self.sums: dict[str, Tensor] = {}
        self.calls: dict[str, int] = {}
        # per update: (images, B * H * N_q signed per-key sums); kept to combine ranks batch by batch
        self._terms: dict[str, list[tuple[int, Tensor]]] = {}
        self.reduced = False  # all_reduce() ran: the sums are global, no more updates

    def update(self, name: str, attn: Tensor, grad: Tensor | None) -> None:
        if self.names is not None and name not in self.names:
            return
        if self.reduced:
            raise CompressionError(
                f"TaylorKeyScore: update of {name} after all_reduce(); use a new statistic"
            )
        if grad is None:
            raise CompressionError(f"TaylorKeyScore needs attention gradients; none given for {name}")
        b, h, nq, nk = attn.shape
        signed = (attn * grad).sum(dim=(0, 1, 2)).double()
        per_key = signed.abs() / (b * h * nq)
        if name in self.sums:
            if self.sums[name].shape[0] != nk:
                raise CompressionError(
                    f"{name}: {nk} keys in this batch but {self.sums[name].shape[0]} before; "
                    "token scores need a fixed key set per layer"
                )
            self.sums[name] += per_key
        else:
            self.sums[name] = per_key
        self.calls[name] = self.calls.get(name, 0) + 1
        self._terms.setdefault(name, []).append((b, signed / (h * nq)))

    def all_reduce(self) -> None:
        """Combine every rank's terms (collective; once, on every rank, after the same calibration).

        A rank's signed sum for batch k is that of its mean loss; b_r times it is the images' plain
        sum, so the union batch's term is |sum_r b_r * signed_r / B| / B with B = sum_r b_r.
        """
        if world_size() == 1 or self.reduced:
            return
        self.reduced = True
        check_same_layout(
            "token scores", {name: [len(terms), terms[0][1].numel()] for name, terms in self._terms.items()}
        )
        for name in sorted(self._terms):
            terms = self._terms[name]
            images = torch.tensor([float(b) for b, _ in terms], dtype=torch.float64)
            weighted = torch.stack([b * t.cpu() for b, t in terms])
            packed = all_reduce_sum(torch.cat([weighted, images[:, None]], dim=1))
            total = packed[:, -1:]
            union = packed[:, :-1] / total
            self.sums[name] = (union.abs() / total).sum(dim=0).to(terms[0][1].device)


def scores_by_position(
    stat: TaylorKeyScore,
    names: Sequence[str],
    key_positions: Sequence[Sequence[int] | None],
    num_tokens: int,
    num_prefix_tokens: int = 1,
) -> Tensor:
    """Map each block's key scores back to original positions.

    names: attention module path of each block; key_positions: the original position of each key
    column of that block's attention (None = all positions in order).
    Returns (L, num_tokens) float64 with NaN where a position is not a key of the block, for the
    prefix keys (class, distillation, registers: never candidates) and for blocks that did not run.
    """
    out = torch.full((len(names), num_tokens), float("nan"), dtype=torch.float64)
    for i, (name, keys) in enumerate(zip(names, key_positions, strict=True)):
        if name not in stat.sums:
            continue
        values = stat.sums[name].cpu()
        index = torch.arange(num_tokens) if keys is None else torch.as_tensor(list(keys), dtype=torch.long)
        if index.numel() != values.numel():
            raise CompressionError(f"{name}: {values.numel()} key scores for {index.numel()} kept positions")
        out[i, index] = values
    out[:, :num_prefix_tokens] = float("nan")
    return out
