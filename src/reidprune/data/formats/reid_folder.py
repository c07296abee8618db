"""The "pytorch" folder form written by the BAFD seeds' prepare_market/duke/msmt scripts.

    <root>/pytorch/{train_all,train,val,query,gallery}/<pid>/<original file name>

The folder name is the identity (Market's `-1` junk folder is dropped, `0000` distractors stay);
the camera comes from the file name (Market/Duke `0002_c1s1_...`, or MSMT17 `0000_000_01_...`).
Training uses `train_all` (every training image), else `train` + `val`, which together hold the
same images: the seeds' `val` keeps one image per identity and is not a retrieval split, so
validation identities are held out by `val_ids` instead.
"""

from __future__ import annotations

import re
from pathlib import Path

from reidprune.data.formats.common import MSMT_NAMES, find_base, list_images
from reidprune.data.records import DatasetSplits, ImageRecord
from reidprune.errors import DataError

# Market/Duke names carry the camera right after the pid (`_c3`); MSMT17 names in the third field.
_MARKET_LIKE = re.compile(r"^(?:-1|\d+)_c(?P<cam>\d+)")
_EXAMPLES = "0002_c1s1_000451_03.jpg, 0001_c2_f0046182.jpg or 0000_000_01_0303morning_0015_0.jpg"
JUNK_PID = -1


def parse(root: str | Path) -> DatasetSplits:
    base = find_base(root, ("query", "gallery"), ("pytorch",), "reid_folder")
    if (base / "train_all").is_dir():
        train = _records(base / "train_all")
    elif (base / "train").is_dir():
        train = _records(base / "train") + (_records(base / "val") if (base / "val").is_dir() else [])
    else:
        raise DataError(f"reid_folder: expected train_all/ or train/ next to query/ and gallery/ in {base}")
    return DatasetSplits(
        task="reid",
        format="reid_folder",
        root=str(base),
        train=sorted(train, key=lambda r: r.path),
        query=_records(base / "query"),
        gallery=_records(base / "gallery"),
    )


def camera_of(path: Path) -> int:
    """0-based camera index from a Market/Duke- or MSMT17-style file name."""
    match = _MARKET_LIKE.match(path.name)
    if match is not None:
        cam = int(match["cam"])
        if cam < 1:
            raise DataError(f"{path}: camera numbers start at 1, got c{cam}")
        return cam - 1
    if MSMT_NAMES.pattern.match(path.name):
        return MSMT_NAMES.parse(path)[1]
    raise DataError(f"{path}: cannot read the camera from the file name (expected names like {_EXAMPLES})")


def _records(split_dir: Path) -> list[ImageRecord]:
    records = []
    for id_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if not re.fullmatch(r"-?\d+", id_dir.name):
            raise DataError(f"{id_dir}: identity folders must be named by the integer pid (e.g. 0002)")
        pid = int(id_dir.name)
        if pid == JUNK_PID:
            continue
        records += [ImageRecord(str(path), pid, camera_of(path)) for path in list_images(id_dir)]
    if not records:
        raise DataError(
            f"empty split: no images in identity folders under {split_dir} (e.g. 0002/{_EXAMPLES.split(',')[0]})"
        )
    return records
