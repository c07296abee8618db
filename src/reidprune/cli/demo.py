"""`reidprune demo`: the whole mission on the embedded synthetic data set."""

from __future__ import annotations

from pathlib import Path

import typer

from reidprune.cli.common import console, print_table, user_errors


def demo_command(
    out: Path = typer.Option(
        Path("demo_output"), "--out", "-o", help="output folder (reused when run again)"
    ),
    model: str = typer.Option(
        "vit",
        "--model",
        "-m",
        help="vit: LA-Transformer tiny with AMG tokens, entropy heads and Prune-and-Merge; resnet18: "
        "ResNet-18 with HFP / SFP / FPGM / BAFD filter pruning (in OUT/resnet18, same data)",
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="baseline config (default: the packaged demo.yaml / demo_resnet18.yaml)"
    ),
    overrides: list[str] | None = typer.Argument(
        None, help="dotted overrides for every job, e.g. train.epochs=4"
    ),
    no_export: bool = typer.Option(False, "--no-export", help="skip the ONNX export"),
    no_report: bool = typer.Option(False, "--no-report", help="skip the HTML report"),
) -> None:
    """Generate data, train a tiny ViT (or ResNet-18) re-ID baseline, compress it (AMG tokens, entropy
    heads, Prune-and-Merge; or filter pruning) with distillation, evaluate, measure, export to ONNX and
    write the report."""
    from reidprune.demo import run_demo

    result = run_demo(
        out,
        config,
        overrides or [],
        export=not no_export,
        report=not no_report,
        log=console.print,
        model=model,
    )
    print_table(
        "reidprune demo: synthetic re-ID test split (mAP / rank-1 in percent); x = speed-up vs the "
        "baseline, timed side by side: b64 = batch-64 PyTorch throughput, b1 = batch-1 ONNX Runtime latency; "
        "target x b1 = the speed-up the budget variant was searched for; "
        "INT8 = the static INT8 graph (calibrated on training images) of the baseline and the best variant",
        result.rows,
    )
    console.print(f"outputs in {result.output_dir}" + (f"; report: {result.report}" if result.report else ""))


def register(app: typer.Typer) -> None:
    app.command("demo")(user_errors(demo_command))
