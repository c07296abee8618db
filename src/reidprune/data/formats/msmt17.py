"""MSMT17 (V1 and V2): image folders plus list files that name every image and its identity.

    <root>/train/0000/0000_000_01_0303morning_0015_0.jpg      (V2: mask_train_v2/)
    <root>/test/...                                           (V2: mask_test_v2/)
    <root>/list_train.txt, list_val.txt                        "relative/path label", under train/
    <root>/list_query.txt, list_gallery.txt                    "relative/path label", under test/

The identity is the list label; the camera is the third `_` field of the file name, two digits
(01..15), kept whole (the BAFD code keeps only its first digit). `list_val.txt` holds more images
of the training identities and joins the training split, giving the standard 32,621-image
training set; validation identities are held out by `val_ids` instead.
"""

from __future__ import annotations

from pathlib import Path

from reidprune.data.formats.common import MSMT_NAMES, find_base
from reidprune.data.records import DatasetSplits, ImageRecord
from reidprune.errors import DataError

LISTS = ("list_train.txt", "list_query.txt", "list_gallery.txt")
IMAGE_DIRS = (("train", "test"), ("mask_train_v2", "mask_test_v2"))
SUBFOLDERS = ("MSMT17_V1", "MSMT17_V2", "MSMT17", "msmt17")


def parse(root: str | Path) -> DatasetSplits:
    base = find_base(root, LISTS, SUBFOLDERS, "MSMT17")
    train_dir, test_dir = _image_dirs(base)
    train = _read_list(base / "list_train.txt", train_dir)
    if (base / "list_val.txt").is_file():
        train += _read_list(base / "list_val.txt", train_dir)
    return DatasetSplits(
        task="reid",
        format="msmt17",
        root=str(base),
        train=train,
        query=_read_list(base / "list_query.txt", test_dir),
        gallery=_read_list(base / "list_gallery.txt", test_dir),
    )


def _image_dirs(base: Path) -> tuple[Path, Path]:
    for train, test in IMAGE_DIRS:
        if (base / train).is_dir() and (base / test).is_dir():
            return base / train, base / test
    options = " or ".join(f"{a}/ + {b}/" for a, b in IMAGE_DIRS)
    raise DataError(f"MSMT17: expected image folders {options} in {base}")


def _read_list(list_file: Path, image_dir: Path) -> list[ImageRecord]:
    records = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise DataError(f"{list_file}:{number}: expected 'relative/path.jpg label', got {line!r}")
        path = image_dir / fields[0]
        if not path.is_file():
            raise DataError(f"{list_file}:{number}: image not found: {path}")
        _, camid = MSMT_NAMES.parse(path)
        records.append(ImageRecord(str(path), int(fields[1]), camid))
    if not records:
        raise DataError(f"empty split: {list_file} lists no image")
    return records
