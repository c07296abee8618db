"""Layout parsers: one per data set family, each turning a folder into `DatasetSplits` records."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

from reidprune.data.formats import imagefolder, msmt17, reid_folder
from reidprune.data.formats.bounding_box import DUKEMTMC, MARKET1501, OCCLUDED_DUKE
from reidprune.data.records import DatasetSplits
from reidprune.errors import DataError

PARSERS: dict[str, Callable[[str | Path], DatasetSplits]] = {
    "market1501": MARKET1501.parse,
    "dukemtmc": DUKEMTMC.parse,
    "occluded_duke": OCCLUDED_DUKE.parse,
    "msmt17": msmt17.parse,
    "reid_folder": reid_folder.parse,
    "imagefolder": imagefolder.parse,
}
# `synth` is generated in the Market-1501 layout and read back by the Market parser.
FORMATS = (*PARSERS, "synth")


def parse(format: str, root: str | Path) -> DatasetSplits:
    """Parse `root` as `format` (one of FORMATS except synth, which `build_dataset` generates first)."""
    if format not in PARSERS:
        raise DataError(f"unknown data format '{format}'; expected one of {', '.join(FORMATS)}")
    return PARSERS[format](root)


_SUBFOLDERS = (
    *MARKET1501.subfolders,
    *DUKEMTMC.subfolders,
    *OCCLUDED_DUKE.subfolders,
    *msmt17.SUBFOLDERS,
    "pytorch",
)


def detect_layout(root: str | Path) -> str:
    """The format of the data set in `root`, from its layout (also looking one level down, in the
    usual folder names such as Market-1501-v15.09.15 or pytorch/).

    Raises DataError when no known layout is there (listing what was sought) or when the layout
    fits more than one format (listing which, and where): then the format must be given.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data set folder not found: {root}")
    found: dict[str, Path] = {}
    for folder in [root, *(root / name for name in _SUBFOLDERS)]:
        for fmt in _formats_of(folder):
            found.setdefault(fmt, folder)
    if len(found) == 1:
        return next(iter(found))
    choose = f"pass the format explicitly (--data-format / data.format: one of {', '.join(PARSERS)})"
    if found:
        where = ", ".join(f"{fmt} ({folder})" for fmt, folder in found.items())
        raise DataError(f"{root} fits more than one data set format: {where}; {choose}")
    raise DataError(
        f"cannot tell the data set format of {root}: looked for list_train.txt + list_query.txt (msmt17), "
        "bounding_box_train/ (market1501, dukemtmc, occluded_duke), query/ + gallery/ (reid_folder), "
        f"train/ + val/ (imagefolder), in it and in subfolders named {', '.join(_SUBFOLDERS)}; {choose}"
    )


def detect_format(root: str | Path) -> str:
    """Deprecated name of `detect_layout` (one release): three functions were called detect_format."""
    warnings.warn("reidprune.data.detect_format is now detect_layout", DeprecationWarning, stacklevel=2)
    return detect_layout(root)


def _formats_of(folder: Path) -> list[str]:
    """The formats whose layout `folder` has: one, or several when the layout cannot tell them apart."""
    if not folder.is_dir():
        return []
    if (folder / "list_train.txt").is_file() and (folder / "list_query.txt").is_file():
        return ["msmt17"]
    if (folder / "bounding_box_train").is_dir():
        first = next((p for p in sorted((folder / "bounding_box_train").iterdir()) if p.is_file()), None)
        if first is None or not DUKEMTMC.names.pattern.match(first.name):
            return ["market1501"]
        # DukeMTMC-reID and Occluded-Duke share names and layout; only the folder name tells them apart
        name = folder.resolve().name.lower()
        if "occluded" in name:
            return ["occluded_duke"]
        return ["dukemtmc"] if "duke" in name else ["dukemtmc", "occluded_duke"]
    if (folder / "query").is_dir() and (folder / "gallery").is_dir():
        return ["reid_folder"]
    if (folder / "train").is_dir() and (folder / "val").is_dir():
        return ["imagefolder"]
    return []
