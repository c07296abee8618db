"""`reidprune data synth` (write the embedded synthetic set) and `reidprune data info DIR`."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from reidprune.cli.common import console, err_console, print_table, user_errors


def synth_command(
    out: Path = typer.Option(..., "--out", help="folder to write the set into"),
    occluded: bool = typer.Option(False, "--occluded", help="occlude 20-50 % of the person in every query"),
    ids: int = typer.Option(
        120,
        "--ids",
        help="identities (half train, half test), about 25 images each: 1501 for Market-1501 scale "
        "(~38k images), 4101 for MSMT17's identity count (~104k images)",
    ),
    seed: int = typer.Option(0, "--seed", help="same settings, same bytes"),
    size: str = typer.Option(
        "128x64",
        "--size",
        help="HEIGHTxWIDTH of every image, height = 2 x width: 128x64 (Market's crops), 256x128",
    ),
    layout: str = typer.Option(
        "market1501",
        "--layout",
        help="market1501 (bounding_box_* folders) | msmt17 (train/ test/ + list files)",
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        help="processes rendering in parallel (default: the CPUs, at most 16); same bytes for any",
    ),
    force: bool = typer.Option(False, "--force", help="replace a set this command generated before"),
) -> None:
    """Generate the synthetic person re-ID set (procedural people in cluttered scenes, 6 cameras)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from reidprune.data.synth import MANIFEST, SynthSpec, default_workers, generate, read_manifest
    from reidprune.errors import DataError

    height_width = _parse_size(size)
    SynthSpec(ids, occluded, seed, height_width, layout).check()  # before touching --out
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise DataError(f"--workers {workers}: expected >= 1")
    if out.exists() and any(out.iterdir()):
        if read_manifest(out) is None:
            raise DataError(
                f"{out} is not empty and holds no generated set ({MANIFEST}); choose another --out"
            )
        if not force:
            raise DataError(f"{out} already holds a generated set; pass --force to replace it")
    bar = Progress(
        TextColumn("[bold]rendering"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    )
    start = time.perf_counter()
    with bar:
        task = bar.add_task("rendering", total=None)
        manifest = generate(
            out,
            ids=ids,
            occluded=occluded,
            seed=seed,
            size=height_width,
            layout=layout,
            workers=workers,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            replace=force,
        )
    seconds = time.perf_counter() - start
    rows = [{"folder": folder, "images": count} for folder, count in manifest["images"].items()]
    print_table(f"synthetic re-ID set in {out} ({layout} layout)", rows)
    images = sum(manifest["images"].values())
    console.print(
        f"{images} images of {size}, {ids} identities, occluded={occluded}, seed={seed}, "
        f"written in {seconds:.1f} s ({images / seconds:.0f} images/s, {workers} workers)"
    )


def _parse_size(text: str) -> tuple[int, int]:
    """'256x128' -> (256, 128); the generator checks the values themselves."""
    from reidprune.errors import DataError

    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        raise DataError(f"--size {text!r}: expected HEIGHTxWIDTH, e.g. 128x64 or 256x128")
    return int(parts[0]), int(parts[1])


def info_command(
    root: Path = typer.Argument(..., help="data set folder"),
    format: str = typer.Option(
        "auto",
        "--format",
        help="market1501 | dukemtmc | occluded_duke | msmt17 | reid_folder | imagefolder | auto",
    ),
    val_ids: int = typer.Option(
        0, "--val-ids", help="also show a validation hold-out of this many identities"
    ),
) -> None:
    """Identities, images and cameras per split (the layout is detected when --format is omitted)."""
    from reidprune.data.build import finalize
    from reidprune.data.formats import detect_layout, parse
    from reidprune.data.records import count

    fmt = detect_layout(root) if format == "auto" else format
    splits = finalize(parse(fmt, root), val_ids)
    rows = [{"split": name, **count(splits.split(name))} for name in splits.present()]
    if splits.task == "classification":
        for row in rows:
            row["classes"] = row.pop("ids")
            row.pop("cameras")
    print_table(f"{fmt}: {splits.root}", rows)
    console.print(f"training classes: {splits.num_classes}; cameras: {splits.num_cameras}")


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Generate the synthetic data set and inspect data set folders.", no_args_is_help=True
    )
    group.command("synth")(user_errors(synth_command))
    group.command("info")(user_errors(info_command))
    app.add_typer(group, name="data")
