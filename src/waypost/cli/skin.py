"""``waypost skin ...``: server-wide and domain skins of the WebUser interface
(web.md §5; CGP's ``...ServerSkin...`` / ``...DomainSkin...`` CLI of §5.2).

Every command works on one level: server-wide without ``--domain``, the domain's
own skins with ``--domain D`` (a Domain Alias means its domain). ``--skin NAME``
picks the skin; without it (or with ``--skin ""``) the unnamed skin, the default.
``get`` prints what the search order of §5.3 finds for that domain and skin
(server-wide: from level 2), byte for byte, so ``get ... > file`` round-trips;
the other commands touch only the level's own files. Stock skins are read-only.
A change takes effect on the next page request: the web pages revalidate their
cache with ``Skins.version``.
"""

from __future__ import annotations

import sys
import time

import click

from waypost.cli.common import data_option, friendly_errors, services
from waypost.cli.output import fail, line, table
from waypost.services.container import Services
from waypost.services.skins import Skins, check_file_name, describe

_DOMAIN = click.option("--domain", metavar="D",
                       help="the skins of domain D (default: the server-wide skins)")
_SKIN = click.option("--skin", metavar="NAME", default="", show_default=False,
                     help="the skin (default: the unnamed skin)")


def _skins(svc: Services) -> Skins:
    return Skins(svc.data_dir, directory=svc.directory)


def _domain(skins: Skins, domain: str | None) -> str | None:
    return skins.canonical_domain(domain) if domain else None


def _shown(skin: str) -> str:
    return skin or '"" (unnamed)'


def _level(label: str) -> str:
    """``stock:`` -> ``stock``, ``domain:Lite`` -> ``domain Lite``."""
    kind, _, skin = label.partition(":")
    return f"{kind} {skin}" if skin else kind


def _when(mtime: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime))


def _read_source(source: str | None) -> bytes:
    """SOURCE's bytes (a path), or standard input for ``-`` / nothing; binary-safe,
    since skins hold images too."""
    try:
        if source in (None, "-"):
            if source is None and sys.stdin.isatty():
                fail("give SOURCE (a file, or '-' for standard input) or pipe the file in")
            return sys.stdin.buffer.read()
        with open(source, "rb") as handle:
            return handle.read()
    except OSError as exc:
        fail(f"cannot read {source}: {exc.strerror or exc}")


@click.group("skin")
def skin_group() -> None:
    """WebUser skins: server-wide (no option) or of --domain D; the unnamed
    skin unless --skin NAME."""


@skin_group.command("list")
@data_option
@_DOMAIN
def list_(domain: str | None) -> None:
    """The skins usable at this level: its own (domain or server-wide), then
    the inherited server-wide and stock skins, with their number of files."""
    with services() as svc:
        skins = _skins(svc)
        dom = _domain(skins, domain)
        rows: list[tuple[str, str, int]] = []
        if dom:
            rows += [(_shown(s), f"domain {dom}", len(skins.list_files(dom, s)))
                     for s in skins.list_skins(dom)]
        rows += [(_shown(s), "server", len(skins.list_files(None, s)))
                 for s in skins.list_skins(None)]
        rows += [(_shown(s), "stock", len(skins.stock_files(s))) for s in skins.stock_skins()]
    table(["skin", "level", "files"], rows)


@skin_group.command("files")
@data_option
@_DOMAIN
@_SKIN
@click.option("--all", "everything", is_flag=True,
              help="every file the search order gives this domain and skin, with its level")
def files(domain: str | None, skin: str, everything: bool) -> None:
    """The skin's own files at this level (name, size, modified); --all lists
    the inherited ones too and where each comes from."""
    with services() as svc:
        skins = _skins(svc)
        dom = _domain(skins, domain)
        if everything:
            found = skins.effective_files(dom, skin)
            table(["file", "level", "size", "modified"],
                  [(n, _level(level), size, _when(m)) for n, level, size, m in found],
                  empty=f"no files for {describe(dom, skin)}")
            return
        own = skins.list_files(dom, skin)
    table(["file", "size", "modified"], [(n, size, _when(m)) for n, size, m in own],
          empty=f"{describe(dom, skin)} has no files of its own (all inherited)")


@skin_group.command("get")
@data_option
@_DOMAIN
@_SKIN
@click.argument("file")
def get(domain: str | None, skin: str, file: str) -> None:
    """Print FILE as the search order finds it for this domain and skin
    (the domain's own, else server-wide, else stock; a named skin falls back
    to the unnamed one), byte for byte."""
    with services() as svc:
        skins = _skins(svc)
        dom = _domain(skins, domain)
        found = skins.find(dom, skin, file)
    if found is None:
        fail(f"no file {file!r} for {describe(dom, skin)} at any level")
    sys.stdout.buffer.write(found.data)
    sys.stdout.buffer.flush()


@skin_group.command("put")
@data_option
@_DOMAIN
@_SKIN
@click.argument("file")
@click.argument("source", required=False)
def put(domain: str | None, skin: str, file: str, source: str | None) -> None:
    """Store FILE in the skin from SOURCE (a path; '-' or nothing reads standard
    input), replacing the level's own copy atomically. Effective on the next
    request."""
    with friendly_errors():
        check_file_name(file)  # before reading standard input
    data = _read_source(source)
    with services() as svc:
        skins = _skins(svc)
        dom = _domain(skins, domain)
        skins.store(dom, skin, file, data)
    line(f"{file} stored in {describe(dom, skin)} ({len(data)} bytes)")


@skin_group.command("delete")
@data_option
@_DOMAIN
@_SKIN
@click.argument("file")
def delete(domain: str | None, skin: str, file: str) -> None:
    """Delete the level's own FILE from the skin; the inherited one shows again."""
    with services() as svc:
        skins = _skins(svc)
        dom = _domain(skins, domain)
        skins.delete_file(dom, skin, file)
    line(f"{file} deleted from {describe(dom, skin)}")


@skin_group.command("create")
@data_option
@_DOMAIN
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
def create(domain: str | None, names: tuple[str, ...]) -> None:
    """Create empty named skins at this level (their files are inherited until
    you put some)."""
    with services() as svc:
        skins = _skins(svc)
        dom = _domain(skins, domain)
        for name in names:
            skins.create(dom, name)
            line(f"{describe(dom, name)} created")


@skin_group.command("rename")
@data_option
@_DOMAIN
@click.argument("old")
@click.argument("new")
def rename(domain: str | None, old: str, new: str) -> None:
    """Rename the named skin OLD of this level to NEW, with its files."""
    with services() as svc:
        skins = _skins(svc)
        dom = _domain(skins, domain)
        skins.rename(dom, old, new)
    line(f"{describe(dom, old)} renamed to {new!r}")


@skin_group.command("remove")
@data_option
@_DOMAIN
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
def remove(domain: str | None, names: tuple[str, ...]) -> None:
    """Delete skins of this level with their files ('""' removes the level's
    own files of the unnamed skin, so everything is inherited again)."""
    with services() as svc:
        skins = _skins(svc)
        dom = _domain(skins, domain)
        for name in names:
            skins.remove(dom, name)
            line(f"{describe(dom, name)} removed")


COMMANDS = [skin_group]
