"""What every CLI verb shares: the console, config loading, and turning known errors into messages."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Report errors caused by the user's input as one red line and exit code 2, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from reidprune.errors import USER_ERRORS

        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            message = str(err)
        except OSError as err:
            # a file-system error about a path (read-only folder, full disk, a file where a folder
            # should be) is the user's to fix; one without a path may be a bug: keep its traceback
            if err.filename is None:
                raise
            message = describe_os_error(err)
        # soft_wrap: one line however narrow the terminal, so that it can be grepped and copied
        err_console.print(
            f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True
        )
        raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def describe_os_error(err: OSError) -> str:
    """One line naming the path(s) and the reason, e.g. "out/m.json: No space left on device"."""
    paths = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
    return f"{paths}: {err.strerror or type(err).__name__}"


def ensure_writable(path: str | Path, *, directory: bool = False, option: str = "") -> Path:
    """Refuse (ConfigError) an output path that cannot be written, before any work is done.

    `path` is a file to be written, or with directory=True a folder to be written into. Nothing is
    created: the nearest existing folder on the way must accept new entries.
    """
    import os

    from reidprune.errors import ConfigError

    path = Path(path)
    label = f"{option} {path}" if option else str(path)
    if path.exists() and path.is_dir() != directory:
        expected = "a folder" if directory else "a file path"
        raise ConfigError(
            f"{label}: expected {expected}, but it is {'a folder' if path.is_dir() else 'a file'}"
        )
    existing = path if directory else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{label}: cannot be created, {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK) or (path.is_file() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{label}: not writable (permission denied or read-only file system)")
    return path


def print_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """A readable table of dict rows; floats shown with 3 significant digits (the JSON keeps them all)."""
    if not rows:
        console.print(f"{title}: nothing to show")
        return
    columns = list(columns or rows[0].keys())
    table = Table(title=title)
    for index, column in enumerate(columns):
        numeric = isinstance(rows[0].get(column), int | float)
        # never truncate a value: on a narrow terminal the headers wrap instead
        longest = max(len(_fmt(row.get(column))) for row in rows)
        table.add_column(
            column, justify="right" if numeric else "left", no_wrap=index == 0, min_width=longest
        )
    for row in rows:
        table.add_row(*(_fmt(row.get(c)) for c in columns))
    console.print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e3 else f"{value:,.0f}"
    return "" if value is None else str(value)


def write_json(path: str | Path, payload: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path
