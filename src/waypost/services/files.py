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

import contextlib
import hashlib
import json
import os
import secrets
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
    "AccountFiles", "AlreadyExists", "DeadProperties", "FileEntry", "FileError", "FileLimits",
    "FileUsage", "InvalidFileName", "NotAllowed", "NotFound", "QuotaExceeded", "StoreError",
    "check_path",
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

    # -- WebDAV helpers (issue 11 point 6) ---------------------------------------

    def copy(self, account: str, src: str, dst: str, actor: str | None = None, *,
             overwrite: bool = False, depth_zero: bool = False) -> bool:
        """Copy a file or a folder tree (``depth_zero``: the folder alone) to
        ``dst``; every file and folder written is a normal write, so the quota
        holds on each. An existing ``dst`` is deleted first when ``overwrite``
        (else :class:`AlreadyExists`). Returns whether ``dst`` existed.
        [waypost] not atomic for a tree: a quota stop leaves the part copied
        (RFC 4918 §9.8.8 lets a COPY fail part-way)."""
        domain, name = self._owner(account, actor, write=True)
        src, dst = check_path(src), check_path(dst)
        if not src or not dst:
            raise InvalidFileName("the storage root cannot be copied or replaced")
        if dst == src or dst.startswith(src + "/") or src.startswith(dst + "/"):
            raise InvalidFileName(f"/{src} cannot be copied into itself or over its folder")
        entry = self.store.files_stat(domain, name, src)
        existed = self._clear(domain, name, dst, overwrite)
        limits = self.limits(account)
        self._copy(domain, name, entry, dst, limits, depth_zero)
        props = DeadProperties(self.services)
        props.copied(f"{name}@{domain}", src, dst, tree=not depth_zero)
        return existed

    def _copy(self, domain: str, name: str, entry: FileEntry, dst: str, limits: FileLimits,
              depth_zero: bool) -> None:
        if not entry.is_folder:
            with self.store.files_open(domain, name, entry.path) as opened:
                self.store.files_write(domain, name, dst, iter(lambda: opened.read(CHUNK), b""),
                                       limits, mtime=entry.mtime)
            return
        self.store.files_mkdir(domain, name, dst, limits)
        if depth_zero:
            return
        for child in self.store.files_list(domain, name, entry.path):
            self._copy(domain, name, child, f"{dst}/{child.name}", limits, False)

    def move(self, account: str, src: str, dst: str, actor: str | None = None, *,
             overwrite: bool = False) -> bool:
        """Rename ``src`` to ``dst`` (an existing ``dst`` is deleted first when
        ``overwrite``, else :class:`AlreadyExists`); its dead properties move
        with it. Returns whether ``dst`` existed."""
        domain, name = self._owner(account, actor, write=True)
        src, dst = check_path(src), check_path(dst)
        self.store.files_stat(domain, name, src)  # NotFound before anything is deleted
        if dst == src or dst.startswith(src + "/") or src.startswith(dst + "/"):
            raise InvalidFileName(f"/{src} cannot move into itself or over its folder")
        existed = self._clear(domain, name, dst, overwrite)
        self.store.files_rename(domain, name, src, dst)
        DeadProperties(self.services).moved(f"{name}@{domain}", src, dst)
        return existed

    def remove(self, account: str, path: str, actor: str | None = None) -> int:
        """Delete a file or a whole folder tree and its dead properties."""
        removed = self.delete(account, path, actor, recursive=True)
        record = self.services.directory.get_account(account)
        DeadProperties(self.services).removed(f"{record.name}@{record.domain}",
                                              check_path(path))
        return removed

    def _clear(self, domain: str, name: str, dst: str, overwrite: bool) -> bool:
        try:
            self.store.files_stat(domain, name, dst)
        except NotFound:
            return False
        if not overwrite:
            raise AlreadyExists(f"/{dst} already exists")
        self.store.files_delete(domain, name, dst, recursive=True)
        DeadProperties(self.services).removed(f"{name}@{domain}", dst)
        return True

    def properties(self, account: str, path: str, actor: str | None = None) -> dict[str, str]:
        """The dead (client-set) WebDAV properties of a file or folder:
        Clark name -> the property element as XML text."""
        domain, name = self._owner(account, actor, write=False)
        path = check_path(path)
        self.store.files_stat(domain, name, path)
        return DeadProperties(self.services).get(f"{name}@{domain}", path)

    def properties_of(self, account: str, paths: Iterable[str], actor: str | None = None
                      ) -> dict[str, dict[str, str]]:
        """The dead properties of several paths at once (a PROPFIND of a
        folder with thousands of entries reads the account's file once)."""
        domain, name = self._owner(account, actor, write=False)
        wanted = {check_path(p) for p in paths}
        return DeadProperties(self.services).get_many(f"{name}@{domain}", wanted)

    def set_properties(self, account: str, path: str, changes: Sequence[tuple[str, str | None]],
                       actor: str | None = None) -> None:
        """Apply PROPPATCH changes in order, all or none (RFC 4918 §9.2):
        (Clark name, XML text) sets, (Clark name, None) removes."""
        domain, name = self._owner(account, actor, write=True)
        path = check_path(path)
        self.store.files_stat(domain, name, path)
        DeadProperties(self.services).update(f"{name}@{domain}", path, changes)


MAX_PROPERTIES = 64
"""Dead properties one file or folder may hold [waypost]."""
MAX_PROPERTY_BYTES = 16 * 1024
"""Largest stored property (its XML text) [waypost]."""
MAX_ACCOUNT_PROPERTY_BYTES = 1024 * 1024
"""All dead properties of one account together [waypost]."""


class DeadProperties:
    """Dead WebDAV properties (RFC 4918 §4.2), one JSON file per account in
    the data directory (``webdav-properties/<sha256 of owner>.json``),
    replaced atomically and durably under a process-wide lock.

    [waypost] kept beside the File Storage rather than in it: the storage
    interface has no metadata calls and properties are optional client
    decoration (Windows/macOS timestamps, editors' notes), bounded by
    :data:`MAX_PROPERTIES`, :data:`MAX_PROPERTY_BYTES` and
    :data:`MAX_ACCOUNT_PROPERTY_BYTES` so they cannot bypass the quota."""

    _lock = threading.Lock()

    def __init__(self, services: Services) -> None:
        self.root = Path(services.data_dir) / "webdav-properties"

    def _file(self, owner: str) -> Path:
        return self.root / (hashlib.sha256(owner.lower().encode()).hexdigest() + ".json")

    def _load(self, owner: str) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self._file(owner).read_text("utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, owner: str, data: dict[str, dict[str, str]]) -> None:
        data = {k: v for k, v in data.items() if v}
        target = self._file(owner)
        if not data:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            return
        text = json.dumps(data, ensure_ascii=False, sort_keys=True)
        if len(text.encode()) > MAX_ACCOUNT_PROPERTY_BYTES:
            raise QuotaExceeded("the account's WebDAV properties are over their limit")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{secrets.token_hex(6)}.tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)

    def get(self, owner: str, path: str) -> dict[str, str]:
        with self._lock:
            return dict(self._load(owner).get(path, {}))

    def get_many(self, owner: str, paths: set[str]) -> dict[str, dict[str, str]]:
        with self._lock:
            data = self._load(owner)
        return {p: dict(data.get(p, {})) for p in paths}

    def update(self, owner: str, path: str, changes: Sequence[tuple[str, str | None]]) -> None:
        with self._lock:
            data = self._load(owner)
            props = dict(data.get(path, {}))
            for key, value in changes:
                if value is None:
                    props.pop(key, None)
                elif len(value.encode()) > MAX_PROPERTY_BYTES:
                    raise QuotaExceeded(f"a WebDAV property is over {MAX_PROPERTY_BYTES} bytes")
                else:
                    props[key] = value
            if len(props) > MAX_PROPERTIES:
                raise QuotaExceeded(f"more than {MAX_PROPERTIES} WebDAV properties")
            data[path] = props
            self._save(owner, data)

    @staticmethod
    def _under(key: str, path: str) -> bool:
        return key == path or key.startswith(path + "/")

    def moved(self, owner: str, src: str, dst: str) -> None:
        with self._lock:
            data = self._load(owner)
            if any(self._under(k, src) for k in data):
                self._save(owner, {(dst + k[len(src):] if self._under(k, src) else k): v
                                   for k, v in data.items()})

    def copied(self, owner: str, src: str, dst: str, *, tree: bool) -> None:
        with self._lock:
            data = self._load(owner)
            new = {dst + k[len(src):]: dict(v) for k, v in data.items()
                   if (self._under(k, src) if tree else k == src)}
            if new:
                data.update(new)
                self._save(owner, data)

    def removed(self, owner: str, path: str) -> None:
        with self._lock:
            data = self._load(owner)
            if any(self._under(k, path) for k in data):
                self._save(owner, {k: v for k, v in data.items() if not self._under(k, path)})
