"""Atomic writes of files and folders, and an exclusive lock on an output folder.

The one writer every layer uses (it imports nothing of ours). A reader, or a process killed
half-way, sees either the old complete file / folder or the new complete one, never a mix:

    write_json(path, payload)                  # small files
    with temporary_file(path) as tmp:          # files written by another library (safetensors, onnx)
        save_file(tensors, str(tmp))
    with temporary_folder(directory) as tmp:   # a whole folder, swapped in at the end
        ...write files into tmp...
    with folder_lock(output_dir):              # one writer per output folder
        ...

Temporary names carry the pid and a random part, so two processes never share one. Files get the
usual mode (0666 minus the umask), not the 0600 of `tempfile.mkstemp`.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import socket
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_NAME = ".reidprune.lock"
_umask_lock = threading.Lock()


class FolderLockedError(OSError):
    """Another live process holds the output folder's lock (the message names it and the owner)."""


def temporary_name(target: Path, suffix: str = ".tmp") -> Path:
    """A hidden sibling of `target`, unique to this process and call: `.NAME.PID.RANDOM.tmp`."""
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else (PermissionError), or cannot tell
        return True
    return True


def remove_leftovers(target: Path, suffix: str = ".tmp") -> None:
    """Remove temporaries of `target` left by processes that were killed while writing it."""
    for item in target.parent.glob(f".{glob.escape(target.name)}.*{suffix}"):
        pid = item.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)


def default_file_mode() -> int:
    """0666 minus the process umask (what `open()` gives a new file)."""
    with _umask_lock:  # reading the umask means setting it; keep other threads out meanwhile
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(directory: str | Path) -> None:
    """Make a rename inside `directory` durable (no-op where folders cannot be opened / synced)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def temporary_file(target: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a unique temporary path next to `target` (ending in `suffix`, for libraries that look at
    it); when the block ends without an error, the file written there is synced, given the usual mode
    and renamed onto `target` (else it is removed)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(target, suffix)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{tmp}: nothing was written for {target}")
        _fsync_file(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, target)
    except OSError as err:
        # a write() that fails (full disk) names no file, or our hidden temporary: name the target
        if err.errno is not None and err.filename in (None, str(tmp)):
            raise OSError(err.errno, err.strerror, str(target)) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)
    remove_leftovers(target, suffix)


def write_bytes(target: str | Path, data: bytes) -> Path:
    target = Path(target)
    with temporary_file(target) as tmp:
        tmp.write_bytes(data)
    return target


def write_text(target: str | Path, text: str, encoding: str = "utf-8") -> Path:
    return write_bytes(target, text.encode(encoding))


def write_json(target: str | Path, payload: Any) -> Path:
    """`payload` as indented JSON (values JSON does not know are written as str)."""
    return write_text(target, json.dumps(payload, indent=2, default=str) + "\n")


def _backups(target: Path) -> list[Path]:
    """Old folders that `replace_folder` moved aside for `target` (`.NAME.PID.RANDOM.old`), newest first."""
    found = target.parent.glob(f".{glob.escape(target.name)}.*.old")
    return sorted(found, key=lambda path: path.stat().st_mtime, reverse=True)


def restore_interrupted(target: str | Path) -> None:
    """Put back the folder a killed `replace_folder` had moved aside, when `target` is missing.

    A process killed between replace_folder's two renames leaves no `target`, its old complete
    folder as a backup and the new complete one as a temporary; the old one is put back (the save
    that was killed never finished, so it never happened)."""
    target = Path(target)
    if target.exists() or not target.parent.is_dir():
        return
    for backup in _backups(target):
        pid = backup.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            os.replace(backup, target)
            fsync_dir(target.parent)
            return


def replace_folder(tmp: str | Path, target: str | Path) -> None:
    """Put the complete folder `tmp` in the place of `target` (which may exist, and is removed).

    The old folder is first renamed to a backup, which stays until the new folder is in place and
    is put back when that fails; a reader sees the old folder, the new one, or (between the two
    renames) none, never a mix of both. A process killed between the renames leaves the backup,
    which `restore_interrupted` puts back. (Linux's renameat2 could swap the two in one step, but
    Python has no binding for it, and calling libc through ctypes crashed the interpreter when
    OpenVINO's libraries were loaded.)
    """
    tmp, target = Path(tmp), Path(target)
    if target.exists():
        backup = temporary_name(target, ".old")
        os.replace(target, backup)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(backup, target)  # put the old folder back
            raise
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(tmp, target)
    fsync_dir(target.parent)


@contextlib.contextmanager
def temporary_folder(target: str | Path) -> Iterator[Path]:
    """Yield a new empty temporary sibling folder of `target`; when the block ends without an error it
    replaces `target` as a whole (see `replace_folder`), else it is removed."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    restore_interrupted(target)  # an earlier replace killed half-way: its old folder comes back first
    tmp = temporary_name(target, ".partial")
    tmp.mkdir()
    try:
        yield tmp
        for item in tmp.iterdir():
            if item.is_file():
                _fsync_file(item)
        fsync_dir(tmp)
        replace_folder(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    remove_leftovers(target, ".partial")


def _read_owner(path: Path) -> dict[str, Any]:
    try:
        owner = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


@contextlib.contextmanager
def folder_lock(folder: str | Path, lock_file: str | Path | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` for the duration of the block.

    The lock is `folder/.reidprune.lock` (folder created if missing) or `lock_file`, locked with flock and holding the owner's
    pid and host. A second process gets FolderLockedError naming the folder and the owner. The system
    drops a dead process's flock, so a lock file left by a killed run is taken over (with a warning).
    Released, and the file removed, when the block ends, also on error.
    """
    import fcntl  # POSIX; reidprune's writers run on Linux and macOS

    folder = Path(folder)
    path = Path(lock_file) if lock_file is not None else folder / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = _read_owner(path)
            who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
            raise FolderLockedError(
                f"{folder} is in use by another reidprune process ({who}); wait for it to finish or "
                "choose another output folder"
            ) from None
        try:  # the file we locked may have been removed by its previous owner meanwhile: lock anew
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = _read_owner(path)  # a clean release removes the file: an owner left in it was killed
    if stale.get("pid") is not None:
        warnings.warn(
            f"{folder}: taking over the lock left by pid {stale['pid']} on {stale.get('host', '?')} "
            "(that process is gone)",
            stacklevel=3,
        )
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)  # closing releases the flock
