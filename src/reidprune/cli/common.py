"""What every CLI verb shares: the console, config loading, and turning known errors into messages."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich import box
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
    """A readable table of dict rows; floats shown with 3 significant digits (the JSON keeps them all),
    a "GMACs" column in MMACs when all its values are below 0.1 G.

    Nothing is ever cut: headers wrap between words, and when even that does not fit the terminal
    the rows are printed one below the other as "column  value" lines instead.
    """
    if not rows:
        console.print(f"{title}: nothing to show")
        return
    rows, columns = _macs_in_one_unit(rows, list(columns or rows[0].keys()))
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    # narrowest width of each column that breaks no value and no header word
    widths = [
        max(max(len(word) for word in column.split() or [""]), *(len(line[i]) for line in cells))
        for i, column in enumerate(columns)
    ]
    # a boxed table adds one space of padding on each side of a cell and a border between cells
    if sum(widths) + 3 * len(columns) + 1 <= console.width:
        table = Table(title=title)
        for index, column in enumerate(columns):
            numeric = isinstance(rows[0].get(column), int | float)
            table.add_column(
                column, justify="right" if numeric else "left", min_width=widths[index], overflow="fold"
            )
        for line in cells:
            table.add_row(*line)
        console.print(table)
        return
    console.print(title, highlight=False)
    label = max(len(c) for c in columns)
    for line in cells:
        table = Table(show_header=False, box=box.SIMPLE, padding=(0, 1))
        table.add_column(min_width=min(label, console.width // 2), overflow="fold")
        table.add_column(overflow="fold")
        for column, value in zip(columns, line, strict=True):
            table.add_row(column, value)
        console.print(table)


def _fmt(value: Any) -> str:
    from reidprune.measure.units import significant

    if isinstance(value, float):
        return significant(value)
    return "" if value is None else str(value)


def _macs_in_one_unit(
    rows: Sequence[dict[str, Any]], columns: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Columns named "... GMACs" in MMACs when all their values are below 0.1 G (`macs_unit`)."""
    from reidprune.measure.units import macs_unit

    rows = [dict(row) for row in rows]
    renamed = []
    for column in columns:
        if column.endswith("GMACs"):
            unit, factor = macs_unit(r.get(column) for r in rows if isinstance(r.get(column), int | float))
            if unit != "GMACs":
                new = column[: -len("GMACs")] + unit
                for row in rows:
                    value = row.pop(column, None)
                    row[new] = value * factor if isinstance(value, int | float) else value
                column = new
        renamed.append(column)
    return rows, renamed


def write_json(path: str | Path, payload: Any) -> Path:
    from reidprune.atomic import write_json as write

    return write(path, payload)
