"""A grid of equally sized images with coloured frames and text labels, drawn as ONE picture.

Retrieval lists and token maps are tens of small images; one matplotlib axes per image makes a
figure take seconds to render, while one composed array with text on top takes a fraction of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from matplotlib.colors import to_rgb

from reidprune.report.plots import figure_png, plt

BACKGROUND = 255


@dataclass
class Mosaic:
    """rows x cols cells of (height, width) images; each cell has a `border`-pixel frame, a `header`-pixel
    text band above it and `gap` pixels around; `left` pixels on the left hold row labels."""

    rows: int
    cols: int
    height: int
    width: int
    border: int = 3
    gap: int = 6
    header: int = 30
    left: int = 0
    texts: list[tuple[float, float, str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.canvas = np.full(
            (self.rows * self.cell_h, self.left + self.cols * self.cell_w, 3), BACKGROUND, np.uint8
        )

    @property
    def cell_h(self) -> int:
        return self.header + self.height + 2 * self.border + self.gap

    @property
    def cell_w(self) -> int:
        return self.width + 2 * self.border + self.gap

    def origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left pixel (y, x) of the framed image of cell (row, col)."""
        return row * self.cell_h + self.header, self.left + col * self.cell_w

    def place(self, row: int, col: int, image: np.ndarray, frame: str | None = None) -> None:
        """Put an (height, width, 3) uint8 image into a cell, framed in colour `frame` (None = no frame)."""
        y, x = self.origin(row, col)
        b = self.border
        if frame is not None:
            self.canvas[y : y + self.height + 2 * b, x : x + self.width + 2 * b] = (
                np.asarray(to_rgb(frame)) * 255
            )
        self.canvas[y + b : y + b + self.height, x + b : x + b + self.width] = image

    def title(self, row: int, col: int, text: str, colour: str = "#222222") -> None:
        """Text centred in the header band above a cell."""
        y, x = self.origin(row, col)
        self.texts.append((x + self.border + self.width / 2, y - 2, text, colour, "bottom"))

    def row_label(self, row: int, text: str) -> None:
        y, _ = self.origin(row, 0)
        self.texts.append((self.left / 2, y + self.border + self.height / 2, text, "#222222", "center"))

    def png(self, font_size: float = 8.5, scale: float = 1.6) -> bytes:
        """The mosaic with its labels as PNG bytes, at `scale` output pixels per canvas pixel."""
        h, w = self.canvas.shape[:2]
        dpi = 100
        fig = plt.figure(figsize=(w * scale / dpi, h * scale / dpi), dpi=dpi)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(self.canvas, interpolation="nearest")
        for x, y, text, colour, valign in self.texts:
            ax.text(x, y, text, color=colour, fontsize=font_size, ha="center", va=valign, linespacing=1.0)
        ax.set_axis_off()
        return figure_png(fig, dpi=dpi, tight=False)
