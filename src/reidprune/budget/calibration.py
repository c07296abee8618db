"""Fitting the block-cost correction of the latency model to whole-model measurements.

    fit = fit_two_point(dense=(8.0, 9.0), half=(4.5, 5.2), io=[2e5, 1e5], caps=[0.4, 0.3])
    fit.scale, fit.offset_per_io, fit.method, fit.fallback
    block ms = fit.scale * (table ms - block_offsets(fit.offset_per_io, io, caps)[b])

`dense` / `half`: (what the blocks take of the measured whole model - the whole model's time less
one runtime call, the stem and the head -, the uncalibrated sum of the blocks' table costs) for
two references of one family, the dense one and one with every internal width halved. An isolated
probe pays costs the whole graph pays less of or not at all (feeding its input and copying out its
output; ONNX Runtime also reorders them to and from its blocked NCHWc layout), and those costs do
not shrink with the widths; a single scale fitted on the dense model makes them shrink, so pruned
blocks came out too dear. Two references fix a scale AND a per-probe offset, proportional to each
block's input + output elements (`io`), so that both are predicted as measured. A block's offset
never exceeds its cheapest measured point (`caps`: no block goes negative; the other blocks then
carry the rest), and the offset never goes below 0 (a probe cannot cost less than its part of the
graph). When the references are degenerate (the half one no cheaper in the tables, or measured no
faster), when the offset would be negative or the scale absurd, or when there is no half
reference, the one-point scale of the dense reference is used; when even every block at its cap
cannot take the whole offset, the capped offsets stay and the scale fits the dense reference
(`fallback` says why, `method` which).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SCALE_RANGE = (0.1, 10.0)  # a whole graph 10x off its pieces means a broken table, not a correction


@dataclass(frozen=True)
class Fit:
    """block ms = scale * (table ms - offset_per_io * the block's input + output elements)."""

    scale: float
    offset_per_io: float = 0.0
    fallback: str | None = None  # why the two-point fit does not hold as is; None: it does

    @property
    def method(self) -> str:
        """ "two-point" (both references exact), "capped" (offset at its cap, the dense one exact) or
        "one-point" (no offset, the dense one exact)."""
        if self.fallback is None:
            return "two-point"
        return "capped" if self.offset_per_io > 0 else "one-point"


def one_point(blocks_measured: float, blocks_table: float) -> float:
    """The scale that predicts the dense reference's blocks as measured (clamped to SCALE_RANGE)."""
    low, high = SCALE_RANGE
    return min(max(blocks_measured / max(blocks_table, 1e-9), low), high)


def block_offsets(per_io: float, io: Sequence[float], caps: Sequence[float]) -> list[float]:
    """Per block, the table milliseconds taken off before scaling: per_io x its I/O, at most its cap."""
    return [min(per_io * n, cap) for n, cap in zip(io, caps, strict=True)]


def _solve_per_io(total: float, io: Sequence[float], caps: Sequence[float]) -> float | None:
    """The offset per element whose capped offsets sum to `total`; None when the caps cannot hold it."""
    if total >= sum(caps):
        return None
    free, capped = float(sum(io)), 0.0
    for b in sorted(range(len(io)), key=lambda b: caps[b] / max(io[b], 1e-30)):  # blocks cap in this order
        per_io = (total - capped) / max(free, 1e-30)
        if per_io * io[b] <= caps[b]:
            return per_io
        capped, free = capped + caps[b], free - io[b]
    return None


def fit_two_point(
    dense: tuple[float, float],
    half: tuple[float, float] | None,
    io: Sequence[float],
    caps: Sequence[float],
) -> Fit:
    """Scale and offset per element that predict both references' blocks as measured (module doc).

    dense / half: (measured blocks ms, table blocks ms); io: per block its input + output elements
    (the same for both references: internal widths change neither); caps: per block its cheapest
    table point (ms), the most its offset may take."""
    if len(io) != len(caps) or not io or min(io) <= 0:
        raise ValueError(
            f"io {list(io)} and caps {list(caps)}: expected one positive I/O size and cap per block"
        )
    measured, table = dense
    fallback = one_point(measured, table)
    if half is None:
        return Fit(fallback, 0.0, "no half-width reference measured")
    measured_half, table_half = half
    if table - table_half <= 1e-9 * max(table, 1e-9):
        return Fit(fallback, 0.0, "the half-width reference is no cheaper in the tables")
    if measured - measured_half <= 0:
        return Fit(fallback, 0.0, "the half-width reference was measured no faster than the dense one")
    scale = (measured - measured_half) / (table - table_half)
    total = table - measured / scale  # what the isolated blocks pay extra, in table ms, over all blocks
    if total < 0:
        return Fit(
            fallback, 0.0, f"negative offset {total:.4g} ms (isolated blocks cheaper than in the graph)"
        )
    low, high = SCALE_RANGE
    if not low <= scale <= high:
        return Fit(fallback, 0.0, f"two-point scale {scale:.4g} outside [{low:g}, {high:g}]")
    per_io = _solve_per_io(total, io, caps)
    if per_io is None:  # every block at its cap; the scale then fits the dense reference
        full = max(c / n for c, n in zip(caps, io, strict=True))
        capped = one_point(measured, table - sum(caps))
        return Fit(
            capped, full, f"offset {total:.4g} ms exceeds the blocks' cheapest points ({sum(caps):.4g} ms)"
        )
    return Fit(scale, per_io)
