"""Layout parsers: the exact records each real layout yields, format detection, and bad layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures import (
    make_duke_tree,
    make_imagefolder_tree,
    make_market_tree,
    make_msmt_tree,
    make_reid_folder_tree,
    write_jpeg,
)

from reidprune.data.formats import detect_layout, parse
from reidprune.data.records import ImageRecord
from reidprune.errors import DataError


def records(root: Path, *entries: tuple[str, int, int]) -> list[ImageRecord]:
    return [ImageRecord(str(root / path), pid, camid) for path, pid, camid in entries]


def test_market_records_drop_junk_keep_distractors(tmp_path: Path) -> None:
    root = make_market_tree(tmp_path / "market")
    splits = parse("market1501", root)
    assert splits.task == "reid" and splits.root == str(root)
    assert splits.train == records(
        root,
        ("bounding_box_train/0002_c1s1_000451_03.jpg", 2, 0),
        ("bounding_box_train/0002_c2s1_000551_01.jpg", 2, 1),
        ("bounding_box_train/0002_c2s1_000601_01.jpg", 2, 1),
        ("bounding_box_train/0007_c1s1_000101_01.jpg", 7, 0),
        ("bounding_box_train/0007_c3s2_001201_02.jpg", 7, 2),
        ("bounding_box_train/0011_c5s3_004011_04.jpg", 11, 4),
        ("bounding_box_train/0011_c6s4_002202_01.jpg", 11, 5),
    )
    # -1 junk dropped, 0000 distractor kept, Thumbs.db ignored
    assert splits.gallery == records(
        root,
        ("bounding_box_test/0000_c3s1_000151_01.jpg", 0, 2),
        ("bounding_box_test/0003_c2s1_000100_01.jpg", 3, 1),
        ("bounding_box_test/0003_c4s2_000210_02.jpg", 3, 3),
        ("bounding_box_test/0005_c1s1_000300_01.jpg", 5, 0),
        ("bounding_box_test/0005_c6s1_000330_01.jpg", 5, 5),
    )
    assert splits.query == records(
        root, ("query/0003_c1s1_000200_01.jpg", 3, 0), ("query/0005_c2s1_000310_01.jpg", 5, 1)
    )


def test_market_found_in_its_download_folder(tmp_path: Path) -> None:
    make_market_tree(tmp_path / "Market-1501-v15.09.15")
    assert parse("market1501", tmp_path).root == str(tmp_path / "Market-1501-v15.09.15")


def test_duke_records(tmp_path: Path) -> None:
    root = make_duke_tree(tmp_path / "duke")
    splits = parse("dukemtmc", root)
    assert splits.train == records(
        root,
        ("bounding_box_train/0001_c2_f0046182.jpg", 1, 1),
        ("bounding_box_train/0001_c5_f0051341.jpg", 1, 4),
        ("bounding_box_train/0004_c1_f0100000.jpg", 4, 0),
        ("bounding_box_train/0004_c8_f0000123.jpg", 4, 7),
    )
    assert splits.query == records(
        root, ("query/0009_c1_f0011111.jpg", 9, 0), ("query/0012_c2_f0000002.jpg", 12, 1)
    )
    assert [r.camid for r in splits.gallery] == [2, 6, 5]  # sorted by path: 0009_c3, 0009_c7, 0012_c6


def test_occluded_duke_in_its_folder(tmp_path: Path) -> None:
    make_duke_tree(tmp_path / "Occluded_Duke")
    splits = parse("occluded_duke", tmp_path)
    assert splits.format == "occluded_duke"
    assert splits.root == str(tmp_path / "Occluded_Duke")
    assert len(splits.train) == 4 and len(splits.gallery) == 3 and len(splits.query) == 2


def test_msmt17_two_digit_cameras_and_val_in_train(tmp_path: Path) -> None:
    root = make_msmt_tree(tmp_path / "MSMT17_V1")
    splits = parse("msmt17", root)
    assert splits.train == records(
        root,
        ("train/0000/0000_000_01_0303morning_0015_0.jpg", 0, 0),
        ("train/0000/0000_001_11_0303noon_0020_1.jpg", 0, 10),
        ("train/0001/0001_000_15_0304afternoon_1044_0.jpg", 1, 14),
        ("train/0001/0001_003_07_0304afternoon_1100_2.jpg", 1, 6),
    )
    assert splits.query == records(root, ("test/0002/0002_000_10_0113morning_0110_0.jpg", 2, 9))
    assert splits.gallery == records(
        root,
        ("test/0002/0002_001_03_0113morning_0300_1.jpg", 2, 2),
        ("test/0003/0003_000_12_0114noon_0500_0.jpg", 3, 11),
    )


def test_msmt17_v2_folders(tmp_path: Path) -> None:
    root = make_msmt_tree(tmp_path / "MSMT17_V2", v2=True)
    splits = parse("msmt17", tmp_path)
    assert splits.train[0].path == str(root / "mask_train_v2/0000/0000_000_01_0303morning_0015_0.jpg")
    assert splits.query[0].path == str(root / "mask_test_v2/0002/0002_000_10_0113morning_0110_0.jpg")


def test_reid_folder_uses_train_all_pid_folders_and_file_cameras(tmp_path: Path) -> None:
    make_reid_folder_tree(tmp_path)
    base = tmp_path / "pytorch"
    splits = parse("reid_folder", tmp_path)
    assert splits.root == str(base)
    assert splits.train == records(
        base,
        ("train_all/0002/0002_c1s1_000451_03.jpg", 2, 0),
        ("train_all/0002/0002_c2s1_000551_01.jpg", 2, 1),
        ("train_all/0002/0002_c4s1_000700_01.jpg", 2, 3),
        ("train_all/0007/0007_c1s1_000101_01.jpg", 7, 0),
        ("train_all/0007/0007_c3s2_001201_02.jpg", 7, 2),
    )
    assert splits.gallery == records(  # -1 folder dropped, 0000 kept, MSMT17-style camera 12
        base,
        ("gallery/0000/0000_c3s1_000151_01.jpg", 0, 2),
        ("gallery/0003/0003_c2s1_000100_01.jpg", 3, 1),
        ("gallery/0004/0004_000_12_0113morning_0300_1.jpg", 4, 11),
    )
    assert splits.query == records(
        base,
        ("query/0003/0003_c1s1_000200_01.jpg", 3, 0),
        ("query/0004/0004_001_02_0113morning_0310_0.jpg", 4, 1),
    )


def test_reid_folder_without_train_all_joins_train_and_val(tmp_path: Path) -> None:
    make_reid_folder_tree(tmp_path, train_all=False)
    splits = parse("reid_folder", tmp_path / "pytorch")
    assert sorted(Path(r.path).name for r in splits.train) == [
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000551_01.jpg",
        "0002_c4s1_000700_01.jpg",
        "0007_c1s1_000101_01.jpg",
        "0007_c3s2_001201_02.jpg",
    ]


def test_imagefolder_classes_sorted_and_nested_files(tmp_path: Path) -> None:
    root = make_imagefolder_tree(tmp_path / "cls")
    splits = parse("imagefolder", root)
    assert splits.task == "classification"
    assert splits.class_names == ["cat", "dog"]
    assert splits.train == records(
        root,
        ("train/cat/c1.jpg", 0, 0),
        ("train/cat/more/c2.jpg", 0, 0),
        ("train/dog/d1.jpg", 1, 0),
        ("train/dog/d2.png", 1, 0),
    )
    assert splits.val == records(root, ("val/cat/v1.jpg", 0, 0))


@pytest.mark.parametrize(
    ("builder", "where", "expected"),
    [
        (make_market_tree, "Market-1501-v15.09.15", "market1501"),
        (make_duke_tree, "DukeMTMC-reID", "dukemtmc"),
        (make_duke_tree, "Occluded_Duke", "occluded_duke"),
        (make_msmt_tree, "MSMT17_V1", "msmt17"),
        (make_reid_folder_tree, ".", "reid_folder"),
        (make_imagefolder_tree, ".", "imagefolder"),
    ],
)
def test_detect_format(tmp_path: Path, builder, where: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    builder(tmp_path / where)
    assert detect_layout(tmp_path) == expected


def test_detect_failure_lists_what_was_sought(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(
        DataError,
        match=r"cannot tell the data set format of .*list_train\.txt.*bounding_box_train/.*query/ \+ gallery/.*train/ \+ val/",
    ):
        detect_layout(tmp_path)


def test_detect_market_with_the_seeds_pytorch_folder_is_ambiguous(tmp_path: Path) -> None:
    """BAFD's prepare_market.py writes pytorch/ inside the Market folder: two readings of one set."""
    root = make_market_tree(tmp_path / "Market-1501-v15.09.15")
    make_reid_folder_tree(root)
    with pytest.raises(
        DataError,
        match=r"fits more than one data set format: market1501 \(.*Market-1501-v15\.09\.15\), "
        r"reid_folder \(.*pytorch\); pass the format explicitly \(--data-format / data.format: one of market1501,",
    ):
        detect_layout(root)


def test_detect_two_data_sets_in_one_folder_is_ambiguous(tmp_path: Path) -> None:
    make_market_tree(tmp_path / "Market-1501-v15.09.15")
    make_msmt_tree(tmp_path / "MSMT17_V1")
    with pytest.raises(DataError, match=r"fits more than one data set format: market1501 .*, msmt17 "):
        detect_layout(tmp_path)


def test_detect_duke_names_in_a_folder_named_neither_is_ambiguous(tmp_path: Path) -> None:
    """DukeMTMC-reID and Occluded-Duke share names and layout: only the folder name tells them apart."""
    root = make_duke_tree(tmp_path / "person_data")
    with pytest.raises(DataError, match=r"fits more than one data set format: dukemtmc .*, occluded_duke "):
        detect_layout(root)
    assert detect_layout(make_duke_tree(tmp_path / "my_occluded_copy")) == "occluded_duke"


# ---- bad input: one clear error naming the path / value and what was expected ----


def test_missing_split_folder_is_named(tmp_path: Path) -> None:
    root = make_market_tree(tmp_path / "m")
    (root / "query" / "0003_c1s1_000200_01.jpg").unlink()
    (root / "query" / "0005_c2s1_000310_01.jpg").unlink()
    (root / "query").rmdir()
    with pytest.raises(DataError, match=r"Market-1501: expected .*query.*missing query"):
        parse("market1501", root)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data set folder not found: .*nowhere"):
        parse("dukemtmc", tmp_path / "nowhere")


def test_empty_split(tmp_path: Path) -> None:
    root = make_market_tree(tmp_path / "m", query=[])
    with pytest.raises(DataError, match=r"empty split: no .* images in .*query .*0002_c1s1_000451_03\.jpg"):
        parse("market1501", root)


def test_split_of_only_junk_is_empty(tmp_path: Path) -> None:
    root = make_market_tree(tmp_path / "m", query=["-1_c1s1_000401_03.jpg"])
    with pytest.raises(DataError, match=r"query holds only junk images \(pid -1\)"):
        parse("market1501", root)


def test_file_name_off_scheme_is_named(tmp_path: Path) -> None:
    root = make_market_tree(tmp_path / "m")
    write_jpeg(root / "query" / "person_3.jpg")
    with pytest.raises(
        DataError, match=r"person_3\.jpg: file name does not follow the Market-1501 naming scheme"
    ):
        parse("market1501", root)


def test_duke_name_in_market_folder_is_refused(tmp_path: Path) -> None:
    root = make_market_tree(tmp_path / "m", query=["0009_c1_f0011111.jpg"])
    with pytest.raises(DataError, match=r"0009_c1_f0011111\.jpg: .*Market-1501.*0002_c1s1_000451_03\.jpg"):
        parse("market1501", root)


def test_camera_out_of_range(tmp_path: Path) -> None:
    root = make_market_tree(tmp_path / "m", query=["0003_c7s1_000200_01.jpg"])
    with pytest.raises(DataError, match=r"camera 7 is outside Market-1501's cameras 1\.\.6"):
        parse("market1501", root)


def test_msmt_bad_list_line(tmp_path: Path) -> None:
    root = make_msmt_tree(tmp_path / "msmt")
    (root / "list_query.txt").write_text("0002/0002_000_10_0113morning_0110_0.jpg\n")
    with pytest.raises(DataError, match=r"list_query\.txt:1: expected 'relative/path\.jpg label'"):
        parse("msmt17", root)


def test_msmt_listed_image_missing(tmp_path: Path) -> None:
    root = make_msmt_tree(tmp_path / "msmt")
    (root / "list_gallery.txt").write_text("0009/0009_000_01_0113morning_0110_0.jpg 9\n")
    with pytest.raises(DataError, match=r"list_gallery\.txt:1: image not found: .*0009_000_01"):
        parse("msmt17", root)


def test_msmt_one_digit_camera_is_refused(tmp_path: Path) -> None:
    root = make_msmt_tree(tmp_path / "msmt")
    write_jpeg(root / "test" / "0002" / "0002_000_1_0113morning_0110_0.jpg")
    (root / "list_query.txt").write_text("0002/0002_000_1_0113morning_0110_0.jpg 2\n")
    with pytest.raises(DataError, match=r"MSMT17 naming scheme .*0000_011_01_0303morning_0015_0\.jpg"):
        parse("msmt17", root)


def test_reid_folder_identity_folder_must_be_an_integer(tmp_path: Path) -> None:
    make_reid_folder_tree(tmp_path)
    write_jpeg(tmp_path / "pytorch" / "query" / "alice" / "0003_c1s1_000200_01.jpg")
    with pytest.raises(DataError, match=r"alice: identity folders must be named by the integer pid"):
        parse("reid_folder", tmp_path)


def test_reid_folder_camera_unreadable(tmp_path: Path) -> None:
    make_reid_folder_tree(tmp_path)
    write_jpeg(tmp_path / "pytorch" / "query" / "0003" / "img001.jpg")
    with pytest.raises(DataError, match=r"img001\.jpg: cannot read the camera from the file name"):
        parse("reid_folder", tmp_path)


def test_imagefolder_val_class_unknown(tmp_path: Path) -> None:
    root = make_imagefolder_tree(tmp_path / "cls")
    write_jpeg(root / "val" / "bird" / "b.jpg")
    with pytest.raises(DataError, match=r"bird: class 'bird' has no folder in train/"):
        parse("imagefolder", root)


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown data format 'cuhk03'; expected one of market1501, .*synth"):
        parse("cuhk03", tmp_path)


def test_the_old_detect_format_name_forwards_with_a_warning(tmp_path: Path) -> None:
    from reidprune.data.formats import detect_format

    with pytest.warns(DeprecationWarning, match="detect_layout"):
        assert detect_format(make_duke_tree(tmp_path / "DukeMTMC-reID")) == "dukemtmc"
