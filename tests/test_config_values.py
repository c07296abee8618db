"""Values that fit the schema's types but mean nothing (a device name, an output path) are refused early."""

from __future__ import annotations

from pathlib import Path

import pytest

from reidprune.cli.common import describe_os_error, ensure_writable
from reidprune.config import check_device, load_config
from reidprune.errors import ConfigError


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_known_devices_pass(name: str) -> None:
    assert check_device(name) == name


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", "cuda:-1", "CPU", "", "meta"])
def test_other_devices_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"device='{name}': expected auto, cpu, cuda, cuda:N or mps"):
        check_device(name)


def test_load_config_checks_the_device() -> None:
    with pytest.raises(ConfigError, match=r"device='tpu'"):
        load_config(None, ["device=tpu"])


def test_omegaconf_messages_are_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.device=tpu"])
    assert str(info.value) == "override: key 'train.device': Key 'device' not in 'TrainConfig'"


def test_writable_paths_pass(tmp_path: Path) -> None:
    assert (
        ensure_writable(tmp_path / "new" / "deeper" / "out.json") == tmp_path / "new" / "deeper" / "out.json"
    )
    assert ensure_writable(tmp_path / "run", directory=True) == tmp_path / "run"
    assert not (tmp_path / "new").exists()  # nothing is created by the check


def test_a_path_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(
        ConfigError, match=rf"--json {tmp_path}/f/a/b.json: cannot be created, {tmp_path}/f is a file"
    ):
        ensure_writable(tmp_path / "f" / "a" / "b.json", option="--json")
    with pytest.raises(ConfigError, match=r"output_dir .*/f: expected a folder, but it is a file"):
        ensure_writable(tmp_path / "f", directory=True, option="output_dir")


def test_a_folder_that_denies_writes_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    # tests run as root, for whom permission bits do not block writes: ask `access` as a user would
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(
        ConfigError, match=r"out\.json: not writable \(permission denied or read-only file system\)"
    ):
        ensure_writable(tmp_path / "out.json")


def test_os_errors_are_described_by_their_paths() -> None:
    import errno

    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/d/m.json")) == (
        "/d/m.json: No space left on device"
    )
    assert describe_os_error(OSError(errno.EROFS, "Read-only file system", "/d/.tmp", None, "/d/m")) == (
        "/d/.tmp -> /d/m: Read-only file system"
    )
