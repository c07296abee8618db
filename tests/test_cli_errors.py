"""Bad input and unwritable outputs end every CLI verb with one clear line and exit code 2, no traceback."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reidprune import models
from reidprune.cli import _register, app

TINY = {"depth": 1, "img_size": [32, 16], "num_classes": 2}
SYNTH = [
    "data.format=synth",
    "data.synth_ids=4",
    "data.batch_size=8",
    "data.height=32",
    "data.width=16",
    "data.num_workers=0",
]


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    _register()
    return CliRunner()


@pytest.fixture(scope="module")
def broken_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory whose weights.safetensors was cut off half-way (a full disk, a killed copy)."""
    directory = models.save(models.create("vit_tiny_reid", **TINY), tmp_path_factory.mktemp("m") / "broken")
    weights = directory / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return directory


def _one_line_error(result, *parts: str) -> str:  # type: ignore[no-untyped-def]
    """The message of a clean failure: exit code 2, no traceback, one `error:` line holding `parts`."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and result.output.endswith(lines[0] + "\n"), result.output
    message = lines[0]
    for part in parts:
        assert part in message, (part, message)
    assert "Traceback" not in result.output
    return message


def _data(synth_root: Path) -> list[str]:
    return [*SYNTH, f"data.root={synth_root}"]


# ---- a truncated weights.safetensors, in every verb that loads a model directory ----

TRUNCATED = "weights.safetensors: not a readable safetensors file, truncated or corrupt"


def test_eval_names_the_truncated_weights(runner, broken_model, synth_root) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["eval", str(broken_model), *_data(synth_root)])
    _one_line_error(result, f"{broken_model}/{TRUNCATED}")


@pytest.mark.parametrize(
    "args",
    [
        ["measure", "{model}", "--no-speed"],
        ["export", "--model", "{model}", "--out", "{tmp}/m.onnx"],
        ["bench", "{model}", "--no-onnx"],
    ],
    ids=["measure", "export", "bench"],
)
def test_model_verbs_name_the_truncated_weights(runner, broken_model, tmp_path, args) -> None:  # type: ignore[no-untyped-def]
    argv = [a.format(model=broken_model, tmp=tmp_path) for a in args]
    _one_line_error(runner.invoke(app, argv), f"{broken_model}/{TRUNCATED}")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("verb", ["train", "prune"])
def test_train_and_prune_name_the_truncated_weights(runner, broken_model, synth_root, tmp_path, verb) -> None:  # type: ignore[no-untyped-def]
    args = [verb, *_data(synth_root), f"model.weights={broken_model}", f"output_dir={tmp_path / 'run'}"]
    if verb == "prune":
        args.append("prune.method=head-entropy")
    _one_line_error(runner.invoke(app, args), f"{broken_model}/{TRUNCATED}")


def test_resume_from_an_empty_checkpoint(runner, synth_root, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"")
    args = [
        "train",
        *_data(synth_root),
        "model.kwargs={depth: 1}",
        f"output_dir={tmp_path / 'run'}",
        "--resume",
    ]
    _one_line_error(runner.invoke(app, args), "last.pt: the training checkpoint is empty (0 bytes)")


# ---- configuration values ----


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.label_smoothing=1.5", "train.label_smoothing=1.5: expected a value in [0, 1)"),
        ("train.weight_decay=-0.1", "train.weight_decay=-0.1: expected >= 0"),
        ("train.triplet_margin=-0.3", "train.triplet_margin=-0.3: expected >= 0"),
        ("device=tpu", "device='tpu': expected auto, cpu, cuda, cuda:N or mps"),
        ("train.device=tpu", "override: key 'train.device': Key 'device' not in 'TrainConfig'"),
    ],
)
def test_train_refuses_bad_settings(runner, tmp_path, override, message) -> None:  # type: ignore[no-untyped-def]
    # refused before any data is built or generated (data.root does not exist)
    args = ["train", *SYNTH, f"data.root={tmp_path / 'none'}", f"output_dir={tmp_path / 'run'}", override]
    _one_line_error(runner.invoke(app, args), message)
    assert not (tmp_path / "none").exists() and not (tmp_path / "run").exists()


def test_prune_refuses_bad_fine_tuning_settings_before_loading(runner, tmp_path) -> None:  # type: ignore[no-untyped-def]
    args = ["prune", *SYNTH, f"data.root={tmp_path / 'none'}", f"output_dir={tmp_path / 'run'}"]
    args += [
        "prune.method=head-entropy",
        "prune.rate=0.5",
        "model.weights=nowhere",
        "train.label_smoothing=1.5",
    ]
    _one_line_error(runner.invoke(app, args), "train.label_smoothing=1.5: expected a value in [0, 1)")
    assert not (tmp_path / "none").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("size", ["0", "-4"])
def test_measure_refuses_a_batch_size_below_one(runner, size) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["measure", "vit_tiny_reid", f"--batch-size={size}", "--min-time", "0.01"])
    _one_line_error(result, f"--batch-size {size}: expected >= 1")


# ---- outputs that cannot be written ----


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "plain.txt"
    path.write_text("not a folder")
    return path


def test_eval_checks_its_json_path_before_the_work(runner, a_file, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import reidprune.data

    def no_work(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the data set was built before the output path was checked")

    monkeypatch.setattr(reidprune.data, "build_dataset", no_work)
    result = runner.invoke(app, ["eval", "vit_tiny_reid", "--json", str(a_file / "out.json")])
    _one_line_error(result, f"--json {a_file}/out.json: cannot be created, {a_file} is a file, not a folder")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["measure", "vit_tiny_reid", "--no-speed", "--json", "{bad}"], "--json"),
        (["bench", "{model}", "--no-onnx", "--json", "{bad}"], "--json"),
        (["export", "--model", "{model}", "--out", "{bad}.onnx"], "--out"),
        (["report", "{model}", "--out", "{bad}"], "--out"),
        (["train", "output_dir={bad}"], "output_dir"),
        (["prune", "output_dir={bad}"], "output_dir"),
    ],
    ids=["measure", "bench", "export", "report", "train", "prune"],
)
def test_outputs_under_a_regular_file_are_refused_up_front(
    runner, a_file, broken_model, args, option
) -> None:  # type: ignore[no-untyped-def]
    # broken_model would fail on loading: the output path is checked before it is read
    bad = a_file / "sub" / "out"
    argv = [a.format(bad=bad, model=broken_model) for a in args]
    _one_line_error(runner.invoke(app, argv), f"{option} {bad}", f"{a_file} is a file, not a folder")


def test_an_existing_folder_is_not_an_output_file(runner, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["measure", "vit_tiny_reid", "--no-speed", "--json", str(tmp_path)])
    _one_line_error(result, f"--json {tmp_path}: expected a file path, but it is a folder")


def test_a_full_disk_is_one_line_naming_the_file(runner, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "out.json"

    def full(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no file name

    monkeypatch.setattr(Path, "write_text", full)
    monkeypatch.setattr(Path, "write_bytes", full)  # the atomic writer's temporary file
    result = runner.invoke(app, ["measure", "vit_tiny_reid", "--no-speed", "--json", str(target)])
    _one_line_error(result, f"{target}: No space left on device")


def test_an_os_error_without_a_path_keeps_its_traceback(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import typer

    from reidprune.cli.common import user_errors

    @user_errors
    def command() -> None:
        raise OSError(errno.EIO, "Input/output error")  # no file name: may be a bug, not the user's input

    with pytest.raises(OSError, match="Input/output error"):
        command()

    @user_errors
    def denied() -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x.json"))

    with pytest.raises(typer.Exit):
        denied()
