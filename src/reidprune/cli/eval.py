"""`reidprune eval MODEL [--weights W] [--config C | --data-format F --data-root R] [overrides]`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from reidprune.cli.common import console, ensure_writable, print_table, user_errors, write_json
from reidprune.cli.model_dirs import ALLOW_IMPORT_HELP

SPLITS = ("test", "val")
EVAL_SPLITS = ("query", "gallery", "val_query", "val_gallery", "val")


def _data_config(cfg: Any, data_format: str | None, data_root: str | None, format_is_default: bool) -> Any:
    """The data section with the command line's format and root. A --data-root whose format nobody
    gave (neither --data-format, the YAML nor an override) is detected, never assumed synthetic."""
    if data_format is not None:
        cfg.data.format = data_format
    elif data_root is not None and format_is_default:
        cfg.data.format = "auto"
    if data_root is not None:
        cfg.data.root = data_root
    return cfg


def eval_command(
    model: str = typer.Argument(
        ..., help="a reidprune model directory, or a registry name (see `reidprune models list`)"
    ),
    overrides: list[str] | None = typer.Argument(
        None,
        help="dotted overrides, e.g. eval.ranks=[1,5] data.num_workers=0 (the input size is the model's "
        "unless data.height / data.width are set)",
    ),
    weights: Path | None = typer.Option(
        None, "--weights", "-w", help="foreign checkpoint (.pth / .safetensors) for a registry name"
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="experiment YAML (data and eval sections)"
    ),
    data_format: str | None = typer.Option(
        None,
        "--data-format",
        help="market1501 | dukemtmc | occluded_duke | msmt17 | reid_folder | imagefolder | synth | auto "
        "(default with --data-root: detected from the folder)",
    ),
    data_root: str | None = typer.Option(None, "--data-root", help="data set folder"),
    split: str = typer.Option(
        "test",
        "--split",
        help="test: query/gallery (or val/ for imagefolder); val: identities held out by data.val_ids",
    ),
    flip: bool | None = typer.Option(
        None, "--flip/--no-flip", help="average each image with its mirror (eval.flip)"
    ),
    rerank: bool | None = typer.Option(
        None, "--rerank/--no-rerank", help="k-reciprocal re-ranking (eval.rerank)"
    ),
    metric: str | None = typer.Option(None, "--metric", help="euclidean (squared) | cosine (eval.metric)"),
    device: str | None = typer.Option(
        None, "--device", help="auto | cpu | cuda[:N] (default: the config's device)"
    ),
    json_path: Path | None = typer.Option(None, "--json", help="also write the results to this JSON file"),
    which_epoch: str | None = typer.Option(
        None, "--which-epoch", help="MODEL is a run folder: evaluate its epoch_K/ snapshot, last or best"
    ),
    allow_import: bool = typer.Option(False, "--allow-import", help=ALLOW_IMPORT_HELP),
) -> None:
    """Evaluate a model: re-ID mAP / mINP / CMC (standard protocol) or classification top-1 / top-5, in percent."""
    from reidprune.cli.model_dirs import say
    from reidprune.config import load_config
    from reidprune.data import build_dataset, build_loaders
    from reidprune.errors import ConfigError, DataError
    from reidprune.evaluate import evaluate_classification, evaluate_reid
    from reidprune.models.forward import use_model_input_size
    from reidprune.models.loading import is_saved_model, load_model
    from reidprune.train.distributed import resolve_device

    if which_epoch is not None:
        from reidprune.train.snapshots import choose_snapshot

        model = str(choose_snapshot(model, which_epoch))
    if split not in SPLITS:
        raise ConfigError(f"--split {split}: expected one of {', '.join(SPLITS)}")
    if json_path is not None:
        ensure_writable(json_path, option="--json")
    format_is_default = config is None and not any(o.startswith("data.format=") for o in overrides or [])
    cfg = _data_config(load_config(config, overrides or []), data_format, data_root, format_is_default)
    if flip is not None:
        cfg.eval.flip = flip
    if rerank is not None:
        cfg.eval.rerank = rerank
    if metric is not None:
        cfg.eval.metric = metric
    torch_device = resolve_device(device or cfg.device)
    splits = build_dataset(cfg.data)
    if cfg.data.format == "auto":
        console.print(
            f"{cfg.data.root}: detected the {splits.format} layout (--data-format chooses another)",
            highlight=False,
        )
    if weights is None and not is_saved_model(model) and not Path(model).exists():
        console.print(f"[yellow]warning:[/] {model} has random weights (no --weights given)")
    # registry models are built for data.height x data.width when set, else for the entry's own size
    net = load_model(
        model,
        weights,
        model_cfg=cfg.model,
        data_cfg=cfg.data,
        num_classes=splits.num_classes,
        map_location=torch_device,
        log=say,
        allow_import=allow_import,
    )
    use_model_input_size(cfg.data, net)
    # only the evaluated splits get loaders (and a decoded-image cache)
    names = ("query", "gallery") if split == "test" else ("val_query", "val_gallery")
    wanted = {*names, "val"} if split == "test" else set(names)
    loaders = build_loaders(
        cfg.data,
        dataclasses.replace(
            splits, train=[], **{n: getattr(splits, n) if n in wanted else [] for n in EVAL_SPLITS}
        ),
    )
    query, gallery = getattr(loaders, names[0]), getattr(loaders, names[1])
    if query is not None and gallery is not None:
        task = "reid"
        metrics = evaluate_reid(net, query, gallery, cfg.eval, device=torch_device)
        shown = {k: v for k, v in metrics.items() if not k.startswith("num_")}
        shown["queries"] = metrics["num_queries"]
        shown["skipped"] = metrics["num_skipped_queries"]
    elif split == "test" and loaders.val is not None:
        task = "classification"
        metrics = evaluate_classification(net, loaders.val, device=torch_device)
        shown = {"top1": metrics["top1"], "top5": metrics["top5"], "images": metrics["num_images"]}
    else:
        hint = (
            "set data.val_ids > 0 to hold out identities"
            if split == "val"
            else "no query/gallery or val/ split"
        )
        raise DataError(f"data.root={cfg.data.root}: nothing to evaluate for --split {split} ({hint})")
    title = f"{model} on {splits.format} {split} split at {cfg.data.height}x{cfg.data.width}, percent" + (
        " (re-ranked)" if task == "reid" and cfg.eval.rerank else ""
    )
    print_table(title, [{"model": model, **shown}])
    if json_path is not None:
        payload = {
            "model": model,
            "weights": str(weights) if weights else None,
            "task": task,
            "data": {
                "format": splits.format,
                "root": splits.root,
                "split": split,
                "input_size": [cfg.data.height, cfg.data.width],
            },
            "eval": dataclasses.asdict(cfg.eval),
            "device": str(torch_device),
            "metrics": metrics,
        }
        console.print(f"wrote {write_json(json_path, payload)}")


def register(app: typer.Typer) -> None:
    app.command("eval")(user_errors(eval_command))
