"""Monotone multilinear interpolation of measured grids (pure numbers, no timing)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from reidprune.budget.grid import interpolate, monotone
from reidprune.budget.latency import axis


def test_grid_points_come_back_and_midpoints_are_linear() -> None:
    axes = [[1, 3], [10, 20, 40]]
    values = np.array([[1.0, 2.0, 4.0], [3.0, 4.0, 8.0]])
    assert interpolate(axes, values, [3, 20]) == 4.0
    assert interpolate(axes, values, [2, 30]) == pytest.approx((3.0 + 6.0) / 2)


def test_outside_the_grid_the_edge_segment_extends_and_never_goes_below_zero() -> None:
    assert interpolate([[2, 4]], np.array([1.0, 2.0]), [6]) == pytest.approx(3.0)
    assert interpolate([[2, 4]], np.array([1.0, 2.0]), [0]) == 0.0
    assert interpolate([[2, 4]], np.array([1.0, 5.0]), [1]) == 0.0


def test_an_axis_of_one_point_is_constant() -> None:
    assert interpolate([[5], [1, 2]], np.array([[1.0, 3.0]]), [99, 1.5]) == pytest.approx(2.0)


def test_noisy_measurements_become_monotone_and_so_does_the_interpolation() -> None:
    rng = np.random.default_rng(0)
    values = np.add.outer(np.arange(5.0), np.arange(4.0)) + rng.normal(0, 1.5, (5, 4))
    fixed = monotone(values)
    assert (np.diff(fixed, axis=0) >= 0).all() and (np.diff(fixed, axis=1) >= 0).all()
    axes = [[1, 2, 4, 8, 16], [1, 2, 3, 4]]
    xs = np.linspace(1, 16, 40)
    for y in (1.0, 2.5, 4.0):
        line = [interpolate(axes, fixed, [x, y]) for x in xs]
        assert all(b >= a - 1e-12 for a, b in itertools.pairwise(line))


def test_bad_grids_are_named() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        interpolate([[2, 2]], np.array([1.0, 2.0]), [2])
    with pytest.raises(ValueError, match="grid of shape"):
        interpolate([[1, 2]], np.array([1.0, 2.0, 3.0]), [1])


def test_axis_holds_the_full_size_and_distinct_ceilings() -> None:
    assert axis(129, (0.125, 0.25, 0.5, 0.75, 1.0), 2) == [17, 33, 65, 97, 129]
    assert axis(6, (0.0, 0.5, 1.0)) == [1, 3, 6]
    assert axis(2, (0.0, 0.5, 1.0)) == [1, 2]
