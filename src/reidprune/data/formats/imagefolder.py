"""Plain ImageFolder classification: `train/<class>/*.jpg` and `val/<class>/*.jpg`.

Class indices follow the sorted class folder names of `train/` (torchvision's rule); every
class of `val/` must exist in `train/`. Records carry pid = class index and camid = 0.
"""

from __future__ import annotations

from pathlib import Path

from reidprune.data.formats.common import find_base, list_images
from reidprune.data.records import DatasetSplits, ImageRecord
from reidprune.errors import DataError


def parse(root: str | Path) -> DatasetSplits:
    base = find_base(root, ("train", "val"), (), "imagefolder")
    class_names = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    if not class_names:
        raise DataError(f"empty split: no class folders in {base / 'train'} (expected train/<class>/*.jpg)")
    index = {name: i for i, name in enumerate(class_names)}
    train = _records(base / "train", index, require_every_class=True)
    val = _records(base / "val", index, require_every_class=False)
    return DatasetSplits(
        task="classification",
        format="imagefolder",
        root=str(base),
        train=train,
        val=val,
        class_names=class_names,
    )


def _records(split_dir: Path, index: dict[str, int], *, require_every_class: bool) -> list[ImageRecord]:
    records = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if class_dir.name not in index:
            raise DataError(f"{class_dir}: class '{class_dir.name}' has no folder in train/")
        images = list_images(class_dir, recursive=True)
        if not images and require_every_class:
            raise DataError(f"empty class: no .jpg/.jpeg/.png images in {class_dir}")
        records += [ImageRecord(str(path), index[class_dir.name], 0) for path in images]
    if not records:
        raise DataError(
            f"empty split: no images in class folders under {split_dir} (expected {split_dir}/<class>/*.jpg)"
        )
    return records
