"""The synthetic re-ID generator: layout and naming, determinism, occlusion, and its CLI."""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from reidprune.cli.data import register
from reidprune.data.formats import parse
from reidprune.data.synth import SynthSpec, ensure, generate, plan, read_manifest, render
from reidprune.data.synth.appearance import sample_camera, sample_person
from reidprune.data.synth.generate import cameras, render_job
from reidprune.errors import DataError

# the module (the package's `generate` attribute is the function of the same name)
synth_generate = importlib.import_module("reidprune.data.synth.generate")
MARKET_NAME = re.compile(r"^(-1|\d{4})_c[1-6]s1_\d{6}_01\.jpg$")


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def tiny(synth_root: Path) -> Path:
    """The session's 4-identity set from tests/conftest.py (generated with ids=4, seed=0)."""
    return synth_root


def test_market_layout_names_and_image_size(tiny: Path) -> None:
    assert sorted(p.name for p in tiny.iterdir()) == [
        "bounding_box_test",
        "bounding_box_train",
        "query",
        "synth.json",
    ]
    names = [p.name for p in tiny.rglob("*.jpg")]
    assert names and all(MARKET_NAME.match(n) for n in names)
    assert len(names) == len(set(names))
    with Image.open(next(tiny.rglob("*.jpg"))) as image:
        assert (image.format, image.size) == ("JPEG", (64, 128))


def test_splits_follow_the_market_protocol(tiny: Path) -> None:
    splits = parse("market1501", tiny)
    train_ids = {r.pid for r in splits.train}
    test_ids = {r.pid for r in splits.query}
    assert len(train_ids) == len(test_ids) == 2 and not train_ids & test_ids
    assert {r.pid for r in splits.gallery} == test_ids | {0}  # pid 0 distractors in the gallery
    assert sum(r.pid == 0 for r in splits.gallery) == 2
    junk_on_disk = list((tiny / "bounding_box_test").glob("-1_*.jpg"))  # dropped by the parser
    assert len(junk_on_disk) == 2
    per_id_camera = Counter((r.pid, r.camid) for r in splits.query)
    assert set(per_id_camera.values()) == {1}  # one query per identity and camera
    for pid in test_ids:  # the query's cameras all hold gallery images of that identity too
        assert {c for p, c in per_id_camera if p == pid} <= {r.camid for r in splits.gallery if r.pid == pid}
    counts = Counter(r.pid for r in [*splits.train, *splits.query, *splits.gallery] if r.pid > 0)
    assert all(20 <= n <= 30 for n in counts.values())


def test_same_seed_same_bytes_other_seed_other_bytes(tiny: Path, tmp_path: Path) -> None:
    generate(tmp_path / "again", ids=4, seed=0)
    generate(tmp_path / "other", ids=4, seed=1)
    assert files(tmp_path / "again") == files(tiny)
    other = files(tmp_path / "other")
    assert other.keys() != files(tiny).keys() or other != files(tiny)


def test_occluded_variant_is_the_plain_plan_with_occluded_queries() -> None:
    plain, occluded = plan(SynthSpec(6, False, 3)), plan(SynthSpec(6, True, 3))
    assert [(j.folder, j.name) for j in plain] == [(j.folder, j.name) for j in occluded]
    assert not any(j.occlude for j in plain)
    assert all(j.occlude for j in occluded if j.folder == "query")


def test_occluder_covers_20_to_50_percent_of_the_person() -> None:
    person, camera = sample_person(np.random.default_rng(1)), sample_camera(np.random.default_rng(2))
    fractions = []
    for seed in range(12):
        shot = render(person, camera, np.random.default_rng(seed), occluder=np.random.default_rng(100 + seed))
        fractions.append(shot.occluded_fraction)
        assert shot.image.shape == (128, 64, 3) and shot.image.dtype == np.uint8
        assert 0.1 < shot.person.mean() < 0.6  # the person fills part of the crop; the rest is clutter
    assert all(0.2 <= f <= 0.5 for f in fractions)
    clear = render(person, camera, np.random.default_rng(0))
    assert clear.occluded_fraction == 0.0 and not clear.occluder.any()


def test_bad_spec() -> None:
    with pytest.raises(DataError, match=r"synth ids=3: expected >= 4"):
        plan(SynthSpec(ids=3))


def test_generate_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(DataError, match=r"already exists and is not an empty folder"):
        generate(tmp_path, ids=4)


def test_cli_synth_then_info(tmp_path: Path) -> None:
    runner = CliRunner()
    app = typer.Typer()  # only the data verbs: no need to import every other verb group
    register(app)
    out = tmp_path / "set"
    result = runner.invoke(app, ["data", "synth", "--out", str(out), "--ids", "4", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert (out / "synth.json").is_file()
    again = runner.invoke(app, ["data", "synth", "--out", str(out), "--ids", "4"])
    assert again.exit_code == 2 and "pass --force to replace it" in again.output
    info = runner.invoke(app, ["data", "info", str(out)])
    assert info.exit_code == 0, info.output
    assert "market1501" in info.output and "query" in info.output
    missing = runner.invoke(app, ["data", "info", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "data set folder not found" in missing.output


# SHA-256 of the JPEG bytes of a few images of the default set (120 ids, seed 0): a query, a training
# image, a distractor (pid 0), a junk crop (pid -1), and the occluded variant's first query and a
# side-occluded gallery image. The README's accuracy figures were measured on these bytes: a
# renderer speed-up must leave them unchanged (a Pillow / libjpeg upgrade may change them too).
DEFAULT_SET_HASHES = {
    (False, 0): "9aba8fb36114b98a88adbd35acdd1f1972c1ce2014106af571b697bd050c71d4",
    (False, 26): "81cdc725b1d13343e7af516e4622e8b9164038e17194a2f8ce107197c152f487",
    (False, 1000): "4e6cd2118df088de37891e25fa3b4119d832d9269462f9303fa6d6f772f07927",
    (False, 2921): "51e11cb4fc08dcb186f50a8450d57f87d5bbd22eb0bce91bcda5dbca00abe82a",
    (False, 2951): "4802c38a5b15297c876c11091c84376380b18179399187cfa03165e2b0c8e14b",
    (True, 0): "3316a6ba7932fe568f5ffafe67ba433232018f9d51511f539f51f9c9404ed72e",
    (True, 2): "4db89fdd553ca8ff0e6dcb56690d520bcb54b59b5af340d30683b7b0e821a422",
}


def test_default_set_images_are_pinned() -> None:
    found = {}
    for occluded in (False, True):
        spec = SynthSpec(120, occluded, 0)
        jobs, cams = plan(spec), cameras(0)
        for occ, number in DEFAULT_SET_HASHES:
            if occ == occluded:
                found[occ, number] = hashlib.sha256(render_job(jobs[number], spec, cams)).hexdigest()
    assert found == DEFAULT_SET_HASHES


def test_bytes_do_not_depend_on_the_worker_count(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synth_generate, "CHUNK", 8)  # 13 chunks over 4 processes, not 2 chunks
    calls: list[tuple[int, int]] = []
    generate(
        tmp_path / "parallel",
        ids=4,
        seed=0,
        workers=4,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert files(tmp_path / "parallel") == files(tiny)  # tiny: workers=1, every file incl. synth.json
    total = sum(1 for _ in tiny.rglob("*.jpg"))
    assert len(calls) == -(-total // 8) and calls[-1] == (total, total)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert not list(tmp_path.glob(".parallel.partial-*"))  # written beside, then renamed into place


def test_manifest_records_the_settings(tiny: Path) -> None:
    manifest = read_manifest(tiny)
    assert manifest is not None
    assert {k: manifest[k] for k in ("ids", "occluded", "seed", "size", "layout")} == {
        "ids": 4,
        "occluded": False,
        "seed": 0,
        "size": [128, 64],
        "layout": "market1501",
    }


def test_256x128_is_the_same_scene_at_twice_the_resolution() -> None:
    person, camera = sample_person(np.random.default_rng(1)), sample_camera(np.random.default_rng(2))
    for seed in range(3):
        small = render(
            person, camera, np.random.default_rng(seed), occluder=np.random.default_rng(100 + seed)
        )
        large = render(
            person,
            camera,
            np.random.default_rng(seed),
            occluder=np.random.default_rng(100 + seed),
            size=(256, 128),
        )
        assert large.image.shape == (256, 128, 3)
        pooled_mask = large.person.reshape(128, 2, 64, 2).mean(axis=(1, 3))
        assert np.abs(pooled_mask - small.person).mean() < 0.02  # the person covers the same pixels
        pooled = np.asarray(Image.fromarray(large.image).resize((64, 128), Image.BOX), np.float32)
        assert np.abs(pooled - small.image).mean() < 8.0  # same colours; only the sensor noise differs
        assert 0.2 <= large.occluded_fraction <= 0.5


def test_msmt17_layout_holds_the_market_images_without_junk(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "msmt"
    manifest = generate(out, ids=4, seed=0, layout="msmt17")
    market, msmt = parse("market1501", tiny), parse("msmt17", out)
    assert len(msmt.train) == len(market.train) and len(msmt.query) == len(market.query)
    assert len(msmt.gallery) == len(market.gallery)  # junk is dropped by the Market parser too
    assert manifest["images"] == {"list_train.txt": 45, "list_query.txt": 7, "list_gallery.txt": 44}
    for split in ("train", "query", "gallery"):
        ours = sorted(Path(r.path).read_bytes() for r in getattr(msmt, split))
        theirs = sorted(Path(r.path).read_bytes() for r in getattr(market, split))
        assert ours == theirs
        assert sorted((r.pid, r.camid) for r in getattr(msmt, split)) == sorted(
            (r.pid, r.camid) for r in getattr(market, split)
        )
    first = (out / "list_train.txt").read_text().splitlines()[0]
    assert re.fullmatch(r"(\d{4})/\1_000_0[1-6]_0302morning_\d{6}_0\.jpg \d+", first)


def test_bad_size_layout_workers_and_market_id_limit(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"synth size 100x30: expected HEIGHTxWIDTH with height = 2 x width"):
        SynthSpec(size=(100, 30)).check()
    with pytest.raises(DataError, match=r"synth layout='duke': expected one of market1501, msmt17"):
        SynthSpec(layout="duke").check()
    with pytest.raises(DataError, match=r"synth workers=0: expected >= 1"):
        generate(tmp_path / "x", ids=4, workers=0)
    # 7,500 identities would pass Market's 6-digit frame numbers; MSMT17 names have no such limit
    with pytest.raises(DataError, match=r"synth ids=6001: Market-1501 names hold 6-digit frame numbers"):
        SynthSpec(ids=6001).check()
    SynthSpec(ids=6001, layout="msmt17").check()
    assert not (tmp_path / "x").exists()


def test_ensure_reads_only_the_default_size_and_layout(tiny: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(tiny, old)
    manifest = json.loads((old / "synth.json").read_text())
    del manifest["size"], manifest["layout"]  # a set written before the size and layout options
    (old / "synth.json").write_text(json.dumps(manifest))
    assert ensure(old, ids=4) == old
    small = tmp_path / "small"
    generate(small, ids=4, size=(32, 16), layout="msmt17")
    with pytest.raises(DataError, match=r"'size': \[32, 16\], 'layout': 'msmt17'\}, but the config asks for"):
        ensure(small, ids=4)


def test_cli_size_layout_workers(tmp_path: Path) -> None:
    runner = CliRunner()
    app = typer.Typer()
    register(app)
    out = tmp_path / "set"
    args = ["data", "synth", "--out", str(out), "--ids", "4", "--size", "32x16", "--layout", "msmt17"]
    result = runner.invoke(app, [*args, "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "list_query.txt" in result.output and "2 workers" in result.output
    with Image.open(next((out / "test").rglob("*.jpg"))) as image:
        assert image.size == (16, 32)
    for bad, message in [
        (["--workers", "0"], "--workers 0: expected >= 1"),
        (["--size", "256"], "--size '256': expected HEIGHTxWIDTH"),
        (["--size", "256x256"], "synth size 256x256: expected HEIGHTxWIDTH with height = 2 x width"),
        (["--layout", "duke"], "synth layout='duke'"),
    ]:
        refused = runner.invoke(app, [*args, "--force", *bad])
        assert refused.exit_code == 2 and message in " ".join(refused.output.split()), refused.output
    assert (out / "synth.json").is_file()  # a refused --force leaves the set in place


def test_a_worker_error_leaves_no_set_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail_on_image_50(job: synth_generate.Job, spec: SynthSpec, cams: list) -> bytes:  # type: ignore[type-arg]
        if job.number == 50:
            raise DataError("image 50 failed")
        return b"jpeg"

    monkeypatch.setattr(synth_generate, "render_job", fail_on_image_50)  # forked workers inherit it
    monkeypatch.setattr(synth_generate, "CHUNK", 8)
    with pytest.raises(DataError, match="image 50 failed"):
        generate(tmp_path / "set", ids=4, workers=2)
    assert list(tmp_path.iterdir()) == []  # neither the set nor its temporary sibling
