"""`reidprune prune --config cfg.yaml [--method M] [--rate R] [section.key=value ...]`."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from reidprune.cli.common import console, ensure_writable, print_table, user_errors

METHOD_HELP = (
    "token-amg | token-topk | token-pm | token-tome | head-entropy | head-magnitude | head-random | "
    "filter-hfp | filter-sfp | filter-fpgm | filter-bafd"
)


def prune_command(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="experiment YAML (defaults when omitted)"
    ),
    method: str | None = typer.Option(None, "--method", "-m", help=METHOD_HELP),
    rate: float | None = typer.Option(
        None, "--rate", "-r", help="fraction REMOVED (tokens, heads or filters), in [0, 1)"
    ),
    weights: str | None = typer.Option(
        None, "--weights", "-w", help="the trained model: a reidprune model directory or a foreign .pth"
    ),
    overrides: list[str] | None = typer.Argument(
        None, help="dotted overrides, e.g. prune.rounds=24 prune.finetune_epochs=1 train.distill=soft"
    ),
    save_masked: bool = typer.Option(
        False,
        "--save-masked",
        help="filter methods: also save the full-size model with zero filters in output_dir/masked/",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="replace the run output_dir holds (its outputs are deleted first)"
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="continue a killed job in output_dir from its last finished round / training checkpoint; same config",
    ),
) -> None:
    """Compress a trained model, fine-tune it with distillation from the unpruned teacher, evaluate it.

    Writes config.yaml, model/ (weights.safetensors + model.json with the compression plan),
    metrics.json and the fine-tuning logs of every round to output_dir; with --save-masked also
    masked/, the full-size model with the removed filters set to zero (the BAFD seed's form). An
    output_dir that holds another run is refused unless --overwrite is given; other files in it are
    left alone. prune.options must be options of the chosen method (a config's options are refused
    after --method picks another one).

    Multi-GPU / multi-node: `torchrun --nproc_per_node N -m reidprune prune ...` (data.batch_size is
    per process): calibration is sharded and summed over the ranks, fine-tuning runs DDP, rank 0
    writes. A killed job continues with --resume (same config) from its last finished round and the
    running round's training checkpoint.
    """
    from reidprune.config import load_config
    from reidprune.jobs.prune import prune_experiment

    extra = list(overrides or [])
    if method is not None:
        extra.append(f"prune.method={method}")
    if rate is not None:
        extra.append(f"prune.rate={rate}")
    if weights is not None:
        extra.append(f"model.weights={weights}")
    if save_masked:
        extra.append("prune.save_masked=true")
    cfg = load_config(config, extra)
    ensure_writable(cfg.output_dir, directory=True, option="output_dir")
    summary = prune_experiment(cfg, overwrite=overwrite, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports
        return
    # attention ("MSA") parameters, the column AMG's tables report; a CNN has none
    attention = any(summary[which].get("attn_params") for which in ("unpruned", "pruned"))
    rows = []
    for which in ("unpruned", "pruned"):
        entry = summary[which]
        test = entry["test"] or {}
        rows.append(
            {
                "model": which,
                "params (M)": entry["params"] / 1e6,
                **({"MSA params (M)": entry["attn_params"] / 1e6} if attention else {}),
                "GMACs": entry["gmacs"],
                **{k: v for k, v in test.items() if not k.startswith("num_")},
            }
        )
    print_table(f"{cfg.name}: {cfg.prune.method} at rate {cfg.prune.rate} (test split, percent)", rows)
    console.print(f"compressed model in {Path(cfg.output_dir) / 'model'}")


def register(app: typer.Typer) -> None:
    app.command("prune")(user_errors(prune_command))
