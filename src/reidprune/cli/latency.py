"""`reidprune latency MODEL_DIR [--runtime onnxruntime] [--batch 1] [--threads N] [--cache PATH]
[--no-measure] [--no-check] [--point-time S] [--coarse-grid] [--json PATH]`: predicted vs measured
latency on the deployment runtime."""

from __future__ import annotations

from pathlib import Path

import typer

from reidprune.cli.common import console, ensure_writable, print_table, user_errors, write_json


def latency_command(
    model_dir: Path = typer.Argument(
        ..., metavar="MODEL_DIR", help="a reidprune model directory (or run directory)"
    ),
    runtime: str = typer.Option("onnxruntime", "--runtime", help="onnxruntime | torch (deploy form) | cuda"),
    batch: int = typer.Option(1, "--batch", help="images per forward"),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads (default: torch's)"),
    cache: Path | None = typer.Option(
        None, "--cache", help="latency table: a JSON file or a folder (default ~/.cache/reidprune/latency)"
    ),
    measure: bool = typer.Option(
        True, "--measure/--no-measure", help="time table points that are missing (else fail on them)"
    ),
    check: bool = typer.Option(True, "--check/--no-check", help="also export and time the whole model"),
    min_time: float = typer.Option(2.0, "--min-time", help="seconds of timed calls for the whole model"),
    point_time: float = typer.Option(0.3, "--point-time", help="seconds timing each table point"),
    calib_time: float = typer.Option(
        2.0, "--calib-time", help="seconds timing the dense reference model that calibrates the tables"
    ),
    calibrate: bool = typer.Option(
        True, "--calibrate/--no-calibrate", help="scale block costs by one whole dense-model measurement"
    ),
    coarse_grid: bool = typer.Option(False, "--coarse-grid", help="2 table points per axis: quick, rougher"),
    json_path: Path | None = typer.Option(None, "--json", help="also write the results to this JSON file"),
) -> None:
    """Predict a model's latency from per-block cost tables measured on the runtime (cached), and
    (--check) measure the exported whole model to compare."""
    from reidprune.budget import measure_side_by_side, predict_latency
    from reidprune.budget.latency import COARSE_GRID
    from reidprune.cli.model_dirs import resolve_model_dir
    from reidprune.config import ConfigError
    from reidprune.models import load

    if batch < 1:
        raise ConfigError(f"--batch {batch}: expected >= 1")
    if point_time <= 0 or calib_time <= 0 or min_time <= 0:
        raise ConfigError("--point-time, --calib-time and --min-time: expected positive seconds")
    if json_path is not None:
        ensure_writable(json_path, option="--json")
    model = load(resolve_model_dir(model_dir)).eval()
    try:
        predicted = predict_latency(
            model, runtime, batch, threads, cache=cache, measure=measure, min_time=point_time,
            grid=COARSE_GRID if coarse_grid else None, calibrate=calibrate, calib_time=calib_time,
        )  # fmt: skip
    except (ValueError, LookupError, TypeError) as err:
        raise ConfigError(str(err)) from None
    result = {"model_dir": str(model_dir), "prediction": predicted}
    row = {"model": model_dir.name, "predicted (ms)": predicted["predicted_ms"]}
    if check:
        # the tables' load meter in the same rounds: the prediction is at the load of its reference
        timed = measure_side_by_side(
            {"model": model}, runtime, batch, threads, min_time=min_time,
            meter_reference_ms=predicted.get("meter_reference_ms"),
        )  # fmt: skip
        measured = {**timed["model"], "setting": timed["setting"]}
        if "load" in timed:
            measured["load"] = timed["load"]
        result["measured"] = measured
        compared = measured.get("normalised_ms", measured["median_ms"])
        result["error_pct"] = 100 * (predicted["predicted_ms"] / compared - 1)
        row["measured (ms)"] = measured["median_ms"]
        if "normalised_ms" in measured:
            row["at the tables' load (ms)"] = measured["normalised_ms"]
        row["error (%)"] = result["error_pct"]
    setting = predicted["setting"]
    print_table(
        f"latency on {setting['runtime']} {setting['version']}, batch {setting['batch']}, "
        f"{setting['threads']} threads, {setting['device']} (table: {predicted['cache']}, "
        f"{predicted['measured_points']} points timed now)",
        [row],
    )
    if json_path is not None:
        console.print(f"wrote {write_json(json_path, result)}")


def register(app: typer.Typer) -> None:
    app.command("latency")(user_errors(latency_command))
