"""``waypost files ...``: an account's File Storage (its personal web site,
web.md §6.1) for the administrator, through ``services/files.py`` (the same
names, quota and atomic writes as the web and WebDAV).

Paths are ``/``-separated and relative to the storage root (a leading ``/``
is allowed). ``put`` streams SOURCE (a file, or ``-``/nothing for standard
input) in chunks, never holding it whole, and shows a progress bar on a
terminal for files of :data:`PROGRESS_FROM` bytes or more.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import BinaryIO

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from waypost.cli.common import data_option, services
from waypost.cli.output import fail, keyvalues, line, table
from waypost.services.files import CHUNK, AccountFiles

PROGRESS_FROM = 1024 * 1024


@click.group("files")
def files_group() -> None:
    """An account's File Storage: its personal web site's files and folders."""


def _when(mtime: float) -> str:
    return datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d %H:%M")


def _size(value: int | None) -> str:
    if value is None:
        return "unlimited"
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= factor:
            return f"{value / factor:.1f}{unit}"
    return f"{value}B"


@files_group.command("list")
@data_option
@click.argument("account")
@click.argument("folder", default="")
def list_(account: str, folder: str) -> None:
    """Files and folders in FOLDER of ACCOUNT's storage (the root by default)."""
    with services() as svc:
        entries = AccountFiles(svc).list(account, folder)
        table(["Name", "Size", "Modified"],
              [(e.name + ("/" if e.is_folder else ""), "-" if e.is_folder else e.size,
                _when(e.mtime)) for e in entries],
              empty=f"/{folder.strip('/')} is empty")


@files_group.command("info")
@data_option
@click.argument("account")
def info(account: str) -> None:
    """How many files and bytes ACCOUNT stores, against MaxWebFiles and MaxWebSize."""
    with services() as svc:
        found = AccountFiles(svc).info(account)
        limits = found.limits
        keyvalues([
            ("Files and folders", f"{found.usage.files} of "
             f"{'unlimited' if limits.max_files is None else limits.max_files}"),
            ("Size", f"{_size(found.usage.bytes)} ({found.usage.bytes} bytes) of "
             f"{_size(limits.max_bytes)}"),
        ])


def _chunks(handle: BinaryIO, total: int | None, show: bool) -> Iterator[bytes]:
    if not show:
        while chunk := handle.read(CHUNK):
            yield chunk
        return
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), transient=True) as progress:
        task = progress.add_task("uploading", total=total)
        while chunk := handle.read(CHUNK):
            progress.update(task, advance=len(chunk))
            yield chunk


@files_group.command("put")
@data_option
@click.argument("account")
@click.argument("path")
@click.argument("source", required=False, default="-")
@click.option("--parents", "-p", is_flag=True, help="create missing folders on the way")
@click.option("--progress/--no-progress", default=None,
              help="show a progress bar (default: on a terminal, for 1 MB or more)")
def put(account: str, path: str, source: str, parents: bool, progress: bool | None) -> None:
    """Store SOURCE (a file, or - / nothing for standard input) as PATH, replacing
    a file of that name; atomic: readers see the old file or the new one."""
    try:
        handle = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        fail(f"cannot read {source}: {exc.strerror or exc}")
    with handle, services() as svc:
        total = None if source == "-" else os.fstat(handle.fileno()).st_size
        show = progress if progress is not None else (
            sys.stderr.isatty() and (total or 0) >= PROGRESS_FROM)
        entry = AccountFiles(svc).write(account, path, _chunks(handle, total, show),
                                        parents=parents)
        line(f"stored /{entry.path} ({entry.size} bytes)")


@files_group.command("get")
@data_option
@click.argument("account")
@click.argument("path")
def get(account: str, path: str) -> None:
    """Write the file PATH to standard output."""
    with services() as svc, AccountFiles(svc).open(account, path) as opened:
        out = sys.stdout.buffer
        while chunk := opened.read(CHUNK):
            out.write(chunk)
        out.flush()


@files_group.command("mkdir")
@data_option
@click.argument("account")
@click.argument("path")
@click.option("--parents", "-p", is_flag=True, help="create missing folders on the way")
def mkdir(account: str, path: str, parents: bool) -> None:
    """Create the folder PATH."""
    with services() as svc:
        entry = AccountFiles(svc).mkdir(account, path, parents=parents)
        line(f"folder /{entry.path} created")


@files_group.command("mv")
@data_option
@click.argument("account")
@click.argument("old")
@click.argument("new")
def mv(account: str, old: str, new: str) -> None:
    """Rename or move the file or folder OLD to NEW (NEW must not exist)."""
    with services() as svc:
        entry = AccountFiles(svc).rename(account, old, new)
        line(f"/{old.strip('/')} is now /{entry.path}")


@files_group.command("rm")
@data_option
@click.argument("account")
@click.argument("path")
@click.option("--recursive", "-r", is_flag=True, help="delete a folder with what is in it")
def rm(account: str, path: str, recursive: bool) -> None:
    """Delete the file or the folder PATH (a folder that is not empty needs -r)."""
    with services() as svc:
        count = AccountFiles(svc).delete(account, path, recursive=recursive)
        line(f"/{path.strip('/')} deleted ({count} {'entry' if count == 1 else 'entries'})")


COMMANDS = [files_group]
