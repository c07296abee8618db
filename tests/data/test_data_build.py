"""build_dataset: relabelling, cameras, the validation hold-out rule, unreadable images, synth."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures import make_imagefolder_tree, make_market_tree, market_names, write_truncated_jpeg

from reidprune.data import build_dataset, build_loaders
from reidprune.data.config import DataConfig
from reidprune.data.records import ImageRecord
from reidprune.data.validation import hold_out
from reidprune.errors import DataError


def test_training_pids_relabelled_in_sorted_order(tmp_path: Path) -> None:
    root = make_market_tree(tmp_path / "m")
    splits = build_dataset(DataConfig(format="market1501", root=str(root)))
    assert splits.labels == {2: 0, 7: 1, 11: 2}
    assert splits.num_classes == 3
    assert splits.num_cameras == 6  # camera c6 appears -> camids 0..5
    assert splits.val_query == splits.val_gallery == splits.val == []


def test_auto_format(tmp_path: Path) -> None:
    make_market_tree(tmp_path / "Market-1501-v15.09.15")
    splits = build_dataset(DataConfig(format="auto", root=str(tmp_path)))
    assert splits.format == "market1501" and splits.num_classes == 3


def test_validation_hold_out_rule() -> None:
    def rec(pid: int, cam: int, k: int) -> ImageRecord:
        return ImageRecord(f"/x/{pid:04d}_c{cam}_{k}.jpg", pid, cam)

    # fmt: off
    train = [
        rec(1, 0, 0), rec(1, 0, 1), rec(1, 1, 0),  # eligible: 2 cameras, 3 images
        rec(2, 0, 0), rec(2, 0, 1),  # one camera: not eligible
        rec(3, 0, 0), rec(3, 1, 0),  # 2 cameras but no gallery image left: not eligible
        rec(4, 2, 1), rec(4, 2, 0), rec(4, 0, 0), rec(4, 1, 0),  # eligible
        rec(5, 0, 0), rec(5, 1, 0), rec(5, 1, 1),  # eligible
    ]
    # fmt: on
    remaining, query, gallery = hold_out(train, 2)
    # eligible [1, 4, 5]: picks floor(0.5 * 3 / 2) = 0 -> 1 and floor(1.5 * 3 / 2) = 2 -> 5
    assert query == [rec(1, 0, 0), rec(1, 1, 0), rec(5, 0, 0), rec(5, 1, 0)]
    assert gallery == [rec(1, 0, 1), rec(5, 1, 1)]
    assert remaining == [r for r in train if r.pid in (2, 3, 4)]
    assert hold_out(train, 0) == (train, [], [])


def test_validation_split_in_build_dataset(tmp_path: Path) -> None:
    train = market_names(range(1, 9), cameras=[1, 2], per_camera=2)
    root = make_market_tree(tmp_path / "m", train=train)
    splits = build_dataset(DataConfig(format="market1501", root=str(root), val_ids=2))
    held = {r.pid for r in splits.val_query}
    # all 8 eligible: picks eligible[floor(0.5 * 8 / 2)] = 3 and eligible[floor(1.5 * 8 / 2)] = 7
    assert held == {r.pid for r in splits.val_gallery} == {3, 7}
    assert len(splits.val_query) == 4 and len(splits.val_gallery) == 4
    assert splits.labels == {1: 0, 2: 1, 4: 2, 5: 3, 6: 4, 8: 5}
    assert not held & {r.pid for r in splits.train}


def test_too_many_validation_ids(tmp_path: Path) -> None:
    root = make_market_tree(tmp_path / "m")
    with pytest.raises(DataError, match=r"data\.val_ids=3: the training split has only 3 identities"):
        build_dataset(DataConfig(format="market1501", root=str(root), val_ids=3))
    with pytest.raises(
        DataError, match=r"data\.val_ids=2: only 1 training identities are seen by >= 2 cameras"
    ):
        build_dataset(DataConfig(format="market1501", root=str(root), val_ids=2))


def test_classification_splits(tmp_path: Path) -> None:
    root = make_imagefolder_tree(tmp_path / "cls")
    splits = build_dataset(DataConfig(format="imagefolder", root=str(root)))
    assert (splits.num_classes, splits.num_cameras, splits.labels) == (2, 0, {0: 0, 1: 1})
    with pytest.raises(DataError, match=r"imagefolder sets validate on their own val/ split"):
        build_dataset(DataConfig(format="imagefolder", root=str(root), val_ids=1))


def test_unknown_format_in_config(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.format='market': expected one of market1501"):
        build_dataset(DataConfig(format="market", root=str(tmp_path)))


def test_skip_corrupt_drops_unreadable_images_with_a_warning(tmp_path: Path) -> None:
    root = make_market_tree(tmp_path / "m")
    bad = write_truncated_jpeg(root / "bounding_box_test" / "0005_c2s1_000999_01.jpg")
    cfg = DataConfig(format="market1501", root=str(root), skip_corrupt=True)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\) .*0005_c2s1_000999_01\.jpg"):
        splits = build_dataset(cfg)
    assert splits.skipped == [str(bad)]
    assert str(bad) not in {r.path for r in splits.gallery}
    assert len(splits.gallery) == 5


def test_corrupt_image_without_skip_fails_when_cached(tmp_path: Path) -> None:
    root = make_market_tree(tmp_path / "m")
    write_truncated_jpeg(root / "bounding_box_train" / "0002_c3s1_000999_01.jpg")
    cfg = DataConfig(
        format="market1501", root=str(root), height=32, width=16, num_workers=0, batch_size=2, num_instances=1
    )
    splits = build_dataset(cfg)  # not decoded yet: parsing only reads names
    with pytest.raises(
        DataError,
        match=r"0002_c3s1_000999_01\.jpg: corrupt or truncated image .*expected a readable JPEG/PNG",
    ):
        build_loaders(cfg, splits)


def test_corrupt_image_without_cache_fails_when_read(tmp_path: Path) -> None:
    root = make_market_tree(tmp_path / "m")
    write_truncated_jpeg(root / "query" / "0003_c3s1_000999_01.jpg")
    cfg = DataConfig(
        format="market1501",
        root=str(root),
        height=32,
        width=16,
        num_workers=0,
        cache_images=False,
        batch_size=2,
        num_instances=1,
    )
    loaders = build_loaders(cfg, build_dataset(cfg))
    assert loaders.query is not None
    with pytest.raises(DataError, match=r"0003_c3s1_000999_01\.jpg: corrupt or truncated image"):
        list(loaders.query)


def test_synth_generated_when_missing_and_checked_when_present(tmp_path: Path) -> None:
    root = tmp_path / "synth"
    cfg = DataConfig(format="synth", root=str(root), synth_ids=4, synth_seed=1)
    splits = build_dataset(cfg)
    assert splits.format == "synth" and splits.num_classes == 2 and splits.num_cameras <= 6
    assert (root / "synth.json").is_file()
    assert build_dataset(cfg).train == splits.train  # second call reads the existing set
    other = DataConfig(format="synth", root=str(root), synth_ids=4, synth_seed=1, synth_occluded=True)
    with pytest.raises(
        DataError, match=r"was generated with .*'occluded': False.*asks for .*'occluded': True"
    ):
        build_dataset(other)


def test_synth_refuses_a_foreign_folder(tmp_path: Path) -> None:
    root = make_market_tree(tmp_path / "m")
    with pytest.raises(
        DataError, match=r"without synth\.json; it was not generated by reidprune: use format=market1501"
    ):
        build_dataset(DataConfig(format="synth", root=str(root)))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(DataError, match=r"is not empty and holds no generated set"):
        build_dataset(DataConfig(format="synth", root=str(tmp_path / "notes")))
