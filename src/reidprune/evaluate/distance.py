"""Query-gallery distances, computed one block of query rows at a time.

The two metrics of the re-ID literature (torchreid, TransReID):
- ``euclidean``: the *squared* Euclidean distance ||q||^2 + ||g||^2 - 2 q.g;
- ``cosine``: 1 - cos(q, g) (both sides L2-normalised here, whatever the caller did).

A full Market-1501 matrix is 3,368 x 15,913 floats (214 MB) and an MSMT17 one 11,659 x 82,161
(3.8 GB), so callers consume blocks of `chunk` query rows and never hold the whole matrix.

The q.g products are one GEMM per block, which is most of an evaluation's time. On CPUs the
GEMM runs through oneDNN (torch's ``mkldnn._linear_pointwise``, the kernel torch.compile uses
for linear layers) when it is available and agrees with ``torch.mm`` on a probe: torch's default
fp32 CPU GEMM (MKL) does not use AVX-512 on AMD processors, oneDNN does, which makes the whole
Market-1501 evaluation about 30 % faster there. Elsewhere (CUDA, no oneDNN) it is ``torch.addmm``.
Both are IEEE fp32 GEMMs; they differ only in summation order (last-bit rounding).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

METRICS = ("euclidean", "cosine")


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown distance metric '{metric}'; expected one of {', '.join(METRICS)}")
    return metric


def squared_norms(x: Tensor) -> Tensor:
    """(N, D) -> (N,) row-wise sums of squares, without an (N, D) temporary."""
    return torch.einsum("nd,nd->n", x, x)


def _onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x @ weight.T + bias through oneDNN: (B, D), (G, D), (G,) -> (B, G) float32."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@functools.cache
def onednn_gemm_available() -> bool:
    """True when oneDNN's fp32 linear runs here and matches torch.mm on a small probe."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(*s, generator=gen) for s in ((5, 24), (7, 24), (7,)))
        return bool(torch.allclose(_onednn_linear(x, w, b), torch.addmm(b, x, w.t()), atol=1e-5))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


class DistanceBlocks:
    """Prepared query/gallery features that yield (Q_block, G) distance blocks.

    query: (Q, D), gallery: (G, D) float tensors on the device where the distances are computed.
    Iterating yields (start row, block) pairs; on the addmm path blocks share one buffer (fresh
    100 MB allocations cost page faults), so a block is only valid until the next one.
    """

    def __init__(self, query: Tensor, gallery: Tensor, metric: str = "euclidean", chunk: int = 1024) -> None:
        check_metric(metric)
        if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
            raise ValueError(
                f"expected (Q, D) and (G, D) feature matrices, got {tuple(query.shape)} and {tuple(gallery.shape)}"
            )
        if chunk < 1:
            raise ValueError(f"query chunk must be >= 1, got {chunk}")
        self.metric = metric
        self.chunk = chunk
        query, gallery = query.float().contiguous(), gallery.float().contiguous()
        if metric == "cosine":
            query, gallery = F.normalize(query, dim=1), F.normalize(gallery, dim=1)
        self.query, self.gallery = query, gallery
        self.num_query, self.num_gallery = query.shape[0], gallery.shape[0]
        self.onednn = query.device.type == "cpu" and onednn_gemm_available()
        # euclidean: d = |q|^2 - 2 (q.g - |g|^2 / 2); cosine: d = -(q.g - 1)
        if metric == "cosine":
            self.row_term = None
            self.col_bias = torch.full((self.num_gallery,), -1.0, device=gallery.device)
        else:
            self.row_term = squared_norms(query).unsqueeze(1)
            self.col_bias = -0.5 * squared_norms(gallery)
        self._buffer: Tensor | None = None

    def block(self, start: int, stop: int) -> Tensor:
        """Distances of query rows [start, stop) to the whole gallery: (stop - start, G) float32."""
        rows = self.query[start:stop]
        if self.onednn:
            out = _onednn_linear(rows, self.gallery, self.col_bias)
        else:
            if self._buffer is None or self._buffer.shape[0] < rows.shape[0]:
                self._buffer = torch.empty(
                    min(self.chunk, self.num_query), self.num_gallery, device=rows.device
                )
            out = torch.addmm(self.col_bias, rows, self.gallery.t(), out=self._buffer[: rows.shape[0]])
        if self.row_term is None:
            return out.neg_()
        return torch.add(self.row_term[start:stop], out, alpha=-2.0, out=out)

    def __iter__(self) -> Iterator[tuple[int, Tensor]]:
        """Yield (start row, block) pairs covering all query rows."""
        for start in range(0, self.num_query, self.chunk):
            yield start, self.block(start, min(start + self.chunk, self.num_query))

    def release(self) -> None:
        self._buffer = None


def pairwise_distance(query: Tensor, gallery: Tensor, metric: str = "euclidean", chunk: int = 1024) -> Tensor:
    """The full (Q, G) distance matrix, assembled from the same blocks the chunked evaluation uses.

    For small sets, tests and re-ranking checks; bitwise equal to what `reid_metrics` ranks.
    """
    blocks = DistanceBlocks(query, gallery, metric, chunk)
    return torch.cat([block.clone() for _, block in blocks])
