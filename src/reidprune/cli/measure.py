"""`reidprune measure MODEL... [--input-size HxW] [--batch-size 64] [--device D] [--dtype T] [--deploy/--no-deploy]
[--json PATH]`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from reidprune.cli.common import console, ensure_writable, print_table, user_errors, write_json
from reidprune.cli.model_dirs import ALLOW_IMPORT_HELP

DTYPES = ("float32", "bfloat16", "float16")


def _input_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    from reidprune.errors import ConfigError

    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--input-size {text}: expected HxW, e.g. 256x128") from None
    return height, width


def measure_command(
    model_names: list[str] = typer.Argument(
        ..., metavar="MODEL...", help="reidprune model directories or registry names"
    ),
    input_size: str | None = typer.Option(
        None, "--input-size", help="HxW; default each model's arch.img_size (a ViT takes only its own size)"
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="batch of the throughput measurement (>= 1)"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:N]"),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16"),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads (default: torch's)"),
    min_time: float = typer.Option(2.0, "--min-time", help="seconds per timed measurement"),
    speed: bool = typer.Option(
        True, "--speed/--no-speed", help="measure throughput and latency (else counts only)"
    ),
    deploy: bool = typer.Option(
        True,
        "--deploy/--no-deploy",
        help="time the inference form (default): BatchNorm folded into the convs and channels_last, "
        "as an exported or deployed CNN runs; --no-deploy times the model as built (eager). "
        "Counts are always of the model as saved",
    ),
    json_path: Path | None = typer.Option(None, "--json", help="also write the results to this JSON file"),
    allow_import: bool = typer.Option(False, "--allow-import", help=ALLOW_IMPORT_HELP),
) -> None:
    """Parameters, GMACs (FlopCounterMode FLOPs / 2, eval mode, real input), throughput and batch-1 latency.

    Speed is timed on the deploy form by default (BatchNorm folded, channels_last), the JSON field
    "deploy" says which form was timed; --no-deploy times the model as built.
    """
    import torch

    from reidprune.cli.model_dirs import say
    from reidprune.errors import ConfigError
    from reidprune.measure import benchmark_speed, count_gmacs, count_params
    from reidprune.models.forward import input_size_for
    from reidprune.models.loading import load_model
    from reidprune.train.distributed import resolve_device

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: expected >= 1")
    if json_path is not None:
        ensure_writable(json_path, option="--json")
    size = _input_size(input_size)
    torch_device = resolve_device(device)
    results, rows = [], []
    for name in model_names:
        # a saved model (or run directory), or a registry entry with random weights: costs do not
        # depend on weight values, except for data-dependent token reduction (measure the saved model)
        net = load_model(name, map_location=torch_device, log=say, allow_import=allow_import)
        net_size = input_size_for(net, size, "--input-size")
        params = count_params(net)
        macs = count_gmacs(net, input_size=net_size)
        result: dict[str, Any] = {"model": name, **params, **macs, "deploy": deploy and speed}
        row: dict[str, Any] = {
            "model": name,
            "params (M)": params["params"] / 1e6,
            "attn params (M)": params["attn_params"] / 1e6,
            "GMACs": macs["gmacs"],
            "blocks GMACs": macs["blocks_gmacs"],
            "input": "x".join(map(str, macs["input_size"])),
        }
        if speed:
            timing = benchmark_speed(
                net,
                batch_size=batch_size,
                input_size=net_size,
                device=torch_device,
                dtype=getattr(torch, dtype),
                min_time=min_time,
                threads=threads,
                deploy=deploy,
            )
            result["speed"] = timing
            row["deploy"] = "yes" if deploy else "no"
            row[f"img/s (b{batch_size})"] = timing["throughput_ips"]
            row["latency b1 (ms)"] = timing["latency_ms_b1"]
            row["p90 (ms)"] = timing["latency_ms_b1_p90"]
        results.append(result)
        rows.append(row)
        del net
    where = (
        f"{torch_device}, {dtype}, {threads or torch.get_num_threads()} threads, "
        + ("deploy form: BN folded, channels_last" if deploy else "eager")
        if speed
        else str(torch_device)
    )
    print_table(f"cost ({where}); MACs = multiply-accumulates = FlopCounterMode FLOPs / 2", rows)
    if json_path is not None:
        console.print(f"wrote {write_json(json_path, {'models': results})}")


def register(app: typer.Typer) -> None:
    app.command("measure")(user_errors(measure_command))
