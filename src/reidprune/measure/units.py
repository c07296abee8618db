"""How MAC counts are shown: one unit per table column, plain decimals, 3 significant digits.

Tiny models (the demo's 64 x 32 ViT: 0.0112 GMACs) and full-size ones (DeiT-S: 4.6 GMACs) then read
alike: a column whose values are all below 0.1 G is shown in MMACs (11.2), never as a mix of
0.010 and 9.38e-03.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

MMACS_BELOW_GMACS = 0.1


def macs_unit(gmacs: Iterable[float | None]) -> tuple[str, float]:
    """("GMACs", 1.0), or ("MMACs", 1000.0) when every given value is below 0.1 GMACs; the factor
    turns GMACs into the unit. None values (not counted) are ignored."""
    values = [abs(v) for v in gmacs if v is not None]
    if values and max(values) < MMACS_BELOW_GMACS:
        return "MMACs", 1e3
    return "GMACs", 1.0


def significant(value: float, digits: int = 3) -> str:
    """`value` with `digits` significant digits in plain decimal notation (0.00938, 11.2, 4.60);
    from 10**digits on, the whole number with thousands grouped (1,235). NaN / inf as Python writes them."""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 10**digits:
        return f"{value:,.0f}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    if "." in text and decimals > 0 and len(text.lstrip("-").replace(".", "").lstrip("0")) > digits:
        text = f"{value:.{decimals - 1}f}"  # rounding carried into a new digit (9.996 -> 10.00 -> 10.0)
    return text
