"""Account File Storage (web.md §6.1): who may change an account's files,
which names are allowed, and the quota, in front of the store's
``files_*`` calls. Used by the CLI, the WebUser "Files" page, site serving
and WebDAV alike, so every write path has the same rules.

Invariants:

* every name is checked here (:func:`check_path`) before the store sees it:
  the store's structural rules (no ``..``, ``/``, NUL, control characters,
  leading dot) plus characters that look like ``/`` or ``\\`` (so a name can
  never be mistaken for a path by a person or a client that normalises
  Unicode) and the reserved ``index.wssp`` [web.md §6.2]; names are stored
  in NFC [waypost];
* every write (file, folder, rename into place) carries the account's
  effective ``MaxWebSize``/``MaxWebFiles`` (account, then domain defaults,
  then server defaults); the store checks them under the account's lock;
* only the owner, an administrator of the owner's domain with
  ``CanAccessWebSites`` (or ``Master``), or the CLI (``actor`` None: the
  server administrator) may change or list the storage [web.md §6.1];
  reading a published file through the web site is the site's business
  (``private/`` and the WebSite service switch), not this module's;
* everything blocks on the store: call from a worker thread.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from waypost.services.container import Services
from waypost.settings import SettingError, parse_size
from waypost.storage.interface import (
    AlreadyExists,
    FileEntry,
    FileError,
    FileLimits,
    FileUsage,
    InvalidFileName,
    NotFound,
    OpenedFile,
    QuotaExceeded,
    StoreError,
)

__all__ = [
    "AccountFiles", "AlreadyExists", "FileEntry", "FileError", "FileLimits", "FileUsage",
    "InvalidFileName", "NotAllowed", "NotFound", "QuotaExceeded", "StoreError", "check_path",
]

RESERVED = frozenset({"index.wssp"})
"""Names File Storage may not hold (web.md §6.2: the management pages)."""
SLASH_LOOKALIKES = frozenset(
    "\u2044\u2215\u29f8\u29f9\u2afb\u2afd\uff0f\uff3c\u2216\u29f5\u29f6\u3033\u3035"
    "\u1735\u0338\u20e5\u27cb\u27cd\u2cc6\u2f03\u4e3f\U0001d23a"
)
"""Characters that show as ``/`` or ``\\``: FRACTION SLASH, DIVISION SLASH,
BIG SOLIDUS, FULLWIDTH SOLIDUS and REVERSE SOLIDUS, SET MINUS, ..."""
CHUNK = 64 * 1024


class NotAllowed(FileError):
    """The acting account may not change this account's File Storage."""


def check_path(path: str) -> str:
    """``path`` in the form the store keeps ("/"-separated, no leading or
    trailing "/", NFC), or :class:`InvalidFileName` saying why not."""
    if not isinstance(path, str):
        raise InvalidFileName("a path must be text")
    if "\x00" in path:
        raise InvalidFileName("a path may not contain NUL")
    path = unicodedata.normalize("NFC", path)
    parts = path.strip("/").split("/") if path.strip("/") else []
    for part in parts:
        if not part:
            raise InvalidFileName("a path has an empty part ('//')")
        if part in (".", ".."):
            raise InvalidFileName(f"{part!r} is not allowed in a path")
        bad = next((ch for ch in part if ch in SLASH_LOOKALIKES or ch == "\\"), None)
        if bad is not None:
            raise InvalidFileName(f"invalid name {part[:40]!r}: U+{ord(bad):04X} looks like a"
                                  " slash and is not allowed")
        if part.strip() != part:
            raise InvalidFileName(f"invalid name {part[:40]!r}: leading or trailing space")
        if part.lower() in RESERVED:
            raise InvalidFileName(f"{part!r} is reserved and cannot be stored")
    return "/".join(parts)


def _limit(value: object, kind: str) -> int | None:
    text = str(value if value is not None else "unlimited").strip()
    try:
        if kind == "size":
            return parse_size(text)
        return None if text.lower() == "unlimited" else int(text)
    except (SettingError, ValueError):
        return 0  # a broken setting refuses writes rather than allowing everything


@dataclass(frozen=True, slots=True)
class Info:
    usage: FileUsage
    limits: FileLimits


class AccountFiles:
    """The File Storage of accounts, as one actor may use it."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = services.store

    # -- who and how much --------------------------------------------------------

    def _owner(self, account: str, actor: str | None, *, write: bool) -> tuple[str, str]:
        """(domain, name) of ``account`` once ``actor`` may use its storage."""
        record = self.services.directory.get_account(account)
        owner = f"{record.name}@{record.domain}"
        if (actor is not None and actor.lower() != owner.lower()
                and not self.services.directory.has_domain_right(actor, record.domain,
                                                                 "CanAccessWebSites")):
            verb = "change" if write else "see"
            raise NotAllowed(f"{actor} may not {verb} the files of {owner}")
        return record.domain, record.name

    def limits(self, account: str) -> FileLimits:
        settings = self.services.directory.effective_account_settings(account)
        return FileLimits(_limit(settings.get("MaxWebSize"), "size"),
                          _limit(settings.get("MaxWebFiles"), "count"))

    def info(self, account: str, actor: str | None = None) -> Info:
        domain, name = self._owner(account, actor, write=False)
        return Info(self.store.files_usage(domain, name), self.limits(account))

    # -- reading -------------------------------------------------------------------

    def list(self, account: str, folder: str = "", actor: str | None = None
             ) -> list[FileEntry]:
        domain, name = self._owner(account, actor, write=False)
        return self.store.files_list(domain, name, check_path(folder))

    def stat(self, account: str, path: str, actor: str | None = None) -> FileEntry:
        domain, name = self._owner(account, actor, write=False)
        return self.store.files_stat(domain, name, check_path(path))

    def open(self, account: str, path: str, actor: str | None = None) -> OpenedFile:
        domain, name = self._owner(account, actor, write=False)
        return self.store.files_open(domain, name, check_path(path))

    # -- changing ------------------------------------------------------------------

    def write(self, account: str, path: str, chunks: Iterable[bytes],
              actor: str | None = None, *, parents: bool = False,
              mtime: float | None = None) -> FileEntry:
        """Store a file (replacing one of that name) atomically and durably;
        ``parents`` creates missing folders first (each counted)."""
        domain, name = self._owner(account, actor, write=True)
        path = check_path(path)
        if not path:
            raise InvalidFileName("a file needs a name")
        limits = self.limits(account)
        if parents:
            self._parents(domain, name, path, limits)
        return self.store.files_write(domain, name, path, chunks, limits, mtime=mtime)

    def write_bytes(self, account: str, path: str, data: bytes, actor: str | None = None,
                    **kwargs: bool) -> FileEntry:
        return self.write(account, path, (data[i:i + CHUNK] for i in range(0, len(data), CHUNK))
                          if data else iter(()), actor, **kwargs)

    def mkdir(self, account: str, path: str, actor: str | None = None, *,
              parents: bool = False) -> FileEntry:
        domain, name = self._owner(account, actor, write=True)
        path = check_path(path)
        limits = self.limits(account)
        if parents:
            self._parents(domain, name, path, limits)
        return self.store.files_mkdir(domain, name, path, limits)

    def rename(self, account: str, old: str, new: str, actor: str | None = None) -> FileEntry:
        domain, name = self._owner(account, actor, write=True)
        return self.store.files_rename(domain, name, check_path(old), check_path(new))

    def delete(self, account: str, path: str, actor: str | None = None, *,
               recursive: bool = False) -> int:
        domain, name = self._owner(account, actor, write=True)
        return self.store.files_delete(domain, name, check_path(path), recursive=recursive)

    def _parents(self, domain: str, name: str, path: str, limits: FileLimits) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folder = "/".join(parts[:i])
            try:
                entry = self.store.files_stat(domain, name, folder)
            except NotFound:
                try:
                    self.store.files_mkdir(domain, name, folder, limits)
                except AlreadyExists:
                    continue  # made meanwhile by another writer
                continue
            if not entry.is_folder:
                raise FileError(f"/{folder} is a file, not a folder")
