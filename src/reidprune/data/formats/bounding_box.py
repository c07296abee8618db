"""Market-1501, DukeMTMC-reID and Occluded-Duke: the `bounding_box_*` layout.

    <root>/bounding_box_train/0002_c1s1_000451_03.jpg   training identities
    <root>/bounding_box_test/...                        gallery (Market: pid 0 distractors, pid -1 junk)
    <root>/query/...                                    one image per identity and camera

Junk images (pid -1) are dropped here, in every split, so they never reach training or the
metric; distractors (pid 0) stay in the gallery as negatives (torchreid's protocol).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reidprune.data.formats.common import (
    DUKE_NAMES,
    MARKET_NAMES,
    NameScheme,
    find_base,
    require_images,
)
from reidprune.data.records import DatasetSplits, ImageRecord
from reidprune.errors import DataError

FOLDERS = {"train": "bounding_box_train", "gallery": "bounding_box_test", "query": "query"}
JUNK_PID = -1


@dataclass(frozen=True)
class BoundingBoxSet:
    """One data set in the bounding_box layout: its name, naming scheme and usual folder names."""

    format: str
    names: NameScheme
    subfolders: tuple[str, ...]

    def parse(self, root: str | Path) -> DatasetSplits:
        base = find_base(root, list(FOLDERS.values()), self.subfolders, self.names.dataset)
        splits = {split: self._records(base / folder) for split, folder in FOLDERS.items()}
        return DatasetSplits(task="reid", format=self.format, root=str(base), **splits)

    def _records(self, folder: Path) -> list[ImageRecord]:
        records = []
        for path in require_images(folder, self.names.example):
            pid, camid = self.names.parse(path)
            if pid != JUNK_PID:
                records.append(ImageRecord(str(path), pid, camid))
        if not records:
            raise DataError(f"empty split: {folder} holds only junk images (pid -1)")
        return records


MARKET1501 = BoundingBoxSet("market1501", MARKET_NAMES, ("Market-1501-v15.09.15", "market1501", "Market"))
DUKEMTMC = BoundingBoxSet("dukemtmc", DUKE_NAMES, ("DukeMTMC-reID", "dukemtmc-reid", "dukemtmcreid"))
OCCLUDED_DUKE = BoundingBoxSet("occluded_duke", DUKE_NAMES, ("Occluded_Duke", "occluded_duke"))
