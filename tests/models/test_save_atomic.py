"""`save` replaces a model folder as a whole: a crash half-way leaves the old model loadable."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from reidprune import atomic
from reidprune.models import create, load, save
from reidprune.models.serialization import MODEL_JSON, WEIGHTS


def _tiny(depth: int):
    return create("vit_tiny_reid", depth=depth, img_size=[32, 16], num_classes=3, embed_dim=32, head_dim=16)


def _crash_on_call(monkeypatch, number: int) -> None:
    """os.replace raises on its `number`-th call (1-based), as if the process died there."""
    calls = {"n": 0}
    real = os.replace

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == number:
            raise OSError("simulated crash")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def _assert_is(loaded, model) -> None:
    assert loaded.arch == model.arch
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_save_that_fails_at_either_rename_leaves_the_old_model_intact(tmp_path, monkeypatch, crash_at):
    old, new = _tiny(1), _tiny(2)
    save(old, tmp_path / "m")
    # the rename-based path (file systems that cannot swap two folders in one step)
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    _crash_on_call(monkeypatch, crash_at)
    with pytest.raises(OSError, match="simulated crash"):
        save(new, tmp_path / "m")
    monkeypatch.undo()
    _assert_is(load(tmp_path / "m"), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left behind


def test_a_save_that_fails_while_writing_leaves_the_old_model_intact(tmp_path, monkeypatch):
    old, new = _tiny(1), _tiny(2)
    save(old, tmp_path / "m")

    def broken_dumps(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("reidprune.models.serialization.json.dumps", broken_dumps)
    with pytest.raises(OSError, match="disk full"):
        save(new, tmp_path / "m")
    monkeypatch.undo()
    _assert_is(load(tmp_path / "m"), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_saving_over_a_model_replaces_it_and_keeps_other_files(tmp_path):
    old, new = _tiny(1), _tiny(2)
    save(old, tmp_path / "m")
    (tmp_path / "m" / "notes.txt").write_text("keep me")
    save(new, tmp_path / "m")
    _assert_is(load(tmp_path / "m"), new)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [MODEL_JSON, "notes.txt", WEIGHTS]
    assert (tmp_path / "m" / "notes.txt").read_text() == "keep me"


def test_both_model_files_get_the_usual_mode(tmp_path):
    previous = os.umask(0o022)
    try:
        save(_tiny(1), tmp_path / "m")
    finally:
        os.umask(previous)
    for name in (MODEL_JSON, WEIGHTS):
        assert stat.S_IMODE((tmp_path / "m" / name).stat().st_mode) == 0o644, name
