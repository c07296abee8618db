"""What every layout parser shares: finding the data set folder, listing images, file-name schemes."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reidprune.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def find_base(root: str | Path, required: Sequence[str], subfolders: Sequence[str], what: str) -> Path:
    """The folder holding all `required` entries: `root` itself or one of its known `subfolders`.

    Raises DataError naming every place looked at and what was missing there.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what}: data set folder not found: {root}")
    tried = []
    for candidate in [root, *(root / name for name in subfolders)]:
        if not candidate.is_dir():
            continue
        missing = [name for name in required if not (candidate / name).exists()]
        if not missing:
            return Path(os.path.abspath(candidate))
        tried.append(f"{candidate} (missing {', '.join(missing)})")
    also = f" or in a subfolder named {' / '.join(subfolders)}" if subfolders else ""
    raise DataError(f"{what}: expected {', '.join(required)} in {root}{also}; looked at: {'; '.join(tried)}")


def list_images(folder: Path, *, recursive: bool = False) -> list[Path]:
    """Image files (by extension, any case) in `folder`, sorted by path; other files are ignored
    (Market-1501 ships a Thumbs.db next to its images)."""
    if not folder.is_dir():
        raise DataError(f"folder not found: {folder}")
    found: list[Path] = []
    stack = [folder]
    while stack:
        current = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.is_dir() and recursive:
                    stack.append(Path(entry.path))
                elif entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS):
                    found.append(Path(entry.path))
    return sorted(found)


def require_images(folder: Path, example: str) -> list[Path]:
    """`list_images`, raising DataError when the split holds no image."""
    images = list_images(folder)
    if not images:
        raise DataError(f"empty split: no .jpg/.jpeg/.png images in {folder} (expected files like {example})")
    return images


@dataclass(frozen=True)
class NameScheme:
    """How one data set writes identity and camera into a file name.

    pattern: a regex with named groups `pid` and `cam` matched against the base name.
    cameras: the valid 1-based camera numbers (inclusive range).
    """

    dataset: str
    pattern: re.Pattern[str]
    example: str
    cameras: tuple[int, int]

    def parse(self, path: Path) -> tuple[int, int]:
        """(pid, 0-based camid) of a file, or DataError naming the file and the expected scheme."""
        match = self.pattern.match(path.name)
        if match is None:
            raise DataError(
                f"{path}: file name does not follow the {self.dataset} naming scheme "
                f"(expected names like {self.example})"
            )
        pid, cam = int(match["pid"]), int(match["cam"])
        low, high = self.cameras
        if not low <= cam <= high:
            raise DataError(f"{path}: camera {cam} is outside {self.dataset}'s cameras {low}..{high}")
        return pid, cam - 1


_EXT = r"\.(?:jpe?g|png)$"
MARKET_NAMES = NameScheme(
    "Market-1501",
    re.compile(r"^(?P<pid>-1|\d{4})_c(?P<cam>\d)s\d_\d{6}_\d{2}" + _EXT, re.IGNORECASE),
    "0002_c1s1_000451_03.jpg",
    (1, 6),
)
DUKE_NAMES = NameScheme(
    "DukeMTMC-reID",
    re.compile(r"^(?P<pid>\d{4})_c(?P<cam>\d)_f\d{7}" + _EXT, re.IGNORECASE),
    "0001_c2_f0046182.jpg",
    (1, 8),
)
# MSMT17: PID_INDEX_CAMERA_DATE+TIME_FRAME_BOX; the camera is the THIRD field, two digits (01..15).
MSMT_NAMES = NameScheme(
    "MSMT17",
    re.compile(r"^(?P<pid>\d{4})_\d+_(?P<cam>\d{2})_[0-9a-z]+_\d+_\d+" + _EXT, re.IGNORECASE),
    "0000_011_01_0303morning_0015_0.jpg",
    (1, 15),
)
