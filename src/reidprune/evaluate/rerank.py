"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li: "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), with sparse neighbourhoods instead of dense (Q+G)^2 matrices.

With all N = Q + G images as one set and d the original distance scaled per row to [0, 1] by the
row's maximum over all N items:
1. N(i, k): the k nearest items of i (itself included); R(i, k) = {j in N(i, k) : i in N(j, k)}.
2. R*(i) = R(i, k1+1) united with R(c, k1/2+1) for every c in R(i, k1+1) whose half-size set
   shares more than 2/3 of its members with R(i, k1+1).
3. V_i: weights exp(-d(i, j)) on j in R*(i), normalised to sum 1 (Gaussian-kernel encoding).
4. Local query expansion: V_i <- mean of V_n over n in N(i, k2).
5. Jaccard distance d_J(q, g) = 1 - sum_j min(V_qj, V_gj) / sum_j max(V_qj, V_gj); rows sum to 1, so
   the denominator is 2 - the numerator.
6. Final distance = (1 - lambda) d_J + lambda d, for query rows and gallery columns.

The `k1 + 1` / `round(k1 / 2) + 1` neighbourhood sizes, the strict "> 2/3" test and the per-row
scaling follow the authors' released evaluation so that numbers compare with the literature.

Cost: one pass of N x N distances in blocks (N^2 * D multiply-adds; the matrix is never held),
then sparse work proportional to N * k1 * k2. Memory: the neighbour table (N x (k1+1)), the sparse
V and V_qe (typically N x |R*| and N x k2 x |R*| entries of 16 bytes, |R*| ~ k1..3 k1) and one
(chunk, N) distance block: ~0.1 GB for Market-1501 (N = 19,281), ~0.5-1 GB for MSMT17 (N = 93,820).
Above `max_memory_gb` it refuses with an error instead of swapping.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from reidprune.errors import DataError
from reidprune.evaluate.distance import DistanceBlocks, squared_norms

# rows per vectorised step of the neighbourhood computations, and (query entry, gallery entry)
# pairs per step of the Jaccard accumulation; both bound temporary memory to a few hundred MB
ROW_STEP = 2048
PAIR_STEP = 1 << 23
GIB = 1 << 30


def knn_table(features: Tensor, k: int, metric: str, chunk: int) -> tuple[Tensor, Tensor]:
    """Nearest neighbours of every row among all rows, in distance blocks.

    features: (N, D). Returns indices (N, k) long in ascending distance (ties by index) and the
    row maxima (N,) of the distances (for the per-row scaling).
    """
    n = features.shape[0]
    table = torch.empty(n, k, dtype=torch.long, device=features.device)
    rowmax = torch.empty(n, device=features.device)
    for start, block in DistanceBlocks(features, features, metric, chunk):
        stop = start + block.shape[0]
        rowmax[start:stop] = block.amax(dim=1)
        values, index = block.topk(k, dim=1, largest=False, sorted=False)
        # deterministic order among the selected: by distance, then by index
        index, perm = index.sort(dim=1)
        values = values.gather(1, perm)
        table[start:stop] = index.gather(1, values.sort(dim=1, stable=True).indices)
    return table, rowmax


def reciprocal_mask(table: Tensor, k: int) -> Tensor:
    """(N, k) bool: entry (i, a) is True when i is among the k nearest of its a-th neighbour."""
    n = table.shape[0]
    out = torch.empty(n, k, dtype=torch.bool, device=table.device)
    near = table[:, :k]
    for start in range(0, n, ROW_STEP):
        stop = min(start + ROW_STEP, n)
        back = near[near[start:stop]]  # (c, k, k): neighbours of the neighbours
        me = torch.arange(start, stop, device=table.device).view(-1, 1, 1)
        out[start:stop] = (back == me).any(dim=2)
    return out


def expanded_sets(table: Tensor, k1: int) -> tuple[Tensor, Tensor]:
    """R*(i) for every row as COO pairs (rows, cols), sorted by row then column, without duplicates."""
    n = table.shape[0]
    k = min(k1 + 1, table.shape[1])
    h = min(round(k1 / 2) + 1, k)  # half-to-even, like numpy.around
    full = table[:, :k]
    r_full = reciprocal_mask(table, k)  # R(i, k1+1) as a mask over full
    r_half = reciprocal_mask(table, h)  # R(c, k1/2+1) as a mask over table[c, :h]
    half_size = r_half.sum(dim=1)
    rows_out, cols_out = [], []
    for start in range(0, n, ROW_STEP):
        stop = min(start + ROW_STEP, n)
        own = full[start:stop]  # (c, k)
        own_in = r_full[start:stop]
        cand = own  # candidates c = own[:, a] (only those in R(i))
        cand_half = table[cand, :h]  # (c, k, h)
        cand_half_in = r_half[cand]  # (c, k, h)
        # |R(i) ∩ R(c, half)| for each candidate
        member = (cand_half.unsqueeze(-1) == own.view(own.shape[0], 1, 1, k)) & own_in.view(-1, 1, 1, k)
        inter = (member.any(dim=-1) & cand_half_in).sum(dim=-1)  # (c, k)
        accept = own_in & (3 * inter > 2 * half_size[cand])
        sentinel = torch.full_like(own, n)
        first = torch.where(own_in, own, sentinel)
        extra = torch.where(accept.unsqueeze(-1) & cand_half_in, cand_half, n).flatten(1)
        members = torch.cat([first, extra], dim=1).sort(dim=1).values
        keep = members < n
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]
        rows = torch.arange(start, stop, device=table.device).unsqueeze(1).expand_as(members)
        rows_out.append(rows[keep])
        cols_out.append(members[keep])
    return torch.cat(rows_out), torch.cat(cols_out)


def pair_distances(features: Tensor, rows: Tensor, cols: Tensor, metric: str) -> Tensor:
    """Distances of the (rows[i], cols[i]) pairs, same definition as `DistanceBlocks`."""
    out = torch.empty(len(rows), device=features.device)
    if metric == "cosine":
        features = torch.nn.functional.normalize(features, dim=1)
    else:
        sq = squared_norms(features)
    step = max(1, (PAIR_STEP // 8) // max(features.shape[1], 1) * 8)
    for start in range(0, len(rows), step):
        r, c = rows[start : start + step], cols[start : start + step]
        dot = (features[r] * features[c]).sum(dim=1)
        out[start : start + step] = 1.0 - dot if metric == "cosine" else sq[r] + sq[c] - 2.0 * dot
    return out


def _row_ptr(rows: Tensor, n: int) -> Tensor:
    ptr = torch.zeros(n + 1, dtype=torch.long, device=rows.device)
    ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return ptr


def _expand_ranges(starts: Tensor, counts: Tensor) -> Tensor:
    """Concatenation of arange(starts[i], starts[i] + counts[i]) over i."""
    total = int(counts.sum())
    offsets = torch.arange(total, device=counts.device) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts, output_size=total
    )
    return torch.repeat_interleave(starts, counts, output_size=total) + offsets


def query_expansion(
    ptr: Tensor, cols: Tensor, vals: Tensor, neighbours: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """V_qe[i] = mean of the sparse rows V[n] over n in neighbours[i] (CSR in, CSR out).

    ptr: (N+1,), cols/vals: CSR of V. neighbours: (N, k2). Returns (ptr, cols, vals) of V_qe.
    """
    n, k2 = neighbours.shape
    counts_out, cols_out, vals_out = [], [], []
    row_nnz = ptr[1:] - ptr[:-1]
    for start in range(0, n, ROW_STEP):
        stop = min(start + ROW_STEP, n)
        nb = neighbours[start:stop].reshape(-1)
        counts = row_nnz[nb]
        idx = _expand_ranges(ptr[nb], counts)
        local = torch.repeat_interleave(
            torch.arange(stop - start, device=nb.device).repeat_interleave(k2), counts, output_size=len(idx)
        )
        key = local * n + cols[idx]
        unique, inverse = torch.unique(key, sorted=True, return_inverse=True)
        summed = torch.zeros(len(unique), device=vals.device).index_add_(0, inverse, vals[idx])
        counts_out.append(torch.bincount(torch.div(unique, n, rounding_mode="floor"), minlength=stop - start))
        cols_out.append(unique % n)
        vals_out.append(summed / k2)
    out_ptr = torch.zeros(n + 1, dtype=torch.long, device=ptr.device)
    out_ptr[1:] = torch.cumsum(torch.cat(counts_out), 0)
    return out_ptr, torch.cat(cols_out), torch.cat(vals_out)


class RerankBlocks:
    """Re-ranked (Q_block, G) distance blocks for the blocked evaluation.

    query: (Q, D), gallery: (G, D) float features on the compute device. The neighbourhoods are
    computed at construction; iterating yields (start row, block) pairs; a block stays valid until
    the next one.
    """

    def __init__(
        self,
        query: Tensor,
        gallery: Tensor,
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
        metric: str = "euclidean",
        chunk: int = 1024,
        max_memory_gb: float = 4.0,
    ) -> None:
        if k1 < 1 or k2 < 1:
            raise ValueError(f"re-ranking needs k1 >= 1 and k2 >= 1, got k1={k1}, k2={k2}")
        if not 0.0 <= lambda_value <= 1.0:
            raise ValueError(f"re-ranking lambda must lie in [0, 1], got {lambda_value}")
        self.num_query, self.num_gallery = query.shape[0], gallery.shape[0]
        self.lambda_value = lambda_value
        self.chunk = chunk
        self.distances = DistanceBlocks(query, gallery, metric, chunk)
        n = self.num_query + self.num_gallery
        limit = max_memory_gb * GIB
        k2 = min(k2, n)
        k = min(max(k1 + 1, k2), n)
        # lower bound before the N x N pass: the table, one block, and V / V_qe at |R*| = k1 + 1
        estimate = n * k * 8 + min(chunk, n) * n * 4 * 2 + n * k * (1 + k2) * 16
        self._check(estimate, limit, n)

        features = torch.cat([query, gallery]).float()
        table, rowmax = knn_table(features, k, metric, chunk)
        rowmax = torch.where(rowmax > 0, rowmax, torch.ones_like(rowmax))
        rows, cols = expanded_sets(table, k1)
        # exact need from here on: V, the expanded rows of V_qe (before merging) and its CSC copy
        row_nnz = torch.bincount(rows, minlength=n)
        qe_raw = int(row_nnz[table[:, :k2]].sum())
        self._check(len(rows) * 24 + qe_raw * 40 + min(chunk, n) * n * 4 * 2, limit, n)

        weights = torch.exp(-pair_distances(features, rows, cols, metric) / rowmax[rows])
        weights /= torch.zeros(n, device=weights.device).index_add_(0, rows, weights)[rows]
        ptr, qcols, qvals = query_expansion(_row_ptr(rows, n), cols, weights, table[:, :k2])
        self.rowmax_query = rowmax[: self.num_query]
        self.q_ptr, self.q_cols, self.q_vals = ptr, qcols, qvals
        # gallery rows of V_qe by column (the inverted index of the Jaccard sums)
        start = int(ptr[self.num_query])
        g_rows = torch.repeat_interleave(
            torch.arange(self.num_gallery, device=ptr.device),
            ptr[self.num_query + 1 :] - ptr[self.num_query : -1],
        )
        g_cols = qcols[start:]
        order = torch.sort(g_cols, stable=True).indices
        self.g_colptr = _row_ptr(g_cols, n)
        self.g_rows, self.g_vals = g_rows[order], qvals[start:][order]

    @staticmethod
    def _check(need: float, limit: float, n: int) -> None:
        if need > limit:
            raise DataError(
                f"re-ranking {n} images needs about {need / GIB:.1f} GiB, above "
                f"eval.rerank_max_memory_gb={limit / GIB:g}; raise the limit or evaluate without rerank"
            )

    def jaccard_block(self, start: int, stop: int, out: Tensor) -> Tensor:
        """Jaccard distances of query rows [start, stop) to the gallery, written into out (c, G)."""
        g = self.num_gallery
        out.zero_()
        lo, hi = int(self.q_ptr[start]), int(self.q_ptr[stop])
        q_rows = torch.repeat_interleave(
            torch.arange(stop - start, device=out.device),
            self.q_ptr[start + 1 : stop + 1] - self.q_ptr[start:stop],
        )
        q_cols, q_vals = self.q_cols[lo:hi], self.q_vals[lo:hi]
        fan = self.g_colptr[q_cols + 1] - self.g_colptr[q_cols]  # gallery entries sharing each column
        ends = torch.cumsum(fan, 0)
        flat = out.view(-1)
        a = 0
        while a < len(q_cols):
            # the largest run of query entries whose pairs fit the step (at least one entry)
            base = int(ends[a - 1]) if a else 0
            b = max(a + 1, int(torch.searchsorted(ends, base + PAIR_STEP, right=True)))
            counts = fan[a:b]
            idx = _expand_ranges(self.g_colptr[q_cols[a:b]], counts)
            total = len(idx)
            rows = torch.repeat_interleave(q_rows[a:b], counts, output_size=total)
            mins = torch.minimum(
                torch.repeat_interleave(q_vals[a:b], counts, output_size=total), self.g_vals[idx]
            )
            flat.index_add_(0, rows * g + self.g_rows[idx], mins)
            a = b
        # Jaccard distance 1 - s / (2 - s) from the sums of minima s
        return out.div_(out.neg().add_(2.0)).neg_().add_(1.0)

    def __iter__(self) -> Iterator[tuple[int, Tensor]]:
        rows = min(self.chunk, self.num_query)
        jac = torch.empty(rows, self.num_gallery, device=self.q_vals.device)
        for start, block in self.distances:
            stop = start + block.shape[0]
            jaccard = self.jaccard_block(start, stop, jac[: stop - start])
            block.div_(self.rowmax_query[start:stop].unsqueeze(1)).mul_(self.lambda_value)
            block.add_(jaccard, alpha=1.0 - self.lambda_value)
            yield start, block
