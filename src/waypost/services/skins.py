"""Skin files: the stock skins, server-wide and domain skins, the search order (web.md §5).

Layout (web.md §5.2, [waypost]):

* stock skins are package data: ``waypost/web/skins/<skin>/<file>`` (read-only);
* server-wide skins: ``<data>/skins/server/<skin>/<file>``;
* domain skins: ``<data>/skins/domains/<domain>/<skin>/<file>`` (canonical domain name);
* the unnamed skin (the empty name ``""`` of the spec) is the directory ``unnamed`` at
  every level, so the skin name ``unnamed`` is reserved (in any letter case).

Skins are flat: a skin is one directory of files, no sub-folders.

Invariants:

* A skin name and a file name are one path component: not empty (the skin name may
  be ``""``: the unnamed skin), no ``/``, ``\\``, ``..``, NUL or other control or
  format characters, no leading dot, no leading/trailing space, at most 255 bytes of
  UTF-8. Anything else is a :class:`SkinError` before the file system is touched.
* No path ever leaves its skins directory: a file or directory reached through a
  symbolic link pointing outside is treated as absent (and logged).
* Writes are atomic and durable: a temporary file (a dot name, so never a skin
  file) in the same directory, fsync, rename over the target, fsync of the
  directory. A reader sees the old file or the new one, never a mixture.
* Every store gives the file an mtime strictly later than the file it replaces
  (from the real clock in nanoseconds, not the coarse file-system tick), so
  ``version`` changes with every store and page caches keyed on it never go stale.
* ``find``/``version`` are the hot path (every page request): a few ``stat``
  calls, no directory listing, no database. They do not check that the domain
  exists (the caller got it from the Router); administrative calls do, through the
  Directory when one is given.

The unnamed skin exists at every level implicitly: storing a file into it creates
its directory; named skins must be created first (``CreateDomainSkin``). The
methods block (file I/O); the server calls them from a worker thread.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import logging
import os
import secrets
import shutil
import stat
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from waypost.services.names import DirectoryError, domain_name
from waypost.storage.durable import fsync_dir
from waypost.storage.interface import StoreError

if TYPE_CHECKING:
    from waypost.services.directory import Directory

__all__ = ["MAX_FILE_SIZE", "UNNAMED_DIR", "SkinError", "SkinFile", "Skins", "stock_root"]

log = logging.getLogger(__name__)

UNNAMED_DIR = "unnamed"
"""Directory of the unnamed skin ``""`` at every level (the name is reserved)."""

MAX_FILE_SIZE = 16 * 1024 * 1024
"""[waypost] A skin file is at most 16 MiB (pages, styles, images)."""

_MAX_NAME_BYTES = 255
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_TEXT_SUFFIXES = (".wssp", ".wssi")  # WSSP files are UTF-8 (§4.1)


class SkinError(ValueError):
    """A skin request refused, with one human-readable line."""


@dataclass(frozen=True)
class SkinFile:
    """One file as the search order found it; ``level`` is ``domain:<skin>``,
    ``server:<skin>`` or ``stock:<skin>`` (``domain:`` is the domain's unnamed skin)."""

    name: str
    level: str
    data: bytes
    mtime: float


def stock_root() -> Path:
    """Where the stock skins are: ``waypost/web/skins`` as a package resource.

    Resolved relative to the ``waypost`` package (already imported), so reading the
    resource does not import ``waypost.web`` (a layer above the services).
    """
    root = importlib.resources.files("waypost") / "web" / "skins"
    if isinstance(root, Path):
        return root
    # A zipped install: there is no file-system path to stat. [waypost] not supported.
    log.warning("stock skins are not on the file system (%s): none available", root)
    return Path(os.devnull) / "no-stock-skins"


@functools.lru_cache(maxsize=4096)
def _component(kind: str, value: str) -> str:
    """``value`` if it is one safe path component, else a SkinError saying why."""
    if not isinstance(value, str) or not value:
        raise SkinError(f"{kind} name must not be empty")
    shown = repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
    if value.startswith("."):
        raise SkinError(f"invalid {kind} name {shown}: it may not start with '.'")
    if ".." in value:
        raise SkinError(f"invalid {kind} name {shown}: '..' is not allowed")
    for ch in value:
        if ch in "/\\":
            raise SkinError(f"invalid {kind} name {shown}: {ch!r} is not allowed")
        if unicodedata.category(ch) in _BAD_CATEGORIES:
            raise SkinError(
                f"invalid {kind} name {shown}: control character U+{ord(ch):04X} is not allowed")
    if value != value.strip():
        raise SkinError(f"invalid {kind} name {shown}: leading or trailing space")
    if len(value.encode("utf-8")) > _MAX_NAME_BYTES:
        raise SkinError(f"invalid {kind} name {shown}: longer than {_MAX_NAME_BYTES} bytes")
    return value


def check_file_name(name: str) -> str:
    """A skin file name, checked (one path component, see the module invariants)."""
    return _component("file", name)


def check_skin_name(skin: str) -> str:
    """A skin name, checked; ``""`` is the unnamed skin."""
    if skin == "":
        return skin
    if not isinstance(skin, str):
        raise SkinError("skin name must be text")
    if skin.casefold() == UNNAMED_DIR:
        raise SkinError(f"the skin name {skin!r} is reserved: the unnamed skin is the empty"
                        " name \"\"")
    return _component("skin", skin)


def _skin_dir(skin: str) -> str:
    return UNNAMED_DIR if check_skin_name(skin) == "" else skin


def describe(domain: str | None, skin: str) -> str:
    """``the unnamed skin of domain d.dom`` / ``skin 'Lite' (server-wide)``: for messages."""
    what = "the unnamed skin" if skin == "" else f"skin {skin!r}"
    return f"{what} of domain {domain}" if domain else f"{what} (server-wide)"


class Skins:
    """The skin files of one data directory, and the stock skins of the package."""

    def __init__(self, data_dir: Path, *, directory: Directory | None = None,
                 stock: Path | None = None) -> None:
        """``directory``, when given, is asked whether a domain exists (and resolves
        Domain Aliases) for the administrative calls; without it a domain name is only
        checked for its form. ``stock`` replaces the package's stock skins (tests,
        packagers)."""
        self.root = Path(data_dir) / "skins"
        self.stock = stock_root() if stock is None else Path(stock)
        self._directory = directory

    # -- the search order (hot path) ---------------------------------------------

    def find(self, domain: str | None, skin: str, name: str) -> SkinFile | None:
        """The file ``name`` for a request in ``domain`` using ``skin`` (§5.3): the first
        of the six levels that has it, or None. ``domain`` None or ``""`` starts at
        level 2 (server-wide). Invalid names are a SkinError."""
        check_file_name(name)
        for level, directory, root in self._levels(domain, skin):
            hit = self._resolve(directory / name, root)
            if hit is None:
                continue
            try:  # the resolved path: a link swapped in since the check is refused (ELOOP)
                fd = os.open(hit[1], os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed since the stat: the next level decides
            except OSError as exc:
                log.warning("skin file %s not readable: %s", hit[1], exc)
                continue
            with os.fdopen(fd, "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode):
                    continue
                data = handle.read()
            return SkinFile(name, level, data, info.st_mtime)
        return None

    def version(self, domain: str | None, skin: str, name: str) -> tuple[str, float] | None:
        """``(level, mtime)`` of the file ``find`` would return, from stat calls only: a
        cache revalidates with it (a store always changes the mtime)."""
        check_file_name(name)
        for level, directory, root in self._levels(domain, skin):
            info = self._regular(directory / name, root)
            if info is not None:
                return level, info.st_mtime
        return None

    def _levels(self, domain: str | None, skin: str) -> list[tuple[str, Path, Path]]:
        """The six levels of §5.3 as (label, directory, containment root), duplicates
        (skin ``""``) removed and domain levels dropped without a domain."""
        named = _skin_dir(skin)
        domain_dir = _component("domain", domain.lower().rstrip(".")) if domain else None
        skins = (skin, "") if skin else ("",)
        levels: list[tuple[str, Path, Path]] = []
        for one, folder in zip(skins, (named, UNNAMED_DIR), strict=False):
            if domain_dir is not None:
                levels.append((f"domain:{one}", self.root / "domains" / domain_dir / folder,
                               self.root))
            levels.append((f"server:{one}", self.root / "server" / folder, self.root))
            levels.append((f"stock:{one}", self.stock / folder, self.stock))
        return levels

    @staticmethod
    def _regular(path: Path, root: Path) -> os.stat_result | None:
        """stat of ``path`` if it is a regular file that stays inside ``root``."""
        hit = Skins._resolve(path, root)
        return None if hit is None else hit[0]

    @staticmethod
    def _resolve(path: Path, root: Path) -> tuple[os.stat_result, str] | None:
        """(stat, path with links resolved) if ``path`` is a regular file inside ``root``."""
        try:
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:  # ELOOP, EACCES, a name too long for this file system
            log.warning("skin file %s not usable: %s", path, exc)
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        real = _within(path, root)
        if real is None:
            log.warning("skin file %s leaves %s through a symbolic link: ignored", path, root)
            return None
        return info, real

    # -- administration -----------------------------------------------------------

    def canonical_domain(self, domain: str) -> str:
        """The domain's canonical name (a Domain Alias resolves to its domain); a
        SkinError for a bad name, or, with a Directory, for a domain that does not exist."""
        if self._directory is not None:
            try:
                return self._directory.get_domain(domain).name
            except (StoreError, DirectoryError) as exc:
                raise SkinError(str(exc) or f"unknown domain {domain!r}") from None
        try:
            return domain_name(domain)
        except DirectoryError as exc:
            raise SkinError(str(exc)) from None

    def list_skins(self, domain: str | None = None) -> list[str]:
        """The skins of one level (``domain`` None: server-wide), ``""`` (the unnamed
        skin, which always exists) first, then the named ones sorted."""
        return ["", *self._names(self._level_dir(domain))]

    def stock_skins(self) -> list[str]:
        """The stock skins shipped with the package, ``""`` first."""
        return ["", *self._names(self.stock)]

    def list_files(self, domain: str | None, skin: str) -> list[tuple[str, int, float]]:
        """The skin's own files at this level (no inheritance): (name, size, mtime),
        sorted by name. A named skin that does not exist is a SkinError."""
        return self._files(self._skin_path(domain, skin, must_exist=bool(skin)), self.root)

    def stock_files(self, skin: str) -> list[tuple[str, int, float]]:
        """The files of a stock skin (empty for a skin the package does not ship)."""
        return self._files(self.stock / _skin_dir(skin), self.stock)

    def effective_files(self, domain: str | None, skin: str) -> list[tuple[str, str, int, float]]:
        """Every file a request in ``domain`` with ``skin`` can get, with the level that
        provides it: (name, level, size, mtime), sorted by name. Lists directories: for
        administrators, not for the request path."""
        if domain:
            domain = self.canonical_domain(domain)
        seen: dict[str, tuple[str, str, int, float]] = {}
        for level, directory, root in self._levels(domain, skin):
            for name, size, mtime in self._files(directory, root):
                seen.setdefault(name, (name, level, size, mtime))
        return [seen[name] for name in sorted(seen)]

    def read(self, domain: str | None, skin: str, name: str) -> bytes:
        """The skin's own file ``name`` at this level (no search)."""
        path = self._skin_path(domain, skin, must_exist=bool(skin)) / check_file_name(name)
        hit = self._resolve(path, self.root)
        if hit is None:
            raise SkinError(f"{describe(domain, skin)} has no file {name!r}")
        try:
            with open(hit[1], "rb", opener=_nofollow) as handle:
                return handle.read()
        except OSError as exc:
            raise SkinError(f"cannot read {name!r} of {describe(domain, skin)}: "
                            f"{exc.strerror}") from None

    def store(self, domain: str | None, skin: str, name: str, data: bytes) -> None:
        """Create or replace the skin's own file ``name`` (atomic and durable). The
        unnamed skin's directory is made on demand; a named skin must exist."""
        check_file_name(name)
        if len(data) > MAX_FILE_SIZE:
            raise SkinError(f"{name!r} is {len(data)} bytes; a skin file is at most "
                            f"{MAX_FILE_SIZE} bytes")
        if name.lower().endswith(_TEXT_SUFFIXES):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SkinError(f"{name!r} is not UTF-8 (byte {exc.start}): WSSP files are"
                                " UTF-8 text") from None
        directory = self._skin_path(domain, skin, must_exist=bool(skin))
        if not skin:
            self._makedirs(directory)
        _atomic_write(directory, name, data)

    def delete_file(self, domain: str | None, skin: str, name: str) -> None:
        """Remove the skin's own file ``name``; the next level shows through again."""
        directory = self._skin_path(domain, skin, must_exist=bool(skin))
        path = directory / check_file_name(name)
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise SkinError(f"{describe(domain, skin)} has no file {name!r}") from None
        if stat.S_ISDIR(info.st_mode):
            raise SkinError(f"{name!r} in {describe(domain, skin)} is a directory")
        path.unlink()
        fsync_dir(directory)

    def create(self, domain: str | None, skin: str) -> None:
        """Create an empty named skin at this level (every file inherited)."""
        if skin == "":
            raise SkinError("the unnamed skin always exists; store files into it")
        path = self._skin_path(domain, skin, must_exist=False)
        if os.path.lexists(path):
            raise SkinError(f"{describe(domain, skin)} already exists")
        self._makedirs(path.parent)
        try:
            path.mkdir()
        except FileExistsError:
            raise SkinError(f"{describe(domain, skin)} already exists") from None
        fsync_dir(path.parent)

    def rename(self, domain: str | None, old: str, new: str) -> None:
        """Rename a named skin of this level (its files go with it)."""
        if old == "" or new == "":
            raise SkinError("the unnamed skin cannot be renamed")
        source = self._skin_path(domain, old, must_exist=True)
        target = self._skin_path(domain, new, must_exist=False)
        if os.path.lexists(target):
            raise SkinError(f"{describe(domain, new)} already exists")
        os.rename(source, target)
        fsync_dir(target.parent)

    def remove(self, domain: str | None, skin: str) -> None:
        """Delete a skin of this level with its files. For the unnamed skin this drops
        the level's own files (everything is inherited again)."""
        path = self._skin_path(domain, skin, must_exist=True)
        # Out of sight in one atomic step, then deleted (rmtree never follows links).
        doomed = path.parent / f".removed-{secrets.token_hex(8)}"
        os.rename(path, doomed)
        fsync_dir(path.parent)
        shutil.rmtree(doomed)

    # -- helpers ------------------------------------------------------------------

    def _level_dir(self, domain: str | None) -> Path:
        if not domain:
            return self.root / "server"
        canonical = self.canonical_domain(domain)
        return self.root / "domains" / _component("domain", canonical)

    def _skin_path(self, domain: str | None, skin: str, *, must_exist: bool) -> Path:
        """The directory of ``skin`` at this level, checked to stay under the skins root
        (also through links); with ``must_exist`` a missing skin is a SkinError."""
        path = self._level_dir(domain) / _skin_dir(skin)
        if not _inside(path, self.root):
            raise SkinError(f"{describe(domain, skin)}: its directory leaves the skins"
                            " directory through a symbolic link")
        if must_exist and not path.is_dir():
            raise SkinError(f"{describe(domain, skin)} does not exist")
        return path

    def _makedirs(self, path: Path) -> None:
        """mkdir -p with an fsync of each parent that got a new entry."""
        missing: list[Path] = []
        probe = path
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        for folder in reversed(missing):
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
            fsync_dir(folder.parent)

    @staticmethod
    def _names(level: Path) -> list[str]:
        """Named skins in a level directory (the unnamed one and odd entries skipped)."""
        try:
            entries = list(os.scandir(level))
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = []
        for entry in entries:
            if entry.name == UNNAMED_DIR or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                names.append(check_skin_name(entry.name))
            except SkinError:
                continue
        return sorted(names)

    @staticmethod
    def _files(directory: Path, root: Path) -> list[tuple[str, int, float]]:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        files = []
        for entry in entries:
            try:
                check_file_name(entry.name)
            except SkinError:
                continue  # temporary files, names this module would never write
            info = Skins._regular(Path(entry.path), root)
            if info is not None:
                files.append((entry.name, info.st_size, info.st_mtime))
        return sorted(files)


_real_roots: dict[Path, str] = {}


class DomainSkins:
    """The skins of a domain follow the domain (``Directory.domain_files``):
    renamed with it, deleted with it; a domain created under a name whose
    skins were left behind (a crash between the store and the files) starts
    without them."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "skins" / "domains"

    def _dir(self, domain: str) -> Path:
        return self.root / _component("domain", domain)

    def domain_renamed(self, old: str, new: str) -> None:
        source, target = self._dir(old), self._dir(new)
        if not source.is_dir() or source.is_symlink():
            return
        if os.path.lexists(target):
            raise DirectoryError(f"skins of domain {new} already exist in {target}; move them"
                                 " away first")
        os.rename(source, target)
        fsync_dir(self.root)

    def domain_deleted(self, name: str) -> None:
        path = self._dir(name)
        if not os.path.lexists(path):
            return
        doomed = self.root / f".removed-{secrets.token_hex(8)}"
        os.rename(path, doomed)
        fsync_dir(self.root)
        if doomed.is_symlink():
            doomed.unlink()
        else:
            shutil.rmtree(doomed)

    def domain_created(self, name: str) -> None:
        self.domain_deleted(name)


def _within(path: Path, root: Path) -> str | None:
    """``path`` with every symbolic link resolved, if that is below ``root`` (resolved).

    The resolved root is remembered (the hot path resolves only the file); on a miss it
    is resolved again, so a skins directory moved or linked elsewhere at run time is
    followed, never trusted stale."""
    real = os.path.realpath(path)
    for fresh in (False, True):
        real_root = _real_roots.get(root) if not fresh else None
        if real_root is None:
            real_root = _real_roots[root] = os.path.realpath(root).rstrip(os.sep) + os.sep
        if real.startswith(real_root):
            return real
    return None


def _inside(path: Path, root: Path) -> bool:
    return _within(path, root) is not None


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


def _atomic_write(directory: Path, name: str, data: bytes) -> None:
    """Temp file + fsync + rename + directory fsync; the mtime strictly increases."""
    target = directory / name
    fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)
            os.fsync(handle.fileno())
        mtime = time.time_ns()
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            mtime = max(mtime, os.lstat(target).st_mtime_ns + 1000)
        os.utime(temp, ns=(mtime, mtime))
        if os.path.isdir(target) and not os.path.islink(target):
            raise SkinError(f"{name!r} is a directory in {directory.name}")
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_dir(directory)

