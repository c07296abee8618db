"""`reidprune train --config cfg.yaml [section.key=value ...] [--resume]`."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from reidprune.cli.common import console, ensure_writable, print_table, user_errors


def train_command(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="experiment YAML (defaults when omitted)"
    ),
    overrides: list[str] | None = typer.Argument(
        None, help="dotted overrides, e.g. train.epochs=60 train.lr=1e-4 data.root=/data/market1501"
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="continue from output_dir/checkpoints/last.pt (exactly where it stopped); same config",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="replace the run output_dir holds (its outputs are deleted first)"
    ),
) -> None:
    """Train or fine-tune a model; the best epoch is chosen on held-out identities (data.val_ids).

    Writes config.yaml, train_log.jsonl, checkpoints/last.pt, best/, final/ and metrics.json to
    output_dir. Multi-GPU / multi-node: `torchrun --nproc_per_node N $(which reidprune) train ...`
    (data.batch_size is per process). An output_dir that holds another run is refused unless
    --resume or --overwrite is given; other files in it are left alone.
    """
    from reidprune.config import load_config
    from reidprune.jobs.train import train_experiment

    cfg = load_config(config, overrides or [])
    ensure_writable(cfg.output_dir, directory=True, option="output_dir")
    summary = train_experiment(cfg, resume=resume, overwrite=overwrite)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports (the group is closed by now)
        return
    rows = []
    for which in ("final", "best"):
        metrics = summary["test"][which]
        if metrics:
            rows.append({"model": which, **{k: v for k, v in metrics.items() if not k.startswith("num_")}})
    if rows:
        print_table(f"{cfg.name}: test split ({summary['test_split']}), percent", rows)
    if summary["val_best"] is not None:
        console.print(
            f"best epoch {summary['best_epoch'] + 1} by validation {summary['select_metric']} "
            f"{summary['val_best']:.2f}; outputs in {cfg.output_dir}"
        )
    else:
        console.print(f"no validation split (data.val_ids=0): final model only; outputs in {cfg.output_dir}")


def register(app: typer.Typer) -> None:
    app.command("train")(user_errors(train_command))
