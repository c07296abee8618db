"""CLI tables: nothing cut on a narrow terminal, MACs in one unit per column, plain decimals."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from reidprune.cli import common
from reidprune.measure.units import macs_unit, significant

# the row `reidprune measure` prints with --speed: eleven columns
MEASURE_ROW = {
    "model": "demo_output/baseline/final",
    "params (M)": 3.79,
    "attn params (M)": 0.889,
    "GMACs": 0.0112,
    "blocks GMACs": 0.0109,
    "input": "64x32",
    "deploy": "yes",
    "img/s (b64)": 955.2,
    "latency b1 (ms)": 6.13,
    "p90 (ms)": 6.82,
}


def _printed(monkeypatch: pytest.MonkeyPatch, width: int, rows: list[dict], title: str = "cost") -> str:
    out = io.StringIO()
    monkeypatch.setattr(common, "console", Console(file=out, width=width, color_system=None))
    common.print_table(title, rows)
    return out.getvalue()


@pytest.mark.parametrize("width", [60, 80])
def test_a_wide_table_on_a_narrow_terminal_loses_nothing(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    rows = [MEASURE_ROW, {**MEASURE_ROW, "model": "demo_output/amg_40/model", "GMACs": 0.00938}]
    text = _printed(monkeypatch, width, rows)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in text
    for header in (
        "params (M)",
        "attn params (M)",
        "blocks MMACs",
        "img/s (b64)",
        "latency b1 (ms)",
        "p90 (ms)",
    ):
        assert any(header in line for line in lines), header  # every header whole, on one line
    for value in ("demo_output/baseline/final", "demo_output/amg_40/model", "11.2", "9.38", "955", "6.82"):
        assert value in text, value


def test_a_table_that_fits_stays_a_table(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _printed(monkeypatch, 200, [MEASURE_ROW])
    header = next(line for line in text.splitlines() if "params (M)" in line)
    for name in ("model", "attn params (M)", "MMACs", "blocks MMACs", "latency b1 (ms)", "p90 (ms)"):
        assert name in header
    assert "11.2" in text and "10.9" in text


def test_macs_columns_use_one_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    small = _printed(monkeypatch, 100, [{"model": "a", "GMACs": 0.0103}, {"model": "b", "GMACs": 0.00938}])
    assert "MMACs" in small and "10.3" in small and "9.38" in small and "e-0" not in small
    mixed = _printed(monkeypatch, 100, [{"model": "a", "GMACs": 0.0103}, {"model": "b", "GMACs": 4.599}])
    assert "GMACs" in mixed and "0.0103" in mixed and "4.60" in mixed and "e-0" not in mixed


def test_macs_unit() -> None:
    assert macs_unit([0.0103, 0.00938, None]) == ("MMACs", 1e3)
    assert macs_unit([0.0103, 0.1]) == ("GMACs", 1.0)
    assert macs_unit([]) == ("GMACs", 1.0)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0103, "0.0103"),
        (0.00938, "0.00938"),
        (0.0000125, "0.0000125"),
        (4.599, "4.60"),
        (9.996, "10.0"),
        (17.56, "17.6"),
        (530.2, "530"),
        (12345.6, "12,346"),
        (0.0, "0"),
        (-0.5, "-0.500"),
    ],
)
def test_significant(value: float, text: str) -> None:
    assert significant(value) == text
