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
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, markup=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


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
