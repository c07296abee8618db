"""Filter-selection criteria as pure tensor functions (HFP, SFP, FPGM, BAFD).

A *filter* is one output channel of a conv: the flattened slice W[o] of a (n, C_in, kh, kw)
weight, a vector in R^(C_in*kh*kw). Every function here returns the indices of the filters to
REMOVE (or decay), sorted ascending. Selection is deterministic: there is no randomness, and
ties are broken by the lower filter index (stable sorts), so the same weights always give the
same choice.

Distances are computed once per layer as one (n, n) Euclidean matrix in float64, so that the
tie tolerance of BAFD (rtol 1e-5) is not at the mercy of float32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# Ties in the BAFD local power are decided within this tolerance (the seed's np.isclose defaults).
TIE_RTOL = 1e-5
TIE_ATOL = 1e-8


def flatten_filters(weight: Tensor) -> Tensor:
    """(n, C_in, kh, kw) conv weight -> (n, C_in*kh*kw) float64 filter vectors."""
    return weight.detach().reshape(weight.shape[0], -1).to(torch.float64)


def pairwise_distances(weight: Tensor) -> Tensor:
    """(n, ...) conv weight -> (n, n) float64 Euclidean distances between filters, zero diagonal."""
    flat = flatten_filters(weight)
    dist = torch.cdist(flat, flat).clamp_min_(0.0)
    dist.fill_diagonal_(0.0)
    return dist


def smallest(scores: Tensor, count: int) -> Tensor:
    """Indices of the `count` smallest scores (ties -> lower index), sorted ascending."""
    order = torch.sort(scores, stable=True).indices[:count]
    return torch.sort(order).values


def l1_norms(weight: Tensor) -> Tensor:
    """(n, ...) -> (n,) L1 norm of each filter (HFP, Li et al. 2017)."""
    return flatten_filters(weight).abs().sum(1)


def l2_norms(weight: Tensor) -> Tensor:
    """(n, ...) -> (n,) L2 norm of each filter (SFP, He et al. 2018)."""
    return flatten_filters(weight).norm(dim=1)


def distance_sums(dist: Tensor) -> Tensor:
    """(n, n) -> (n,) summed distance of each filter to all others (FPGM: small = near the
    geometric median, i.e. replaceable by the rest)."""
    return dist.sum(1)


def select_hfp(weight: Tensor, count: int) -> Tensor:
    """The `count` filters with the smallest L1 norm."""
    return smallest(l1_norms(weight), count)


def select_sfp(weight: Tensor, count: int) -> Tensor:
    """The `count` filters with the smallest L2 norm."""
    return smallest(l2_norms(weight), count)


def select_fpgm(weight: Tensor, count: int) -> Tensor:
    """The `count` filters with the smallest summed distance to the other filters."""
    return smallest(distance_sums(pairwise_distances(weight)), count)


def select_in_slices(
    select: Callable[[Tensor, int], Tensor], weight: Tensor, count: int, groups: int
) -> Tensor:
    """`select` run on positions instead of filters, for a conv whose n filters form `groups` equal
    slices that a grouped conv reads (or that are its own groups): every slice must lose the same
    positions, or the grouped conv would no longer split evenly.

    The filters at position j of every slice, concatenated, are one vector (n / groups of them);
    `select` picks count // groups positions among those, and their filters in every slice are
    returned, sorted ascending (with the L1 / L2 norms this ranks a position by its slices' norms).
    """
    if groups == 1:
        return select(weight, count)
    n = weight.shape[0]
    width = n // groups
    positions = weight.detach().reshape(groups, width, -1).transpose(0, 1).reshape(width, -1)
    chosen = select(positions, count // groups)
    return torch.sort((chosen.unsqueeze(0) + width * torch.arange(groups).unsqueeze(1)).flatten()).values


# ---------------------------------------------------------------------------------------------
# BAFD: local "adjacency" power with greedy removal and recomputation


class _KnnState:
    """Incremental k-nearest-neighbour sums over a shrinking candidate set.

    power[i] = sum of the k smallest D[i, j] over candidates j, self included (D[i, i] = 0), so
    with k = 2 it is the distance to the nearest other candidate. `spread[i]` is the tie-break
    g(i) = (1/n) * sum of D[i, j] over candidates j (the seed zeroes rows and columns of
    removed filters but keeps the denominator n).
    """

    def __init__(self, dist: Tensor, k: int) -> None:
        self.n = dist.shape[0]
        self.k = k
        self.alive = torch.ones(self.n, dtype=torch.bool, device=dist.device)
        self.masked = dist.clone()  # columns of removed filters become +inf
        self.row_sum = dist.sum(1)
        self.dist = dist
        self._refresh(torch.arange(self.n, device=dist.device))

    @property
    def size(self) -> int:
        return int(self.alive.sum())

    def _refresh(self, rows: Tensor) -> None:
        k = min(self.k, self.size)
        found = self.masked[rows].topk(k, dim=1, largest=False)
        if rows.numel() == self.n:
            self.nbr_idx, self.power = found.indices, found.values.sum(1)
        else:
            self.nbr_idx[rows, :k] = found.indices
            self.power[rows] = found.values.sum(1)

    def remove(self, i: int) -> None:
        self.alive[i] = False
        self.masked[:, i] = float("inf")
        self.row_sum -= self.dist[:, i]
        k = min(self.k, self.size)
        if k < self.nbr_idx.shape[1]:  # fewer candidates than k left: every row changes
            self.nbr_idx = self.nbr_idx[:, :k]
            self._refresh(torch.arange(self.n, device=self.dist.device))
            return
        # only rows that counted i among their neighbours need a new top-k
        stale = (self.nbr_idx == i).any(1) & self.alive
        if stale.any():
            self._refresh(stale.nonzero().flatten())

    def pick(self, most_isolated: bool) -> int:
        """The candidate with the extreme power; ties by the extreme spread, then the lower index."""
        inf = torch.tensor(float("inf"), dtype=self.power.dtype, device=self.power.device)
        if most_isolated:
            power = torch.where(self.alive, self.power, -inf)
            best = power.max()
        else:
            power = torch.where(self.alive, self.power, inf)
            best = power.min()
        tied = self.alive & torch.isclose(power, best.expand_as(power), rtol=TIE_RTOL, atol=TIE_ATOL)
        spread = self.row_sum / self.n
        if most_isolated:
            return int(torch.where(tied, spread, -inf).argmax())
        return int(torch.where(tied, spread, inf).argmin())


def bafd_greedy_remove(dist: Tensor, count: int, k: int) -> tuple[Tensor, Tensor]:
    """BAFD's REMOVE(W, p, k): remove the least isolated filter, recompute, repeat.

    dist: (n, n) filter distances. Removes up to `count` filters, and only while more than k
    candidates remain. Each step takes the candidate with the smallest local power
    (sum of distances to its k nearest candidates, self included), ties -> smallest spread.
    Because neighbourhoods are recomputed after each removal, when one member of a tight pair
    goes the other one's power jumps and it tends to survive.

    Returns (order, power): removed indices in removal order and their power at removal time.
    """
    state = _KnnState(dist, k)
    order, power = [], []
    while len(order) < count and state.size > k:
        i = state.pick(most_isolated=False)
        order.append(i)
        power.append(state.power[i].item())
        state.remove(i)
    return torch.tensor(order, dtype=torch.long), torch.tensor(power, dtype=torch.float64)


def bafd_efficient_keep(dist: Tensor, keep: int, k: int) -> Tensor:
    """BAFD's "--efficient_pruning" variant: build the KEPT set greedily instead.

    Each of `keep` passes takes the most isolated remaining candidate (largest local power,
    ties -> largest spread) and moves it to the kept set. Returns the kept indices, sorted.
    Not equivalent to greedy removal: an isolated tight pair can lose both members.
    """
    state = _KnnState(dist, k)
    kept = []
    for _ in range(keep):
        i = state.pick(most_isolated=True)
        kept.append(i)
        state.remove(i)
    return torch.sort(torch.tensor(kept, dtype=torch.long)).values


def select_bafd(
    weight: Tensor, count: int, k: int = 2, efficient: bool = False, layer_rate: float | None = None
) -> Tensor:
    """The `count` filters BAFD decays in a layer (§3.4 of the BAFD reading).

    - k < n - count: greedy removal with recomputation (default), or, when `efficient` and the
      layer's rate is above 0.5, the keep-most-isolated variant.
    - otherwise (too few survivors to have k neighbours): the `count` filters with the smallest
      summed distance to all others.

    layer_rate: the layer's fraction removed, from which count = floor(n * rate) was taken. The
    efficient branch is chosen on it, as the seed does (`compress_rate > 0.5`), not on count / n:
    the two differ when block sharing gives a rate just above 0.5 whose floor is n / 2 (ResNet-18/34
    conv1 and conv2 share (n + 1) / (2n)), and then the seed keeps other filters. None: count / n.
    """
    n = weight.shape[0]
    if count <= 0:
        return torch.zeros(0, dtype=torch.long)
    dist = pairwise_distances(weight)
    if k >= n - count:
        return smallest(distance_sums(dist), count)
    rate = count / n if layer_rate is None else layer_rate
    if efficient and rate > 0.5:
        kept = bafd_efficient_keep(dist, n - count, k)
        mask = torch.ones(n, dtype=torch.bool)
        mask[kept] = False
        return mask.nonzero().flatten()
    order, _ = bafd_greedy_remove(dist, count, k)
    return torch.sort(order).values


def bafd_layer_scores(weight: Tensor, k: int) -> Tensor:
    """Per-layer redundancy profile used to share the prune budget between layers (§3.3).

    Runs the greedy removal until k filters remain and records each removed filter's power;
    the k survivors contribute their summed distance to the other survivors. The vector is
    normalised to unit L2 norm (the seed's choice: it makes entries of wide layers smaller,
    so wide layers are pruned more). Entries belong to removal steps, not filter identities.
    Returns (n,) float64.
    """
    dist = pairwise_distances(weight)
    n = dist.shape[0]
    order, power = bafd_greedy_remove(dist, n - k, k)
    survivors = torch.ones(n, dtype=torch.bool)
    survivors[order] = False
    rest = dist[survivors][:, survivors].sum(1)
    scores = torch.cat([power, rest]).abs()
    norm = scores.norm()
    return scores / norm if norm > 0 else scores
