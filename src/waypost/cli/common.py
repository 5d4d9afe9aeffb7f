"""What every command shares: ``--data``, opening the services, error mapping.

Invariants: a command opens its store only through ``open_services`` (which
uses ``waypost.storage.open``); every refusal of a service or the store
becomes one ``error:`` line on stderr and exit status 1.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from waypost.cli.output import CLIError
from waypost.services.container import Services, open_services
from waypost.services.names import DirectoryError
from waypost.services.router.table import TableError
from waypost.settings import SettingError
from waypost.storage.open import StoreError

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DATA = "./var"


def _remember_data(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.find_root().meta["waypost.data"] = value


_DATA: dict[str, Any] = {
    "metavar": "DIR",
    "expose_value": False,
    "is_eager": True,
    "callback": _remember_data,
    "help": "data directory (env WAYPOST_DATA, default ./var)",
}


def data_option(func: F) -> F:
    """``--data DIR`` accepted on the group and on every command."""
    return click.option("--data", **_DATA)(func)


def data_param() -> click.Option:
    """The same ``--data DIR`` for commands built without decorators."""
    return click.Option(["--data"], **_DATA)


def data_dir(ctx: click.Context | None = None) -> Path:
    ctx = ctx or click.get_current_context()
    chosen = ctx.find_root().meta.get("waypost.data")
    return Path(chosen or os.environ.get("WAYPOST_DATA") or DEFAULT_DATA)


@contextlib.contextmanager
def services(*, create: bool = False) -> Iterator[Services]:
    """Open the services for one command; any refusal becomes one error line."""
    with friendly_errors():
        svc = open_services(data_dir(), create=create)
        try:
            yield svc
        finally:
            svc.close()


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    try:
        yield
    except (StoreError, DirectoryError, SettingError, TableError, ValueError) as exc:
        raise CLIError(str(exc)) from None


def pairs(values: tuple[str, ...]) -> dict[str, str]:
    """``KEY VALUE [KEY VALUE ...]`` -> dict, or a usage error."""
    if not values or len(values) % 2:
        raise click.UsageError("expected KEY VALUE pairs")
    return dict(zip(values[0::2], values[1::2], strict=True))


def read_text_argument(file: str) -> str:
    """The text of FILE, or of standard input for ``-``; one error line if unreadable."""
    try:
        if file == "-":
            return sys.stdin.read()
        with open(file, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"cannot read {file}: {exc}") from None
