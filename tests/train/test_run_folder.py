"""A train or prune job never mixes with another run: a folder holding one is refused unless resumed
with the same config or overwritten, and a folder in use by another process is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from reidprune.atomic import FolderLockedError, folder_lock
from reidprune.cli import _register, app
from reidprune.config import ExperimentConfig, load_config, save_config
from reidprune.errors import ConfigError
from reidprune.jobs.prune import prune_experiment
from reidprune.jobs.train import train_experiment
from reidprune.run_folder import prepare_output_dir


def _cfg(out: Path, *overrides: str) -> ExperimentConfig:
    # a data set that is not there: a job that gets past the folder checks fails at once
    return load_config(
        None, [f"output_dir={out}", "data.format=market1501", f"data.root={out}/missing", *overrides]
    )


def _old_run(out: Path) -> ExperimentConfig:
    """A finished run: its config, log, checkpoint and final model (contents do not matter here)."""
    cfg = _cfg(out, "train.lr=0.001")
    save_config(cfg, out)
    (out / "train_log.jsonl").write_text('{"event": "start"}\n')
    (out / "final").mkdir()
    (out / "final" / "model.json").write_text("{}")
    return cfg


def test_training_into_a_folder_that_holds_a_run_is_refused_and_touches_nothing(tmp_path) -> None:
    _old_run(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError) as err:
        train_experiment(_cfg(tmp_path, "train.lr=0.002"))
    assert str(err.value) == (
        f"output_dir {tmp_path} already holds a run (config.yaml, final, train_log.jsonl); pass --resume "
        "to continue it, --overwrite to replace it, or choose another output_dir"
    )
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_pruning_into_a_folder_that_holds_a_run_is_refused(tmp_path) -> None:
    _old_run(tmp_path)
    with pytest.raises(ConfigError, match=rf"^output_dir {tmp_path} already holds a run"):
        prune_experiment(
            _cfg(tmp_path, "model.weights=/some/model", "prune.method=head-entropy", "prune.rate=0.5")
        )


def test_resume_with_another_config_is_refused_naming_the_settings(tmp_path) -> None:
    _old_run(tmp_path)
    with pytest.raises(ConfigError) as err:
        prepare_output_dir(_cfg(tmp_path, "train.lr=0.002", "seed=3"), resume=True)
    assert str(err.value) == (
        f"output_dir {tmp_path}: --resume with another config than the run it holds (seed: 0 -> 3; "
        "train.lr: 0.001 -> 0.002); resume with the run's config.yaml, or pass --overwrite to replace the run"
    )


def test_resume_may_change_bookkeeping_settings(tmp_path) -> None:
    _old_run(tmp_path)
    prepare_output_dir(_cfg(tmp_path, "train.lr=0.001", "device=cpu", "train.progress=false"), resume=True)
    assert (tmp_path / "final" / "model.json").is_file()


def test_overwrite_removes_the_old_run_and_keeps_other_files(tmp_path) -> None:
    _old_run(tmp_path)
    (tmp_path / "round1").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    prepare_output_dir(_cfg(tmp_path), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_folder_with_only_unrelated_files_is_used(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    prepare_output_dir(_cfg(tmp_path))  # no error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_folder_locked_by_another_job_is_refused(tmp_path) -> None:
    with folder_lock(tmp_path):
        with pytest.raises(FolderLockedError, match=rf"^{tmp_path} is in use by another reidprune process"):
            train_experiment(_cfg(tmp_path))
        with pytest.raises(FolderLockedError, match=rf"^{tmp_path} is in use"):
            prune_experiment(
                _cfg(tmp_path, "model.weights=/some/model", "prune.method=head-entropy", "prune.rate=0.5")
            )


def test_cli_names_the_folder_in_one_line_and_offers_overwrite(tmp_path) -> None:
    _register()
    _old_run(tmp_path)
    refused = CliRunner().invoke(
        app, ["train", f"output_dir={tmp_path}", "data.format=market1501", f"data.root={tmp_path}/missing"]
    )
    assert refused.exit_code == 2
    assert f"output_dir {tmp_path} already holds a run" in " ".join(refused.output.split())  # rich wraps
    assert "Traceback" not in refused.output
    for verb in ("train", "prune"):
        assert "--overwrite" in CliRunner().invoke(app, [verb, "--help"]).output
