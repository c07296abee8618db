"""Plain records of a parsed data set: one `ImageRecord` per image, grouped into `DatasetSplits`.

Parsers turn a folder into records and nothing else; labels, validation hold-outs and image
decoding happen later, on these records (torchreid's separation, kept as plain data).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ImageRecord:
    """One image. pid: original identity (re-ID; 0 = distractor) or class index (classification).

    camid: 0-based camera index (0 for classification sets).
    """

    path: str
    pid: int
    camid: int


@dataclass
class DatasetSplits:
    """Every split of one data set; lists are empty where a split does not exist.

    Re-ID sets fill `train`, `query`, `gallery` and, when identities are held out for validation,
    `val_query` / `val_gallery`. Classification sets fill `train` and `val`.
    `labels` maps each training pid to its label 0..num_classes-1 (sorted pid order).
    `num_cameras` is 1 + the largest camid of a re-ID set, 0 for classification sets.
    """

    task: str  # "reid" | "classification"
    format: str
    root: str
    train: list[ImageRecord]
    query: list[ImageRecord] = field(default_factory=list)
    gallery: list[ImageRecord] = field(default_factory=list)
    val_query: list[ImageRecord] = field(default_factory=list)
    val_gallery: list[ImageRecord] = field(default_factory=list)
    val: list[ImageRecord] = field(default_factory=list)
    num_classes: int = 0
    num_cameras: int = 0
    labels: dict[int, int] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # unreadable images dropped (skip_corrupt)

    SPLIT_NAMES = ("train", "query", "gallery", "val_query", "val_gallery", "val")

    def split(self, name: str) -> list[ImageRecord]:
        if name not in self.SPLIT_NAMES:
            raise KeyError(f"unknown split '{name}'; expected one of {', '.join(self.SPLIT_NAMES)}")
        return getattr(self, name)

    def present(self) -> list[str]:
        """Names of the non-empty splits, in `SPLIT_NAMES` order."""
        return [name for name in self.SPLIT_NAMES if getattr(self, name)]


def relabel(pids: Iterable[int]) -> dict[int, int]:
    """Map the distinct pids, sorted, to 0..C-1 (sorted, so the mapping does not depend on file order)."""
    return {pid: label for label, pid in enumerate(sorted(set(pids)))}


def count(records: list[ImageRecord]) -> dict[str, int]:
    """Number of identities, images and cameras among `records`."""
    return {
        "ids": len({r.pid for r in records}),
        "images": len(records),
        "cameras": len({r.camid for r in records}),
    }
