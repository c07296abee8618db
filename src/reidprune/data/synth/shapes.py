"""Anti-aliased shape drawing with numpy: signed distance fields over pixel windows.

Every shape is a signed distance (pixels, negative inside) evaluated at once over the pixels of
its bounding box (a `Patch`); `Canvas.paint` turns it into 1-pixel-soft coverage and blends a
colour (or an (H, W, 3) colour field, for patterned cloth) into that window. No per-pixel Python.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Patch:
    """A signed distance field `sdf` (h, w) over the canvas window [rows, cols]; Y (h, 1) and
    X (1, w) are that window's pixel-centre coordinates, for combining with other conditions."""

    rows: slice
    cols: slice
    Y: np.ndarray
    X: np.ndarray
    sdf: np.ndarray


class Canvas:
    """An (H, W, 3) float32 image in 0..255 plus the pixel-centre coordinate grids Y (H, 1), X (1, W)."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.Y = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
        self.X = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
        self.rgb = np.zeros((height, width, 3), np.float32)

    def window(
        self, x0: float, y0: float, x1: float, y1: float
    ) -> tuple[slice, slice, np.ndarray, np.ndarray]:
        """Pixel window covering [x0, x1] x [y0, y1] plus a 1-pixel anti-aliasing margin, clipped."""
        r0, r1 = max(0, math.floor(y0) - 1), min(self.height, math.ceil(y1) + 2)
        c0, c1 = max(0, math.floor(x0) - 1), min(self.width, math.ceil(x1) + 2)
        r1, c1 = max(r0, r1), max(c0, c1)
        return slice(r0, r1), slice(c0, c1), self.Y[r0:r1], self.X[:, c0:c1]

    def paint(self, patch: Patch, colour: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Blend `colour` ((3,) or a full-canvas (H, W, 3) field) where the patch's sdf < 0.

        mask: optional (H, W) coverage accumulator, raised to this shape's coverage in place.
        """
        if patch.sdf.size == 0:
            return
        alpha = _unit(0.5 - patch.sdf)
        colour = np.asarray(colour, np.float32)
        if colour.ndim == 3:
            colour = colour[patch.rows, patch.cols]
        region = self.rgb[patch.rows, patch.cols]
        region += (colour - region) * alpha[..., None]
        if mask is not None:
            window = mask[patch.rows, patch.cols]
            np.maximum(window, alpha, out=window)


def _unit(values: np.ndarray) -> np.ndarray:
    """`np.clip(values, 0, 1)` in place, with the same result: the ufuncs skip np.clip's Python
    wrapper, which cost more than the arithmetic on these small windows (tens of calls per image)."""
    np.maximum(values, 0.0, out=values)
    return np.minimum(values, 1.0, out=values)


def capsule(c: Canvas, ax: float, ay: float, bx: float, by: float, radius: float) -> Patch:
    """Segment (ax, ay)-(bx, by) thickened by `radius`: limbs, straps, poles."""
    rows, cols, Y, X = c.window(
        min(ax, bx) - radius, min(ay, by) - radius, max(ax, bx) + radius, max(ay, by) + radius
    )
    dx, dy = bx - ax, by - ay
    length2 = max(dx * dx + dy * dy, 1e-6)
    t = _unit(((X - ax) * dx + (Y - ay) * dy) / length2)
    return Patch(rows, cols, Y, X, np.sqrt((X - ax - t * dx) ** 2 + (Y - ay - t * dy) ** 2) - radius)


def box(c: Canvas, cx: float, cy: float, half_w: float, half_h: float) -> Patch:
    """Axis-aligned rectangle centred at (cx, cy)."""
    rows, cols, Y, X = c.window(cx - half_w, cy - half_h, cx + half_w, cy + half_h)
    return Patch(rows, cols, Y, X, np.maximum(np.abs(X - cx) - half_w, np.abs(Y - cy) - half_h))


def ellipse(c: Canvas, cx: float, cy: float, rx: float, ry: float) -> Patch:
    """Ellipse with radii rx, ry (distance approximated by scaling the unit-circle distance)."""
    rx, ry = max(rx, 0.5), max(ry, 0.5)
    rows, cols, Y, X = c.window(cx - rx, cy - ry, cx + rx, cy + ry)
    return Patch(rows, cols, Y, X, (np.sqrt(((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2) - 1.0) * min(rx, ry))


def trapezoid(c: Canvas, cx: float, top: float, bottom: float, half_top: float, half_bottom: float) -> Patch:
    """Rows top..bottom, centred at cx, half width changing linearly from half_top to half_bottom."""
    half_max = max(half_top, half_bottom)
    rows, cols, Y, X = c.window(cx - half_max, top, cx + half_max, bottom)
    t = _unit((Y - top) / max(bottom - top, 1e-6))
    half = half_top + (half_bottom - half_top) * t
    return Patch(rows, cols, Y, X, np.maximum(np.abs(X - cx) - half, np.maximum(top - Y, Y - bottom)))


def smooth_noise(
    rng: np.random.Generator, height: int, width: int, cells: tuple[int, int], channels: int = 1
) -> np.ndarray:
    """Low-frequency noise (height, width, channels) in about [-1, 1]: a coarse random grid of
    `cells` (rows, cols) upsampled bilinearly with two small interpolation matrices."""
    coarse = rng.uniform(-1.0, 1.0, size=(channels, cells[0], cells[1])).astype(np.float32)
    fine = _interp_matrix(height, cells[0]) @ coarse @ _interp_matrix(width, cells[1]).T  # (n, H, W)
    return np.ascontiguousarray(fine.transpose(1, 2, 0))


@functools.lru_cache(maxsize=16)
def _interp_matrix(size: int, cells: int) -> np.ndarray:
    """(size, cells) bilinear interpolation weights from cell centres to pixel centres (edges clamped)."""
    pos = np.clip((np.arange(size, dtype=np.float64) + 0.5) * cells / size - 0.5, 0.0, cells - 1)
    low = np.floor(pos).astype(int)
    high = np.minimum(low + 1, cells - 1)
    frac = pos - low
    weights = np.zeros((size, cells), np.float32)
    weights[np.arange(size), low] += 1.0 - frac
    weights[np.arange(size), high] += frac
    return weights
