"""The model a verb works on: a reidprune model directory, or the model inside a run directory.

Every verb that takes a saved model (eval, measure, export, bench) resolves its argument here, so
`reidprune measure demo_output/baseline` and `reidprune measure demo_output/baseline/final` mean
the same model, and the verb says which folder it used.
"""

from __future__ import annotations

from pathlib import Path

# where the jobs leave their model, in the order looked at: prune runs write model/ (their final/
# holds fine-tuning logs), train runs final/ (and best/ when a validation split selected one)
RUN_MODEL_DIRS = {"model": "the compressed model", "final": "the final model", "best": "the best model"}

# --allow-import of every verb that loads a saved model (models/foreign.py: a foreign model whose base
# is a user's "package.module:factory" runs that import when it is rebuilt)
ALLOW_IMPORT_HELP = (
    "let a saved foreign model built by your own 'package.module:factory' import that module "
    "(runs its code: only for models you trust)"
)


def run_model_dir(path: str | Path) -> Path | None:
    """The model directory inside run directory `path` (model/, else final/, else best/); None when
    `path` is itself a model directory or holds none of them."""
    from reidprune.models.serialization import is_model_dir

    path = Path(path)
    if is_model_dir(path):
        return None
    for name in RUN_MODEL_DIRS:
        if is_model_dir(path / name):
            return path / name
    return None


def resolve_model_dir(path: str | Path, *, quiet: bool = False) -> Path:
    """`path` when it is a model directory, else the model of the run directory `path` (printing which
    one was taken unless `quiet`). Raises CheckpointError naming what was looked for."""
    from reidprune.models.checkpoint_io import CheckpointError
    from reidprune.models.serialization import is_model_dir

    path = Path(path)
    if is_model_dir(path):
        return path
    inner = run_model_dir(path)
    if inner is None:
        raise CheckpointError(
            f"{path}: not a reidprune model directory (no model.json) nor a run directory with "
            f"{' / '.join(f'{name}/model.json' for name in RUN_MODEL_DIRS)}"
        )
    if not quiet:
        from reidprune.cli.common import console

        console.print(
            f"{path} is a run directory: using {RUN_MODEL_DIRS[inner.name]}, {inner}", highlight=False
        )
    return inner


def is_saved_model(path: str | Path) -> bool:
    """True for a model directory or a run directory holding one (what `resolve_model_dir` accepts)."""
    from reidprune.models.serialization import is_model_dir

    return is_model_dir(path) or run_model_dir(path) is not None


def unique_names(paths: list[Path]) -> list[str]:
    """Short display names: the folder name, or "run/model" when the model sits inside a run; numbered
    when still ambiguous."""
    names = [p.name if p.name not in RUN_MODEL_DIRS else f"{p.parent.name}/{p.name}" for p in paths]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if names.count(name) == 1 else f"{name}#{seen[name]}")
    return out
