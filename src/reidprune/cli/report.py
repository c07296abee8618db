"""`reidprune report RUN_DIR... [--out report.html] [--data ROOT|YAML] [--no-latency] [--no-retrieval]`."""

from __future__ import annotations

from pathlib import Path

import typer

from reidprune.cli.common import console, ensure_writable
from reidprune.cli.export import export_errors


def report_command(
    run_dirs: list[Path] = typer.Argument(
        ..., metavar="RUN_DIR...", help="prune / train run directories or model directories"
    ),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="the HTML file to write"),
    data: str | None = typer.Option(
        None,
        "--data",
        help="data set folder or experiment YAML (default: each run's config.yaml data section)",
    ),
    data_format: str | None = typer.Option(None, "--data-format", help="data set format (default: detect)"),
    latency: bool = typer.Option(
        True, "--latency/--no-latency", help="time every model at batch 1 (PyTorch)"
    ),
    retrieval: bool = typer.Option(True, "--retrieval/--no-retrieval", help="draw ranked retrieval lists"),
    queries: int = typer.Option(4, "--queries", help="queries shown per run"),
    top: int = typer.Option(10, "--top", help="gallery images shown per query"),
    token_images: int = typer.Option(2, "--token-images", help="sample images for the kept-token maps"),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for the latency measurement"),
    title: str = typer.Option("reidprune report", "--title", help="page title"),
) -> None:
    """One self-contained HTML page (no network, images embedded) comparing runs: configuration, metrics,
    accuracy vs GMACs / latency, ranked retrieval lists, per-block kept-token maps."""
    from reidprune.errors import ConfigError
    from reidprune.report import build_report

    if queries < 1 or top < 1 or token_images < 0:
        raise ConfigError(
            f"--queries {queries} / --top {top} / --token-images {token_images}: expected >= 1 / >= 1 / >= 0"
        )
    ensure_writable(out, option="--out")
    path = build_report(
        [str(p) for p in run_dirs],
        out,
        data=data,
        data_format=data_format,
        latency=latency,
        retrieval=retrieval,
        num_queries=queries,
        top=top,
        token_images=token_images,
        threads=threads,
        title=title,
    )
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, self-contained)")


def register(app: typer.Typer) -> None:
    app.command("report")(export_errors(report_command))
