"""Monotone piecewise-multilinear interpolation over a rectilinear grid of measured latencies.

Latency never falls when a block gets more tokens, keys, heads or channels, but single timings on
a busy machine can. `monotone` makes the grid non-decreasing along every axis (running maximum),
and multilinear interpolation of such a grid is non-decreasing in every coordinate too; outside
the grid the edge segment is extended linearly (slopes are >= 0, so that stays monotone), and the
result is never below 0.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

import numpy as np


def monotone(values: np.ndarray) -> np.ndarray:
    """`values` made non-decreasing along every axis (a running maximum, axis by axis)."""
    out = np.asarray(values, dtype=float)
    for axis in range(out.ndim):
        out = np.maximum.accumulate(out, axis=axis)
    return out


def _segment(axis: Sequence[float], x: float) -> tuple[int, float]:
    """(lower index, weight of the upper point) of the segment holding x (edge segments extend)."""
    if len(axis) == 1:
        return 0, 0.0
    i = min(max(bisect.bisect_right(axis, x) - 1, 0), len(axis) - 2)
    return i, (x - axis[i]) / (axis[i + 1] - axis[i])


def check_grid(axes: Sequence[Sequence[float]], values: np.ndarray) -> None:
    """Raise ValueError unless `values` has one entry per grid point and every axis increases."""
    if np.shape(values) != tuple(len(a) for a in axes):
        raise ValueError(f"grid of shape {np.shape(values)} for axes of lengths {[len(a) for a in axes]}")
    for axis in axes:
        if any(b <= a for a, b in itertools.pairwise(axis)):
            raise ValueError(f"grid axis {list(axis)} must be strictly increasing")


def interpolate(
    axes: Sequence[Sequence[float]], values: np.ndarray, point: Sequence[float], check: bool = True
) -> float:
    """Multilinear interpolation of `values` (shape = lengths of `axes`, each increasing) at `point`.

    check=False skips validating the grid (the caller did, once: the search calls this often)."""
    if check:
        values = np.asarray(values, dtype=float)
        check_grid(axes, values)
    if len(point) != len(axes):
        raise ValueError(f"point {list(point)} for a grid of {len(axes)} axes")
    corners = [_segment(a, float(x)) for a, x in zip(axes, point, strict=True)]
    total = 0.0
    for mask in range(1 << len(axes)):
        weight, index = 1.0, []
        for d, (i, t) in enumerate(corners):
            upper = (mask >> d) & 1
            if len(axes[d]) == 1:
                if upper:
                    weight = 0.0
                index.append(0)
                continue
            weight *= t if upper else 1.0 - t
            index.append(i + upper)
        if weight != 0.0:
            total += weight * values[tuple(index)]
    return max(0.0, float(total))
