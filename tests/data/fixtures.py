"""Tiny data set trees in every supported layout, with real-style file names (shared test builders).

Each builder writes small JPEGs (16 x 8 by default, a flat colour derived from the file name, so
different files differ) and returns the folder to pass as `data.root`. Other test packages get
them through the fixtures at the end of tests/conftest.py (`make_market_tree`, `market_root`,
`synth_root`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image

SIZE = (16, 8)  # (H, W)

# Market-1501: pid 4 digits, camera 1..6; -1 = junk, 0000 = distractor (gallery only)
MARKET = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000551_01.jpg",
        "0002_c2s1_000601_01.jpg",
        "0007_c1s1_000101_01.jpg",
        "0007_c3s2_001201_02.jpg",
        "0011_c6s4_002202_01.jpg",
        "0011_c5s3_004011_04.jpg",
    ],
    "bounding_box_test": [
        "-1_c1s1_000401_03.jpg",
        "0000_c3s1_000151_01.jpg",
        "0003_c2s1_000100_01.jpg",
        "0003_c4s2_000210_02.jpg",
        "0005_c1s1_000300_01.jpg",
        "0005_c6s1_000330_01.jpg",
    ],
    "query": [
        "0003_c1s1_000200_01.jpg",
        "0005_c2s1_000310_01.jpg",
    ],
}

# DukeMTMC-reID / Occluded-Duke: camera 1..8, `_f` + 7-digit frame
DUKE = {
    "bounding_box_train": [
        "0001_c2_f0046182.jpg",
        "0001_c5_f0051341.jpg",
        "0004_c8_f0000123.jpg",
        "0004_c1_f0100000.jpg",
    ],
    "bounding_box_test": ["0009_c7_f0012345.jpg", "0009_c3_f0054321.jpg", "0012_c6_f0000001.jpg"],
    "query": ["0009_c1_f0011111.jpg", "0012_c2_f0000002.jpg"],
}

# MSMT17: lists "relative/path label"; the camera is the THIRD field, two digits
MSMT_TRAIN = [("0000/0000_000_01_0303morning_0015_0.jpg", 0), ("0000/0000_001_11_0303noon_0020_1.jpg", 0)]
MSMT_VAL = [
    ("0001/0001_000_15_0304afternoon_1044_0.jpg", 1),
    ("0001/0001_003_07_0304afternoon_1100_2.jpg", 1),
]
MSMT_QUERY = [("0002/0002_000_10_0113morning_0110_0.jpg", 2)]
MSMT_GALLERY = [("0002/0002_001_03_0113morning_0300_1.jpg", 2), ("0003/0003_000_12_0114noon_0500_0.jpg", 3)]


def write_jpeg(path: Path, size: tuple[int, int] = SIZE) -> Path:
    """A small flat-colour image (JPEG, or PNG for a .png name) whose colour derives from the file name."""
    digest = hashlib.sha256(path.name.encode()).digest()
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (size[1], size[0]), (digest[0], digest[1], digest[2]))
    image.save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG", quality=90)
    return path


def write_truncated_jpeg(path: Path, size: tuple[int, int] = (32, 16)) -> Path:
    """A JPEG cut in half: the header reads, the pixels do not."""
    write_jpeg(path, size)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def market_names(pids: Iterable[int], cameras: Sequence[int], per_camera: int = 1) -> list[str]:
    """Market-1501 names for every (pid, camera, k): `PPPP_cCs1_FFFFFF_01.jpg`."""
    names = []
    for pid in pids:
        for camera in cameras:
            for k in range(per_camera):
                names.append(f"{pid:04d}_c{camera}s1_{100 * pid + 10 * camera + k:06d}_01.jpg")
    return names


def _write_layout(root: Path, layout: dict[str, list[str]], size: tuple[int, int]) -> Path:
    for folder, names in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            write_jpeg(root / folder / name, size)
    return root


def make_market_tree(
    root: str | Path,
    train: list[str] | None = None,
    gallery: list[str] | None = None,
    query: list[str] | None = None,
    size: tuple[int, int] = SIZE,
) -> Path:
    """Market-1501 layout (bounding_box_train / bounding_box_test / query) with the given file
    names (defaults: `MARKET`, including a -1 junk and a 0000 distractor image) plus a Thumbs.db
    like the real download. Returns `root`."""
    root = Path(root)
    layout = {
        "bounding_box_train": MARKET["bounding_box_train"] if train is None else train,
        "bounding_box_test": MARKET["bounding_box_test"] if gallery is None else gallery,
        "query": MARKET["query"] if query is None else query,
    }
    _write_layout(root, layout, size)
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"not an image")
    return root


def make_duke_tree(root: str | Path, size: tuple[int, int] = SIZE) -> Path:
    """DukeMTMC-reID / Occluded-Duke layout with `DUKE` names. Returns `root`."""
    return _write_layout(Path(root), DUKE, size)


def make_msmt_tree(root: str | Path, v2: bool = False, size: tuple[int, int] = SIZE) -> Path:
    """MSMT17 layout: train/ + test/ (V2: mask_train_v2/ + mask_test_v2/) and the four list files."""
    root = Path(root)
    train_dir, test_dir = ("mask_train_v2", "mask_test_v2") if v2 else ("train", "test")
    lists = {
        "list_train.txt": (train_dir, MSMT_TRAIN),
        "list_val.txt": (train_dir, MSMT_VAL),
        "list_query.txt": (test_dir, MSMT_QUERY),
        "list_gallery.txt": (test_dir, MSMT_GALLERY),
    }
    root.mkdir(parents=True, exist_ok=True)
    for list_name, (folder, entries) in lists.items():
        for relative, _ in entries:
            write_jpeg(root / folder / relative, size)
        (root / list_name).write_text("".join(f"{relative} {label}\n" for relative, label in entries))
    return root


def make_reid_folder_tree(root: str | Path, train_all: bool = True, size: tuple[int, int] = SIZE) -> Path:
    """The seeds' prepare_*.py output: pytorch/{train_all,train,val,query,gallery}/<pid>/<file>.
    Returns the parent of `pytorch/`."""
    base = Path(root) / "pytorch"
    train = {
        "0002": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg"],
        "0007": ["0007_c3s2_001201_02.jpg"],
    }
    val = {"0002": ["0002_c4s1_000700_01.jpg"], "0007": ["0007_c1s1_000101_01.jpg"]}
    gallery = {
        "-1": ["-1_c1s1_000401_03.jpg"],
        "0000": ["0000_c3s1_000151_01.jpg"],
        "0003": ["0003_c2s1_000100_01.jpg"],
        "0004": ["0004_000_12_0113morning_0300_1.jpg"],  # MSMT17-style name
    }
    query = {"0003": ["0003_c1s1_000200_01.jpg"], "0004": ["0004_001_02_0113morning_0310_0.jpg"]}
    splits = {"train": train, "val": val, "gallery": gallery, "query": query}
    if train_all:
        splits["train_all"] = {pid: train[pid] + val[pid] for pid in train}
    for split, by_pid in splits.items():
        for pid, names in by_pid.items():
            for name in names:
                write_jpeg(base / split / pid / name, size)
    return Path(root)


def make_imagefolder_tree(root: str | Path, size: tuple[int, int] = SIZE) -> Path:
    """train/<class>/*.jpg and val/<class>/*.jpg with classes cat, dog (and a nested file)."""
    root = Path(root)
    for name in (
        "train/dog/d1.jpg",
        "train/dog/d2.png",
        "train/cat/c1.jpg",
        "train/cat/more/c2.jpg",
        "val/cat/v1.jpg",
    ):
        write_jpeg(root / name, size)
    return root
