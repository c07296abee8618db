"""`reidprune data synth` (write the embedded synthetic set) and `reidprune data info DIR`."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from reidprune.cli.common import console, print_table, user_errors


def synth_command(
    out: Path = typer.Option(..., "--out", help="folder to write the Market-1501-layout set into"),
    occluded: bool = typer.Option(False, "--occluded", help="occlude 20-50 % of the person in every query"),
    ids: int = typer.Option(120, "--ids", help="identities (half train, half test)"),
    seed: int = typer.Option(0, "--seed", help="same seed, same bytes"),
    force: bool = typer.Option(False, "--force", help="replace a set this command generated before"),
) -> None:
    """Generate the synthetic person re-ID set (procedural people in cluttered scenes, 6 cameras)."""
    from reidprune.data.synth import MANIFEST, generate, read_manifest
    from reidprune.errors import DataError

    if out.exists() and any(out.iterdir()):
        if read_manifest(out) is None:
            raise DataError(
                f"{out} is not empty and holds no generated set ({MANIFEST}); choose another --out"
            )
        if not force:
            raise DataError(f"{out} already holds a generated set; pass --force to replace it")
    start = time.perf_counter()
    manifest = generate(out, ids=ids, occluded=occluded, seed=seed, replace=force)
    seconds = time.perf_counter() - start
    rows = [{"folder": folder, "images": count} for folder, count in manifest["images"].items()]
    print_table(f"synthetic re-ID set in {out}", rows)
    console.print(
        f"{sum(manifest['images'].values())} images, {ids} identities, occluded={occluded}, seed={seed}, "
        f"written in {seconds:.1f} s"
    )


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
    from reidprune.data.formats import detect_format, parse
    from reidprune.data.records import count

    fmt = detect_format(root) if format == "auto" else format
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
