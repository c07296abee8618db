"""`reidprune models list`, `reidprune models info NAME_OR_DIR` and `reidprune models extract`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from reidprune.cli.common import console, print_table, user_errors
from reidprune.cli.model_dirs import ALLOW_IMPORT_HELP


def _meta_model(arch: Any) -> Any:
    """Build on the meta device: parameter shapes without allocating or initialising weights."""
    import torch

    from reidprune.models import build

    with torch.device("meta"):
        return build(arch)


def _summary(name: str, arch: Any) -> dict[str, Any]:
    model = _meta_model(arch)
    params = sum(p.numel() for p in model.parameters())
    size = getattr(arch, "img_size", None)
    return {
        "name": name,
        "family": arch.family,
        "head": str(getattr(arch, "head", "")),
        "params (M)": round(params / 1e6, 2),
        "input (HxW)": f"{size[0]}x{size[1]}" if size else "",
    }


def list_command() -> None:
    """Every registered model with its parameter count and default input size."""
    from reidprune.models import arch_config, list_models

    print_table("reidprune models", [_summary(name, arch_config(name)) for name in list_models()])


def _print_plan(plan: dict[str, Any] | None) -> None:
    if plan:
        console.print(f"compression plan: method {plan.get('method')} rate {plan.get('rate')}")
        for step in plan.get("previous", []):
            console.print(f"  after: {step.get('method')} rate {step.get('rate')}")


def _param_rows(model: Any) -> list[dict[str, Any]]:
    rows = [
        {"module": child_name, "params": sum(p.numel() for p in child.parameters())}
        for child_name, child in model.named_children()
    ]
    return [*rows, {"module": "total", "params": sum(p.numel() for p in model.parameters())}]


def _foreign_info(directory: str, description: dict[str, Any], allow_import: bool) -> None:
    """A saved foreign CNN: built as it is saved (its base, resized layers, weights)."""
    from reidprune.models.serialization import load

    model = load(directory, allow_import=allow_import)
    print_table(f"{directory}: parameters", _param_rows(model))
    console.print(f"base {description['base']}, kwargs {description['kwargs']}")
    _print_plan(description.get("plan"))


def info_command(
    name_or_dir: str = typer.Argument(..., help="a registry name or a saved reidprune model directory"),
    allow_import: bool = typer.Option(False, "--allow-import", help=ALLOW_IMPORT_HELP),
) -> None:
    """Architecture, parameter counts and compression history of a model."""
    from reidprune.models import arch_config
    from reidprune.models.foreign import foreign_description
    from reidprune.models.registry import _ENTRIES, arch_from_dict
    from reidprune.models.serialization import is_model_dir, read_description

    plan = None
    foreign = foreign_description(name_or_dir) if is_model_dir(name_or_dir) else None
    if foreign is not None:
        _foreign_info(name_or_dir, foreign, allow_import)
        return
    if is_model_dir(name_or_dir):
        description = read_description(name_or_dir)
        arch = arch_from_dict(description["arch"], where=f"{name_or_dir}/model.json")
        plan = description.get("plan")
    else:
        arch = arch_config(name_or_dir)
        console.print(
            " ".join(_ENTRIES[name_or_dir].__doc__.split()) if _ENTRIES[name_or_dir].__doc__ else ""
        )
    print_table(f"{name_or_dir}: parameters", _param_rows(_meta_model(arch)))
    fields = [{"field": f.name, "value": getattr(arch, f.name)} for f in dataclasses.fields(arch)]
    print_table(f"{name_or_dir}: architecture", fields)
    _print_plan(plan)


def extract_command(
    name: str = typer.Argument(..., help="registry name of the architecture, e.g. resnet18_bafd"),
    checkpoint: Path = typer.Argument(..., help="the pruned checkpoint (.pth)"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for the extracted reidprune model"),
    original: Path | None = typer.Option(
        None,
        "--original",
        help="CHECKPOINT is an HFP small model (BAFD seed L1_train.py): the model it was pruned from",
    ),
    rate: float | None = typer.Option(
        None, "--rate", help="with --original: the seed's --prune_rate (checked)"
    ),
) -> None:
    """The BAFD seed's test_small.py: the physically smaller model of a checkpoint with zero filters,
    or of an HFP small-model file given with its original; saved in reidprune format."""
    from reidprune.compress.filters.recover import create_pruned_from_checkpoint
    from reidprune.errors import ConfigError
    from reidprune.models.serialization import save

    if rate is not None and original is None:
        raise ConfigError("--rate checks an HFP small model against its --original; give both")
    small, plan = create_pruned_from_checkpoint(name, checkpoint, original=original, rate=rate)
    save(small, out, metadata={"source": str(checkpoint)})
    removed, total = plan.details["removed_filters"], plan.details["filters"]
    console.print(
        f"{removed} of {total} filters removed; model in {out} (evaluate: reidprune eval {out} ...)"
    )


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="List the registered models and inspect one.", no_args_is_help=True)
    group.command("list")(user_errors(list_command))
    group.command("info")(user_errors(info_command))
    group.command("extract")(user_errors(extract_command))
    app.add_typer(group, name="models")
