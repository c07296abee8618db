"""The model a verb works on: a reidprune model directory, or the model inside a run directory.

Every verb that takes a saved model (eval, measure, export, bench) resolves its argument through
`reidprune.models.loading` (imported when first used: the CLI starts without torch), so
`reidprune measure demo_output/baseline` and `reidprune measure demo_output/baseline/final` mean
the same model, and the verb says which folder it used.
"""

from __future__ import annotations

from pathlib import Path

# --allow-import of every verb that loads a saved model (models/foreign.py: a foreign model whose base
# is a user's "package.module:factory" runs that import when it is rebuilt)
ALLOW_IMPORT_HELP = (
    "let a saved foreign model built by your own 'package.module:factory' import that module "
    "(runs its code: only for models you trust)"
)


def say(message: str) -> None:
    """Print a note of the loader (which model of a run directory was taken) on the CLI console."""
    from reidprune.cli.common import console

    console.print(message, highlight=False)


def resolve_model_dir(path: str | Path, *, quiet: bool = False) -> Path:
    """`path` when it is a model directory, else the model of the run directory `path` (printing which
    one was taken unless `quiet`). Raises CheckpointError naming what was looked for."""
    from reidprune.models.loading import resolve_model_dir as resolve

    return resolve(path, log=None if quiet else say)


def unique_names(paths: list[Path]) -> list[str]:
    """Short display names: the folder name, or "run/model" when the model sits inside a run; numbered
    when still ambiguous."""
    from reidprune.models.loading import RUN_MODEL_DIRS

    names = [p.name if p.name not in RUN_MODEL_DIRS else f"{p.parent.name}/{p.name}" for p in paths]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if names.count(name) == 1 else f"{name}#{seen[name]}")
    return out
