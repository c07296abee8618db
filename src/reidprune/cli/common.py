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
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, markup=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


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
