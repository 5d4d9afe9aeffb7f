"""``waypost router show|set|check``: the Router Table.

``set`` and ``check`` print a ``warning:`` line on stderr for every record
that is valid but takes mail or signals away from a server domain
(``services/router/lint.py``); the table is stored all the same (exit 0).
"""

from __future__ import annotations

import sys

import click

from waypost.cli.common import data_option, read_text_argument, services
from waypost.cli.output import line


@click.group("router")
def router_group() -> None:
    """The Router Table (see router.md)."""


@router_group.command("show")
@data_option
def show() -> None:
    """Print the table as stored, one record per line."""
    with services() as svc:
        text = svc.router.get_table()
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")


@router_group.command("set")
@data_option
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False))
def set_(file: str) -> None:
    """Replace the table with FILE ('-' reads stdin); a bad table changes nothing."""
    text = read_text_argument(file)
    with services() as svc:
        compiled = svc.router.set_table(text)
        line(f"Router table set: {len(compiled.records)} records")
        _warn(svc.router.warnings(compiled))


@router_group.command("check")
@data_option
def check() -> None:
    """Report records that would take mail away from a server domain."""
    with services() as svc:
        warnings = svc.router.warnings()
        _warn(warnings)
        if not warnings:
            line("no problems found")


def _warn(warnings: list[str]) -> None:
    for text in warnings:
        click.echo(f"warning: {text}", err=True)


COMMANDS = [router_group]
