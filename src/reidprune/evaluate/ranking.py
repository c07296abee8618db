"""CMC, mAP and mINP under the standard re-ID protocol, without sorting whole gallery rows.

The protocol (Market-1501 / torchreid ``eval_market1501`` / TransReID ``eval_func``), per query:
1. rank the gallery by ascending distance; equal distances keep gallery order (stable sort);
2. drop gallery items with the query's identity AND camera ("junk" for this query); items of
   other identities from the same camera, and distractors (pid 0), stay as negatives;
3. positives = the remaining items with the query's identity; a query without any is skipped
   (left out of every mean) and counted;
4. CMC(k) = 1 if a positive is within the first k kept items; the curve is cut at `max_rank`;
5. AP = (1 / P) * sum_i i / r_i over the P positives at 1-based kept ranks r_1 < ... < r_P
   (the whole kept ranking, not truncated);
6. INP = P / r_P (fast-reid's mINP: how deep the hardest positive lies).

Only the ranks of the positives are needed, and a positive's rank is 1 + the number of kept
items that come before it. Every such item has a distance <= the farthest positive's, so per
query we collect the "candidates" below that threshold (few for a trained model), sort just
those by (distance, gallery index) and read the positives' positions. Same-identity gallery items
are found through an identity index instead of a (Q, G) mask. Worst case (a useless model whose
farthest positive is at the end of the ranking) this degrades to sorting every row, still in
bounded blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Candidates sorted at once; bounds the temporary memory (~40 bytes each) whatever the model.
CANDIDATE_BUDGET = 1 << 22


@dataclass
class GalleryIndex:
    """Gallery identities grouped for lookup: the gallery items of identity `unique_pids[u]` are
    ``order[starts[u] : starts[u] + counts[u]]`` (ascending gallery index)."""

    pids: Tensor  # (G,) long
    camids: Tensor  # (G,) long
    order: Tensor  # (G,) long
    unique_pids: Tensor  # (U,) long, ascending
    starts: Tensor  # (U,) long
    counts: Tensor  # (U,) long

    @classmethod
    def build(cls, pids: Tensor, camids: Tensor) -> GalleryIndex:
        order = torch.sort(pids, stable=True).indices
        unique_pids, counts = torch.unique_consecutive(pids[order], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        return cls(pids, camids, order, unique_pids, starts, counts)

    @property
    def size(self) -> int:
        return int(self.pids.numel())

    def same_identity(self, query_pids: Tensor) -> Tensor:
        """(B, M) gallery indices sharing each query's identity, padded with -1 (M = largest group)."""
        if len(self.unique_pids) == 0:
            return torch.full((len(query_pids), 0), -1, dtype=torch.long, device=query_pids.device)
        pos = torch.searchsorted(self.unique_pids, query_pids).clamp(max=len(self.unique_pids) - 1)
        found = self.unique_pids[pos] == query_pids
        counts = torch.where(found, self.counts[pos], 0)
        width = int(counts.max()) if len(counts) else 0
        slot = torch.arange(width, device=query_pids.device)
        inside = slot.unsqueeze(0) < counts.unsqueeze(1)
        flat = (self.starts[pos].unsqueeze(1) + slot).clamp(max=self.size - 1)
        return torch.where(inside, self.order[flat], -1)


@dataclass
class QueryStats:
    """Per-query results of one block (or of all queries once concatenated).

    valid: (B,) bool, the query has at least one positive; the others are skipped.
    num_pos: (B,) long, positives kept for the query.
    first_rank / last_rank: (B,) long, 1-based kept rank of the nearest / farthest positive (0 if none).
    ap: (B,) float64 average precision (0 where not valid).
    """

    valid: Tensor
    num_pos: Tensor
    first_rank: Tensor
    last_rank: Tensor
    ap: Tensor

    @staticmethod
    def cat(parts: list[QueryStats]) -> QueryStats:
        return QueryStats(
            *(torch.cat([getattr(p, f) for p in parts]) for f in QueryStats.__dataclass_fields__)
        )


def _order_key(rows: Tensor, values: Tensor) -> Tensor:
    """int64 keys ordering (row, value) lexicographically; float32 values map to their IEEE order.

    Positive floats order like their bit patterns; negative ones in reverse, so their magnitude
    bits are flipped. -0.0 is turned into +0.0 first (they are equal distances).
    """
    bits = (values + 0.0).view(torch.int32).to(torch.int64)
    ordered = torch.where(bits >= 0, bits + (1 << 31), (1 << 31) - 1 - (bits & 0x7FFFFFFF))
    return (rows << 32) | ordered


def rank_block(dist: Tensor, query_pids: Tensor, query_camids: Tensor, gallery: GalleryIndex) -> QueryStats:
    """Protocol statistics for a block of queries.

    dist: (B, G) float32 or float64 distances of B queries to the whole gallery; OVERWRITTEN (junk
      items are set to +inf). Must be finite. query_pids, query_camids: (B,) long on the same device.
    """
    b, g = dist.shape
    device = dist.device
    same = gallery.same_identity(query_pids)  # (B, M)
    present = same >= 0
    cols = same.clamp(min=0)
    junk = present & (gallery.camids[cols] == query_camids.unsqueeze(1))
    positive = present & ~junk
    num_pos = positive.sum(dim=1)
    row_ids = torch.arange(b, device=device).unsqueeze(1).expand_as(same)
    dist[row_ids[junk], cols[junk]] = float("inf")
    # a query's farthest positive bounds every item that can rank before one of its positives
    threshold = torch.full((b,), float("-inf"), device=device)
    if same.shape[1]:
        threshold = torch.where(positive, dist.gather(1, cols), threshold.unsqueeze(1)).amax(dim=1)

    first = torch.zeros(b, dtype=torch.long, device=device)
    last = torch.zeros(b, dtype=torch.long, device=device)
    ap = torch.zeros(b, dtype=torch.float64, device=device)
    # rows per group such that even a row full of candidates keeps the group within the budget
    step = max(1, CANDIDATE_BUDGET // max(g, 1))
    for start in range(0, b, step):
        stop = min(start + step, b)
        _rank_rows(
            dist[start:stop],
            threshold[start:stop],
            num_pos[start:stop],
            query_pids[start:stop],
            gallery.pids,
            first[start:stop],
            last[start:stop],
            ap[start:stop],
        )
    return QueryStats(num_pos > 0, num_pos, first, last, ap)


def _rank_rows(
    dist: Tensor,
    threshold: Tensor,
    num_pos: Tensor,
    query_pids: Tensor,
    gallery_pids: Tensor,
    first: Tensor,
    last: Tensor,
    ap: Tensor,
) -> None:
    """Fill first/last/ap (views of the block's outputs) for a group of rows of `dist`."""
    b, g = dist.shape
    # candidates: items not after the farthest positive; no row holds junk (+inf), skipped rows hold none
    flat = (dist <= threshold.unsqueeze(1)).reshape(-1).nonzero().squeeze(1)  # row-major order
    if flat.numel() == 0:
        return
    rows = torch.div(flat, g, rounding_mode="floor")
    is_pos = gallery_pids[flat - rows * g] == query_pids[rows]  # junk is not a candidate
    # sort by (row, distance); the stable sort keeps gallery order among equal distances
    values = dist.reshape(-1)[flat]
    if values.dtype == torch.float32:
        order = torch.sort(_order_key(rows, values), stable=True).indices
    else:  # float64 matrices are ranked at their own precision: two stable sorts
        order = torch.sort(values, stable=True).indices
        order = order[torch.sort(rows[order], stable=True).indices]
    # a positive's kept rank = its position in that order - where its row starts + 1
    at = is_pos[order].nonzero().squeeze(1)
    pos_rows = rows[order[at]]
    counts = torch.bincount(rows, minlength=b)
    pos_rank = at - (torch.cumsum(counts, 0) - counts)[pos_rows] + 1
    if len(pos_rows) != int(num_pos.sum()):
        raise RuntimeError("internal error: a positive fell outside its query's candidate set")
    pos_start = torch.cumsum(num_pos, 0) - num_pos
    ordinal = torch.arange(len(pos_rows), device=dist.device) - pos_start[pos_rows] + 1
    ap.index_add_(0, pos_rows, ordinal.double() / pos_rank.double())
    has = num_pos > 0
    ap[has] /= num_pos[has].double()
    is_first = ordinal == 1
    first[pos_rows[is_first]] = pos_rank[is_first]
    is_last = ordinal == num_pos[pos_rows]
    last[pos_rows[is_last]] = pos_rank[is_last]


def summarize(stats: QueryStats, num_gallery: int, ranks: list[int], max_rank: int = 50) -> dict:
    """Protocol summary in percent: mAP, mINP, rank-k for k in `ranks`, plus the CMC curve.

    Raises ValueError when no query has a valid match (nothing to average).
    """
    num_queries = int(stats.valid.numel())
    valid = stats.valid
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(
            f"none of the {num_queries} queries has a valid match in the gallery (same identity seen by "
            "another camera); check that query and gallery come from the same identities and that "
            "camera ids are parsed correctly"
        )
    cut = min(max_rank, num_gallery)
    first = stats.first_rank[valid].cpu()
    hits = torch.bincount(first.clamp(max=cut + 1), minlength=cut + 2)[1 : cut + 1]
    cmc = torch.cumsum(hits, 0).double() / num_valid
    ap = stats.ap[valid].cpu()
    inp = stats.num_pos[valid].cpu().double() / stats.last_rank[valid].cpu().double()
    result: dict = {
        "mAP": float(ap.mean()) * 100.0,
        "mINP": float(inp.mean()) * 100.0,
    }
    for k in ranks:
        if not 1 <= k <= max_rank:
            raise ValueError(f"CMC rank {k} is outside 1..max_rank={max_rank}")
        # a gallery shorter than k: every valid query has found its match within it
        result[f"rank{k}"] = float(cmc[k - 1]) * 100.0 if k <= cut else 100.0
    result["num_queries"] = num_queries
    result["num_skipped_queries"] = num_queries - num_valid
    result["cmc"] = [float(v) * 100.0 for v in cmc]
    return result
