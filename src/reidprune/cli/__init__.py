"""The `reidprune` command: thin verbs over the Python API.

Each verb group lives in its own module with a `register(app)` function; heavy imports (torch)
happen inside the commands, so `reidprune --help` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="reidprune",
    help="Prune person re-ID and image-recognition networks (ViT tokens/heads, CNN filters) for edge devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# verb modules, in the order they appear in --help
VERB_MODULES: list[str] = [
    "demo",
    "data",
    "models",
    "train",
    "prune",
    "compress",
    "eval",
    "measure",
    "export",
    "bench",
    "latency",
    "report",
]


def _register() -> None:
    for name in VERB_MODULES:
        importlib.import_module(f"reidprune.cli.{name}").register(app)


@app.callback()
def _root() -> None:
    """reidprune: data, train, prune, eval, measure, export, report."""


def main() -> None:
    _register()
    app()
