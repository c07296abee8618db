"""Two generations of the synthetic set into one folder: the second is refused, nothing is mixed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reidprune.atomic import FolderLockedError
from reidprune.data.synth import MANIFEST, generate
from reidprune.data.synth.generate import ensure, lock


def test_a_second_generation_into_a_folder_being_written_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "set"
    with lock(out), pytest.raises(FolderLockedError, match=rf"^{out} is in use .*pid "):
        generate(out, ids=4)
    with lock(out), pytest.raises(FolderLockedError):
        ensure(out, ids=4)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no lock file or partial folder left


def test_replacing_a_generated_set_swaps_it_whole(tmp_path: Path) -> None:
    out = tmp_path / "set"
    generate(out, ids=4, seed=0)
    generate(out, ids=4, seed=1, replace=True)
    assert json.loads((out / MANIFEST).read_text())["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
