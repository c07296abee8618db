"""Write a synthetic re-ID set to disk in the Market-1501 (default) or MSMT17 layout.

Market-1501 layout (`layout="market1501"`, read by the market1501 parser):

    <out>/bounding_box_train/0007_c3s1_000412_01.jpg    training identities (half of the ids)
    <out>/bounding_box_test/...                          gallery: test identities, pid 0000
                                                         distractors, pid -1 junk crops
    <out>/query/...                                      one image per test identity and camera
    <out>/synth.json                                     the parameters it was generated with

MSMT17 layout (`layout="msmt17"`, read by the msmt17 parser): the same images (no junk crops,
which MSMT17 does not have) as `train/0007/0007_000_03_0302morning_000412_0.jpg` and
`test/...`, listed with their identity in list_train.txt, list_query.txt and list_gallery.txt
(distractors under label 0, which no query has). The identities are split half / half, not
MSMT17's 1,041 / 3,060; the cameras stay 6.

Everything derives from the seed through independent numpy generators keyed by
(seed, purpose, number), so the files are byte-identical for the same (ids, occluded, seed, size,
layout), whatever order they are written in and however many worker processes write them. The
set is written to a temporary sibling folder and renamed into place at the end, so an
interrupted run never leaves a half set that looks whole.
"""

from __future__ import annotations

import functools
import io
import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from reidprune.atomic import folder_lock, temporary_folder
from reidprune.data.synth.appearance import Camera, Person, sample_camera, sample_person
from reidprune.data.synth.render import HEIGHT, WIDTH, render
from reidprune.errors import DataError

MANIFEST = "synth.json"
VERSION = 1
NUM_CAMERAS = 6
IMAGES_PER_ID = (20, 30)  # inclusive
OCCLUDED_SHARE = 0.1  # Occluded-Duke style: ~10 % of training / gallery images are occluded too
FOLDERS = ("bounding_box_train", "bounding_box_test", "query")
LAYOUTS = ("market1501", "msmt17")
# Market-1501 names hold 6-digit frame numbers; with ~32 frames per image and 6 cameras, 6,000
# identities stay below 850,000 for any seed, 7,500 would pass 999,999.
MARKET_MAX_IDS = 6000
MAX_WIDTH = 512
MAX_WORKERS = 16  # the default worker count is the number of usable CPUs, at most this
CHUNK = 64  # images per task handed to a worker: progress granularity vs per-task overhead
# MSMT17 layout: where each planned folder goes (image folder, list file); junk is left out
MSMT_SPLITS = {
    "bounding_box_train": ("train", "list_train.txt"),
    "query": ("test", "list_query.txt"),
    "bounding_box_test": ("test", "list_gallery.txt"),
}

# purposes of the seeded generators
_PLAN, _CAMERA, _IDENTITY, _DISTRACTOR, _IMAGE, _OCCLUDER = range(6)


@dataclass(frozen=True)
class Job:
    """One image to render: where it goes and what it shows (pid 0 distractor, -1 junk)."""

    folder: str
    name: str
    pid: int
    camera: int  # 0-based
    occlude: bool
    number: int  # position in the plan; keys the image's random generator
    frame: int  # the frame number in the file name


@dataclass(frozen=True)
class SynthSpec:
    """What a set is; the same spec gives the same bytes. size: (height, width) of every image."""

    ids: int = 120
    occluded: bool = False
    seed: int = 0
    size: tuple[int, int] = (HEIGHT, WIDTH)
    layout: str = "market1501"

    def check(self) -> None:
        if self.ids < 4:
            raise DataError(f"synth ids={self.ids}: expected >= 4 (half train, half test, >= 2 each)")
        if self.ids > 9999:
            raise DataError(f"synth ids={self.ids}: Market-1501 and MSMT17 names hold 4-digit pids (<= 9999)")
        if self.layout not in LAYOUTS:
            raise DataError(f"synth layout={self.layout!r}: expected one of {', '.join(LAYOUTS)}")
        if self.layout == "market1501" and self.ids > MARKET_MAX_IDS:
            raise DataError(
                f"synth ids={self.ids}: Market-1501 names hold 6-digit frame numbers, which more than "
                f"{MARKET_MAX_IDS} identities can pass; use layout msmt17"
            )
        if self.seed < 0:
            raise DataError(f"synth seed={self.seed}: expected >= 0")
        height, width = self.size
        if height != 2 * width or not 16 <= width <= MAX_WIDTH:
            raise DataError(
                f"synth size {height}x{width}: expected HEIGHTxWIDTH with height = 2 x width and width "
                f"16..{MAX_WIDTH}, e.g. 128x64 (Market-1501's crops) or 256x128"
            )


def plan(spec: SynthSpec) -> list[Job]:
    """Every image of the set, in a fixed order. Identities 1..ids, split at random into two
    halves (train / test) so pids interleave like Market's; each identity has 20-30 images over
    2-6 cameras (>= 2 per camera); per test identity and camera the first image is the query."""
    spec.check()
    rng = np.random.default_rng([spec.seed, _PLAN])
    order = rng.permutation(np.arange(1, spec.ids + 1))
    train_ids = {int(pid) for pid in order[: spec.ids // 2]}
    frames = [0] * NUM_CAMERAS
    jobs: list[Job] = []

    def add(folder: str, pid: int, camera: int, occlude: bool) -> None:
        frames[camera] += int(rng.integers(5, 60))
        pid_text = "-1" if pid < 0 else f"{pid:04d}"
        name = f"{pid_text}_c{camera + 1}s1_{frames[camera]:06d}_01.jpg"
        jobs.append(Job(folder, name, pid, camera, occlude, len(jobs), frames[camera]))

    for pid in range(1, spec.ids + 1):
        count = int(rng.integers(IMAGES_PER_ID[0], IMAGES_PER_ID[1] + 1))
        cameras = np.sort(rng.choice(NUM_CAMERAS, size=int(rng.integers(2, NUM_CAMERAS + 1)), replace=False))
        per_camera = 2 + rng.multinomial(count - 2 * len(cameras), np.full(len(cameras), 1.0 / len(cameras)))
        for camera, n in zip(cameras.tolist(), per_camera.tolist(), strict=True):
            for k in range(n):
                # drawn in both variants, so the occluded set is the plain set plus occluders
                side_occlusion = bool(rng.random() < OCCLUDED_SHARE) and spec.occluded
                if pid in train_ids:
                    add("bounding_box_train", pid, camera, side_occlusion)
                elif k == 0:
                    add("query", pid, camera, spec.occluded)
                else:
                    add("bounding_box_test", pid, camera, side_occlusion)
    for _ in range(max(2, spec.ids // 4)):  # distractors: people who are in no query
        add("bounding_box_test", 0, int(rng.integers(NUM_CAMERAS)), False)
    for _ in range(max(2, spec.ids // 8)):  # junk: bad detections, dropped by the parser
        add("bounding_box_test", -1, int(rng.integers(NUM_CAMERAS)), False)
    return jobs


def cameras(seed: int) -> list[Camera]:
    return [sample_camera(np.random.default_rng([seed, _CAMERA, c])) for c in range(NUM_CAMERAS)]


@functools.lru_cache(maxsize=4096)
def _identity(seed: int, pid: int) -> Person:
    # an identity's 20-30 images are planned next to each other: sample it once, not per image
    return sample_person(np.random.default_rng([seed, _IDENTITY, pid]))


def render_job(job: Job, spec: SynthSpec, cams: list[Camera]) -> bytes:
    """The JPEG bytes of one planned image."""
    rng = np.random.default_rng([spec.seed, _IMAGE, job.number])
    if job.pid > 0:
        person = _identity(spec.seed, job.pid)
    elif job.pid == 0:
        person = sample_person(np.random.default_rng([spec.seed, _DISTRACTOR, job.number]))
    else:
        person = None if rng.random() < 0.5 else sample_person(rng)
    camera = cams[job.camera]
    occluder = np.random.default_rng([spec.seed, _OCCLUDER, job.number]) if job.occlude else None
    image = render(person, camera, rng, occluder=occluder, junk=job.pid < 0, size=spec.size).image
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=camera.quality)
    return buffer.getvalue()


def default_workers() -> int:
    """The CPUs this process may use, at most MAX_WORKERS."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(usable, MAX_WORKERS))


def layout_paths(jobs: Sequence[Job], layout: str) -> list[tuple[Job, str]]:
    """(job, path relative to the set's folder) for every image the layout holds, in plan order."""
    if layout == "market1501":
        return [(job, f"{job.folder}/{job.name}") for job in jobs]
    shots: dict[tuple[str, int], int] = {}  # MSMT17's second field counts an identity's images
    paths = []
    for job in jobs:
        if job.pid < 0:
            continue
        folder = MSMT_SPLITS[job.folder][0]
        index = shots[folder, job.pid] = shots.get((folder, job.pid), -1) + 1
        # PID_INDEX_CAMERA_DATE+TIME_FRAME_BOX, as MSMT17 names its images
        name = f"{job.pid:04d}_{index:03d}_{job.camera + 1:02d}_0302morning_{job.frame:06d}_0.jpg"
        paths.append((job, f"{folder}/{job.pid:04d}/{name}"))
    return paths


def lock(out: Path):
    """One writer per set: a lock file next to `out` (inside it would make the folder non-empty)."""
    return folder_lock(out, lock_file=out.parent / f".{out.name}.lock")


def generate(
    out: str | Path,
    ids: int = 120,
    occluded: bool = False,
    seed: int = 0,
    *,
    size: tuple[int, int] = (HEIGHT, WIDTH),
    layout: str = "market1501",
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    replace: bool = False,
) -> dict:
    """Write the set into `out` (which must not exist, or be an empty folder, or with `replace` hold a
    set generated before); returns the manifest. The set is written under a temporary name and
    swapped in whole, so a killed run leaves the old folder (or none).

    workers: processes rendering in parallel (1: in this process); the bytes do not depend on it.
    progress: called with (images written, images in the set) after every chunk of images.
    """
    if workers < 1:
        raise DataError(f"synth workers={workers}: expected >= 1")
    spec = SynthSpec(ids, occluded, seed, tuple(size), layout)  # type: ignore[arg-type]
    out = Path(out)
    with lock(out):
        return _generate(out, spec, replace, workers, progress)


def _generate(
    out: Path,
    spec: SynthSpec,
    replace: bool = False,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    occupied = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if occupied and not (replace and out.is_dir() and read_manifest(out) is not None):
        raise DataError(f"synth: {out} already exists and is not an empty folder")
    targets = layout_paths(plan(spec), spec.layout)
    with temporary_folder(out) as partial:
        for folder in sorted({str(Path(path).parent) for _, path in targets}):
            (partial / folder).mkdir(parents=True)
        _write_images(partial, spec, targets, workers, progress)
        if spec.layout == "msmt17":
            counts = _write_msmt_lists(partial, targets)
        else:
            counts = {folder: sum(job.folder == folder for job, _ in targets) for folder in FOLDERS}
        manifest = {
            "generator": "reidprune.data.synth",
            "version": VERSION,
            **asdict(spec),
            "cameras": NUM_CAMERAS,
            "images": counts,
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _write_images(
    partial: Path,
    spec: SynthSpec,
    targets: list[tuple[Job, str]],
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    chunks = [targets[i : i + CHUNK] for i in range(0, len(targets), CHUNK)]
    done = 0
    if workers == 1 or len(chunks) == 1:
        for chunk in chunks:
            done += _render_chunk(str(partial), spec, chunk)
            if progress is not None:
                progress(done, len(targets))
        return
    # fork where the platform has it: workers start at once and need nothing re-imported (spawn
    # would re-run an unguarded `python -m reidprune` main module); the workers only use numpy
    # and Pillow, never a lock of the parent's threads
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context) as pool:
        pending = {pool.submit(_render_chunk, str(partial), spec, chunk) for chunk in chunks}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in finished:
                    done += future.result()  # re-raises a worker's error here
                    if progress is not None:
                        progress(done, len(targets))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _render_chunk(partial: str, spec: SynthSpec, chunk: list[tuple[Job, str]]) -> int:
    """Render and write one chunk of images (in a worker process or in this one); returns its size."""
    cams = cameras(spec.seed)
    for job, path in chunk:
        Path(partial, path).write_bytes(render_job(job, spec, cams))
    return len(chunk)


def _write_msmt_lists(partial: Path, targets: list[tuple[Job, str]]) -> dict[str, int]:
    """MSMT17's list files ("0007/0007_000_03_....jpg 7", relative to train/ or test/); image counts."""
    lines: dict[str, list[str]] = {name: [] for _, name in MSMT_SPLITS.values()}
    for job, path in targets:
        lines[MSMT_SPLITS[job.folder][1]].append(f"{path.split('/', 1)[1]} {job.pid}\n")
    for name, rows in lines.items():
        (partial / name).write_text("".join(rows))
    return {name: len(rows) for name, rows in lines.items()}


def read_manifest(root: str | Path) -> dict | None:
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def ensure(root: str | Path, ids: int = 120, occluded: bool = False, seed: int = 0) -> Path:
    """Generate the set into `root` when it is missing; check an existing one was made with the
    same parameters (DataError naming both otherwise)."""
    root = Path(root)
    if read_manifest(root) is None and not (root / "bounding_box_train").is_dir():
        with lock(root):  # two runs sharing data.root: the second waits for nothing, it is refused
            if read_manifest(root) is None and not (root / "bounding_box_train").is_dir():
                if root.exists() and root.is_dir() and any(root.iterdir()):
                    raise DataError(
                        f"format=synth: {root} is not empty and holds no generated set; point data.root "
                        "at an empty or missing folder"
                    )
                _generate(root, SynthSpec(ids, occluded, seed))
                return root
    manifest = read_manifest(root)
    if manifest is None:
        raise DataError(
            f"format=synth: {root} holds a Market-1501 layout without {MANIFEST}; it was not generated "
            "by reidprune: use format=market1501 to read it"
        )
    # format=synth reads the default size in the Market-1501 layout (sets made before the size
    # and layout options have neither key and are exactly that)
    default = SynthSpec()
    wanted = {
        "version": VERSION,
        "ids": ids,
        "occluded": occluded,
        "seed": seed,
        "size": list(default.size),
        "layout": default.layout,
    }
    found = {key: manifest.get(key, wanted[key] if key in ("size", "layout") else None) for key in wanted}
    if found != wanted:
        raise DataError(
            f"format=synth: {root} was generated with {found}, but the config asks for {wanted}; "
            "delete the folder or point data.root elsewhere"
        )
    return root
