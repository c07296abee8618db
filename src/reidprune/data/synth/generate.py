"""Write a synthetic re-ID set to disk in the Market-1501 layout and file naming.

    <out>/bounding_box_train/0007_c3s1_000412_01.jpg    training identities (half of the ids)
    <out>/bounding_box_test/...                          gallery: test identities, pid 0000
                                                         distractors, pid -1 junk crops
    <out>/query/...                                      one image per test identity and camera
    <out>/synth.json                                     the parameters it was generated with

Everything derives from the seed through independent numpy generators keyed by
(seed, purpose, number), so the files are byte-identical for the same (ids, occluded, seed),
whatever order they are written in. The set is written to a temporary sibling folder and
renamed into place at the end, so an interrupted run never leaves a half set that looks whole.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from reidprune.atomic import folder_lock, temporary_folder
from reidprune.data.synth.appearance import Camera, sample_camera, sample_person
from reidprune.data.synth.render import render
from reidprune.errors import DataError

MANIFEST = "synth.json"
VERSION = 1
NUM_CAMERAS = 6
IMAGES_PER_ID = (20, 30)  # inclusive
OCCLUDED_SHARE = 0.1  # Occluded-Duke style: ~10 % of training / gallery images are occluded too
FOLDERS = ("bounding_box_train", "bounding_box_test", "query")

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


@dataclass(frozen=True)
class SynthSpec:
    ids: int = 120
    occluded: bool = False
    seed: int = 0

    def check(self) -> None:
        if self.ids < 4:
            raise DataError(f"synth ids={self.ids}: expected >= 4 (half train, half test, >= 2 each)")
        if self.ids > 9999:
            raise DataError(f"synth ids={self.ids}: Market-1501 names hold 4-digit pids (<= 9999)")
        if self.seed < 0:
            raise DataError(f"synth seed={self.seed}: expected >= 0")


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
        jobs.append(Job(folder, name, pid, camera, occlude, len(jobs)))

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


def render_job(job: Job, spec: SynthSpec, cams: list[Camera]) -> bytes:
    """The JPEG bytes of one planned image."""
    rng = np.random.default_rng([spec.seed, _IMAGE, job.number])
    if job.pid > 0:
        person = sample_person(np.random.default_rng([spec.seed, _IDENTITY, job.pid]))
    elif job.pid == 0:
        person = sample_person(np.random.default_rng([spec.seed, _DISTRACTOR, job.number]))
    else:
        person = None if rng.random() < 0.5 else sample_person(rng)
    camera = cams[job.camera]
    occluder = np.random.default_rng([spec.seed, _OCCLUDER, job.number]) if job.occlude else None
    image = render(person, camera, rng, occluder=occluder, junk=job.pid < 0).image
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=camera.quality)
    return buffer.getvalue()


def lock(out: Path):
    """One writer per set: a lock file next to `out` (inside it would make the folder non-empty)."""
    return folder_lock(out, lock_file=out.parent / f".{out.name}.lock")


def generate(
    out: str | Path, ids: int = 120, occluded: bool = False, seed: int = 0, replace: bool = False
) -> dict:
    """Write the set into `out` (which must not exist, or be an empty folder, or with `replace` hold a
    set generated before); returns the manifest. The set is written under a temporary name and
    swapped in whole, so a killed run leaves the old folder (or none)."""
    out = Path(out)
    with lock(out):
        return _generate(out, SynthSpec(ids, occluded, seed), replace)


def _generate(out: Path, spec: SynthSpec, replace: bool = False) -> dict:
    occupied = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if occupied and not (replace and out.is_dir() and read_manifest(out) is not None):
        raise DataError(f"synth: {out} already exists and is not an empty folder")
    jobs = plan(spec)
    cams = cameras(spec.seed)
    with temporary_folder(out) as partial:
        for folder in FOLDERS:
            (partial / folder).mkdir(parents=True)
        for job in jobs:
            (partial / job.folder / job.name).write_bytes(render_job(job, spec, cams))
        manifest = {
            "generator": "reidprune.data.synth",
            "version": VERSION,
            **asdict(spec),
            "cameras": NUM_CAMERAS,
            "images": {folder: sum(j.folder == folder for j in jobs) for folder in FOLDERS},
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


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
    if not (root / "bounding_box_train").is_dir():
        with lock(root):  # two runs sharing data.root: the second waits for nothing, it is refused
            if not (root / "bounding_box_train").is_dir():
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
    wanted = {"version": VERSION, "ids": ids, "occluded": occluded, "seed": seed}
    found = {key: manifest.get(key) for key in wanted}
    if found != wanted:
        raise DataError(
            f"format=synth: {root} was generated with {found}, but the config asks for {wanted}; "
            "delete the folder or point data.root elsewhere"
        )
    return root
