"""How the CLI talks to a person: aligned tables, key/value lists, one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

# Wide enough that piped output never wraps a row; colour only on a terminal.
console = Console(width=None if sys.stdout.isatty() else 200, highlight=False, soft_wrap=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "") -> None:
    rows = list(rows)
    if not rows:
        if empty:
            console.print(empty)
        return
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for header in headers:
        grid.add_column(header, overflow="fold")
    for row in rows:
        grid.add_row(*(_text(cell) for cell in row))
    console.print(grid)


def keyvalues(pairs: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
    items = list(pairs.items()) if isinstance(pairs, Mapping) else list(pairs)
    grid = Table(box=None, pad_edge=False, show_edge=False, show_header=False)
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in items:
        grid.add_row(str(key), _text(value))
    console.print(grid)


def line(text: str = "") -> None:
    console.print(text, markup=False)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return "; ".join(f"{k}={_text(v)}" for k, v in value.items()) or "-"
    return str(value)


class CLIError(click.ClickException):
    """One clear line on stderr and exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


def fail(message: str) -> NoReturn:
    raise CLIError(message)
