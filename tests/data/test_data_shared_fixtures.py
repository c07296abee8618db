"""The conftest fixtures other test folders use to get data set trees."""

from __future__ import annotations

from pathlib import Path

from reidprune.data import build_dataset
from reidprune.data.config import DataConfig


def test_market_root_fixture(market_root: Path) -> None:
    splits = build_dataset(DataConfig(format="market1501", root=str(market_root)))
    assert sorted(splits.labels) == [2, 7, 11]


def test_make_market_tree_factory(make_market_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_market_tree(tmp_path / "x", query=["0005_c2s1_000310_01.jpg"])
    assert [p.name for p in (root / "query").iterdir()] == ["0005_c2s1_000310_01.jpg"]


def test_synth_root_fixture(synth_root: Path) -> None:
    splits = build_dataset(DataConfig(format="synth", root=str(synth_root), synth_ids=4))
    assert splits.num_classes == 2 and splits.query
