"""The one atomic writer: unique temporary names, the usual file mode, folder swaps, folder locks."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import stat

import pytest

from reidprune import atomic
from reidprune.atomic import FolderLockedError, folder_lock, temporary_file, temporary_folder, write_json


def test_temporary_names_are_hidden_siblings_unique_per_process_and_call(tmp_path):
    target = tmp_path / "metrics.json"
    names = {atomic.temporary_name(target) for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert name.parent == tmp_path
        assert name.name.startswith(f".metrics.json.{os.getpid()}.") and name.name.endswith(".tmp")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_get_the_usual_mode_under_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        with temporary_file(tmp_path / "b.bin") as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)  # as mkstemp / some libraries do
            os.close(fd)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == mode


def test_a_failed_file_write_leaves_the_old_file_and_no_temporary(tmp_path):
    write_json(tmp_path / "a.json", {"old": True})
    with pytest.raises(RuntimeError, match="interrupted"), temporary_file(tmp_path / "a.json") as tmp:
        tmp.write_text('{"new": tr')
        raise RuntimeError("interrupted")
    assert json.loads((tmp_path / "a.json").read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.parametrize("exchange", [True, False])
def test_a_folder_is_replaced_as_a_whole(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with temporary_folder(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("a")
        (tmp / "b.txt").write_text("b")
        assert not (tmp_path / "out" / "a.txt").exists()  # nothing visible before the swap
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def _hold_lock(folder: str, ready, release) -> None:
    with folder_lock(folder):
        ready.set()
        release.wait(30)


@pytest.mark.slow  # a spawned process: a few seconds
def test_a_second_process_cannot_lock_a_locked_folder(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(FolderLockedError) as err, folder_lock(tmp_path):
            pass
        assert str(err.value).startswith(
            f"{tmp_path} is in use by another reidprune process (pid {holder.pid} "
        )
        assert "\n" not in str(err.value)
    finally:
        release.set()
        holder.join(30)
    with folder_lock(tmp_path):  # released when the owner ends
        pass
    assert not (tmp_path / atomic.LOCK_NAME).exists()


def test_the_lock_is_released_on_error(tmp_path):
    with pytest.raises(ValueError), folder_lock(tmp_path):
        raise ValueError
    with folder_lock(tmp_path):
        pass


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_warning(tmp_path):
    (tmp_path / atomic.LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": socket.gethostname()}))
    with pytest.warns(UserWarning, match="taking over the lock left by pid 999999"), folder_lock(tmp_path):
        owner = json.loads((tmp_path / atomic.LOCK_NAME).read_text())
    assert owner == {"pid": os.getpid(), "host": socket.gethostname()}


def test_a_folder_cannot_replace_a_file(tmp_path):
    (tmp_path / "out").write_text("a file")
    with (
        pytest.raises(NotADirectoryError, match="out exists and is not a folder"),
        temporary_folder(tmp_path / "out"),
    ):
        pass
    assert (tmp_path / "out").read_text() == "a file"
