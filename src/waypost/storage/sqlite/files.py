"""Account File Storage of the embedded store (web.md §6.1): plain files and
folders under ``DATA/webfiles/<key>/``, one random key per account kept in
the ``file_roots`` table (so renaming an account or its domain moves
nothing, and a new account never inherits a deleted one's files).

Invariants:

* every access walks from the account's root one component at a time with
  ``O_NOFOLLOW`` directory descriptors (``dir_fd``), so no path, however
  spelled, and no symbolic link planted in the tree leads outside it; a
  symbolic link is treated as absent and never listed;
* a component is never empty, ``.``, ``..``, never holds ``/``, ``\\``, NUL or
  another control character, and never starts with ``.`` (names starting
  with a dot are the store's own: ``.tmp``, ``.locks``, ``.removed-*``);
  the user-facing rules (look-alikes of ``/``, ``index.wssp``) are the
  service's (``services/files.py``);
* a write streams into ``webfiles/.tmp`` (same file system), is fsynced,
  then renamed over the target and the folder fsynced: a reader sees the old
  file or the new one, never a part, and a returned write survives a crash;
* quota checks and changes of one account hold its lock: a ``threading``
  lock for the threads of this process and ``flock`` on
  ``webfiles/.locks/<key>`` for other processes; usage is counted by walking
  the tree under that lock, so it is always the truth on disk;
* a deleted account's tree is removed after the deletion committed
  (:meth:`FileStoreMixin.files_gc`); a crash in between leaves an orphan
  that the next sweep removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import sqlite3
import stat
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from waypost.storage.durable import fsync_dir
from waypost.storage.interface import (
    AlreadyExists,
    FileEntry,
    FileError,
    FileLimits,
    FileUsage,
    InvalidFileName,
    NotFound,
    QuotaExceeded,
)
from waypost.storage.sqlite.mail_store import account_id

ROOT = "webfiles"
TMP = ".tmp"
LOCKS = ".locks"
MAX_PART_BYTES = 255
MAX_DEPTH = 64
TMP_AGE = 3600.0
"""A temporary upload file older than this is left over by a crash."""
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def split_path(path: str) -> list[str]:
    """The components of a storage path ("" or "/" is the root);
    :class:`InvalidFileName` for anything that is not a plain name."""
    if not isinstance(path, str):
        raise InvalidFileName("a path must be text")
    parts = [p for p in path.strip("/").split("/")] if path.strip("/") else []
    if len(parts) > MAX_DEPTH:
        raise InvalidFileName(f"path is deeper than {MAX_DEPTH} folders")
    for part in parts:
        check_part(part)
    return parts


def check_part(part: str) -> str:
    if not part:
        raise InvalidFileName("a path has an empty part ('//')")
    shown = repr(part[:40])
    if part in (".", ".."):
        raise InvalidFileName(f"{shown} is not allowed in a path")
    if part.startswith("."):
        raise InvalidFileName(f"invalid name {shown}: names may not start with '.'")
    for ch in part:
        if ch in "/\\" or unicodedata.category(ch) in ("Cc", "Cs"):
            raise InvalidFileName(f"invalid name {shown}: character U+{ord(ch):04X} is not"
                                  " allowed")
    if len(part.encode("utf-8")) > MAX_PART_BYTES:
        raise InvalidFileName(f"invalid name {shown}...: longer than {MAX_PART_BYTES} bytes")
    return part


class _Opened:
    """:class:`waypost.storage.interface.OpenedFile` over a descriptor."""

    def __init__(self, file: BinaryIO, entry: FileEntry, local_path: str) -> None:
        self._file = file
        self.entry = entry
        self.local_path: str | None = local_path

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> _Opened:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _entry(path: str, st: os.stat_result) -> FileEntry:
    folder = stat.S_ISDIR(st.st_mode)
    return FileEntry(path, folder, 0 if folder else st.st_size, st.st_mtime, st.st_mtime_ns)


class FileTrees:
    """The ``webfiles`` directory: account trees, temporary files, locks."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / ROOT
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def ensure(self) -> None:
        for sub in (self.root, self.root / TMP, self.root / LOCKS):
            sub.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """The account's lock, for this process's threads and other processes."""
        self.ensure()
        with self._locks_lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            fd = os.open(self.root / LOCKS / key, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    @contextlib.contextmanager
    def folder(self, key: str, parts: list[str], *, create_root: bool = False
               ) -> Iterator[int]:
        """A descriptor of the folder ``parts`` of the account's tree (walked
        with ``O_NOFOLLOW``); NotFound when a part is missing or not a folder."""
        base = self.root / key
        if create_root:
            self.ensure()
            with contextlib.suppress(FileExistsError):
                base.mkdir(mode=0o700)
                fsync_dir(self.root)
        try:
            fd = os.open(base, DIR_FLAGS)
        except FileNotFoundError:
            raise NotFound("no such folder: /" + "/".join(parts)) from None
        try:
            for i, part in enumerate(parts):
                try:
                    nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
                except (FileNotFoundError, NotADirectoryError, OSError) as exc:
                    if isinstance(exc, OSError) and exc.errno not in (2, 20, 40):
                        raise
                    raise NotFound("no such folder: /" + "/".join(parts[:i + 1])) from None
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    def usage(self, key: str) -> FileUsage:
        """Files and folders and bytes of the tree (symbolic links not counted)."""
        files = size = 0
        stack = [self.root / key]
        while stack:
            try:
                with os.scandir(stack.pop()) as it:
                    for item in it:
                        if item.name.startswith(".") or item.is_symlink():
                            continue
                        files += 1
                        if item.is_dir(follow_symlinks=False):
                            stack.append(Path(item.path))
                        else:
                            size += item.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
        return FileUsage(files, size)

    def remove_tree(self, path: Path) -> None:
        """Out of sight in one rename, then deleted (rmtree never follows links)."""
        doomed = self.root / TMP / f".removed-{secrets.token_hex(8)}"
        os.rename(path, doomed)
        fsync_dir(path.parent)
        shutil.rmtree(doomed, ignore_errors=True)



def _stat_in(fd: int, name: str) -> os.stat_result | None:
    """``name`` in the folder ``fd``, or None when absent or a symbolic link."""
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return None if stat.S_ISLNK(st.st_mode) else st


def _check_limits(limits: FileLimits, usage: FileUsage, files: int, size: int) -> None:
    if limits.max_files is not None and files > usage.files and files > limits.max_files:
        raise QuotaExceeded(f"the storage would hold {files} files and folders; the limit is "
                            f"{limits.max_files}")
    if limits.max_bytes is not None and size > usage.bytes and size > limits.max_bytes:
        raise QuotaExceeded(f"the storage would hold {size} bytes; the limit is "
                            f"{limits.max_bytes}")


class FileStoreMixin:
    """``Store.files_*`` of the embedded store (mixed into ``SqliteStore``)."""

    if TYPE_CHECKING:
        data_dir: Path
        files: FileTrees

        def _txn(self, *, sync: bool = True) -> AbstractContextManager[sqlite3.Connection]: ...
        def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def _file_key(self, domain: str, account: str, *, create: bool) -> str | None:
        with (self._txn() if create else self._read()) as conn:
            owner = account_id(conn, domain, account)
            row = conn.execute("SELECT key FROM file_roots WHERE account_id = ?",
                               (owner,)).fetchone()
            if row is not None:
                return str(row[0])
            if not create:
                return None
            key = secrets.token_hex(16)
            conn.execute("INSERT INTO file_roots (account_id, key) VALUES (?, ?)", (owner, key))
            return key

    def _key(self, domain: str, account: str) -> str:
        key = self._file_key(domain, account, create=True)
        assert key is not None
        return key

    def files_list(self, domain: str, account: str, folder: str) -> list[FileEntry]:
        parts = split_path(folder)
        key = self._file_key(domain, account, create=False)
        if key is None:
            if parts:
                raise NotFound(f"no such folder: /{'/'.join(parts)}")
            return []
        prefix = "/".join(parts)
        out = []
        with self.files.folder(key, parts, create_root=not parts) as fd:
            for name in sorted(os.listdir(fd)):
                if name.startswith("."):
                    continue
                st = _stat_in(fd, name)
                if st is None or not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                    continue
                out.append(_entry(f"{prefix}/{name}" if prefix else name, st))
        return out

    def files_stat(self, domain: str, account: str, path: str) -> FileEntry:
        parts = split_path(path)
        key = self._file_key(domain, account, create=False)
        if key is None:
            if not parts:
                return FileEntry("", True, 0, 0.0)
            raise NotFound(f"no such file: /{'/'.join(parts)}")
        if not parts:
            with self.files.folder(key, [], create_root=True) as fd:
                return _entry("", os.fstat(fd))
        with self.files.folder(key, parts[:-1]) as fd:
            st = _stat_in(fd, parts[-1])
        if st is None or not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            raise NotFound(f"no such file: /{'/'.join(parts)}")
        return _entry("/".join(parts), st)

    def files_open(self, domain: str, account: str, path: str) -> _Opened:
        parts = split_path(path)
        key = self._file_key(domain, account, create=False)
        if key is None or not parts:
            raise NotFound(f"no such file: /{'/'.join(parts)}")
        with self.files.folder(key, parts[:-1]) as dir_fd:
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=dir_fd)
            except (FileNotFoundError, OSError) as exc:
                if isinstance(exc, FileNotFoundError) or exc.errno in (20, 40):
                    raise NotFound(f"no such file: /{'/'.join(parts)}") from None
                raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise NotFound(f"/{'/'.join(parts)} is a folder, not a file")
        local = str(self.files.root / key / Path(*parts))
        return _Opened(os.fdopen(fd, "rb"), _entry("/".join(parts), st), local)

    def files_write(self, domain: str, account: str, path: str, chunks: Iterable[bytes],
                    limits: FileLimits, *, mtime: float | None = None) -> FileEntry:
        parts = split_path(path)
        if not parts:
            raise InvalidFileName("the storage root is a folder, not a file")
        key = self._key(domain, account)
        self.files.ensure()
        tmp_name = f"{key}-{secrets.token_hex(8)}"
        tmp_dir = os.open(self.files.root / TMP, DIR_FLAGS)
        try:
            size = 0
            fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         0o600, dir_fd=tmp_dir)
            try:
                with os.fdopen(fd, "wb", closefd=False) as out:
                    for chunk in chunks:
                        size += len(chunk)
                        if limits.max_bytes is not None and size > limits.max_bytes:
                            raise QuotaExceeded(f"the file is larger than the storage limit "
                                                f"of {limits.max_bytes} bytes")
                        out.write(chunk)
                    out.flush()
                if mtime is not None:
                    os.utime(fd, (mtime, mtime))
                os.fsync(fd)
            finally:
                os.close(fd)
            with self.files.locked(key), self.files.folder(key, parts[:-1],
                                                          create_root=True) as parent:
                old = _stat_in(parent, parts[-1])
                if old is not None and stat.S_ISDIR(old.st_mode):
                    raise FileError(f"/{'/'.join(parts)} is a folder")
                usage = self.files.usage(key)
                old_size = old.st_size if old is not None else 0
                _check_limits(limits, usage, usage.files + (0 if old else 1),
                              usage.bytes - old_size + size)
                os.rename(tmp_name, parts[-1], src_dir_fd=tmp_dir, dst_dir_fd=parent)
                tmp_name = ""
                os.fsync(parent)
                st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            return _entry("/".join(parts), st)
        finally:
            if tmp_name:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_name, dir_fd=tmp_dir)
            os.close(tmp_dir)

    def files_mkdir(self, domain: str, account: str, path: str, limits: FileLimits
                    ) -> FileEntry:
        parts = split_path(path)
        if not parts:
            raise AlreadyExists("the storage root exists")
        key = self._key(domain, account)
        with self.files.locked(key), self.files.folder(key, parts[:-1],
                                                      create_root=True) as parent:
            if _stat_in(parent, parts[-1]) is not None:
                raise AlreadyExists(f"/{'/'.join(parts)} already exists")
            usage = self.files.usage(key)
            _check_limits(limits, usage, usage.files + 1, usage.bytes)
            os.mkdir(parts[-1], 0o700, dir_fd=parent)
            os.fsync(parent)
            return _entry("/".join(parts), os.stat(parts[-1], dir_fd=parent,
                                                   follow_symlinks=False))

    def files_rename(self, domain: str, account: str, old: str, new: str) -> FileEntry:
        src, dst = split_path(old), split_path(new)
        if not src or not dst:
            raise InvalidFileName("the storage root cannot be renamed or replaced")
        if dst[:len(src)] == src:
            raise InvalidFileName(f"/{'/'.join(src)} cannot move into itself")
        key = self._file_key(domain, account, create=False)
        if key is None:
            raise NotFound(f"no such file: /{'/'.join(src)}")
        with self.files.locked(key), self.files.folder(key, src[:-1]) as a, \
                self.files.folder(key, dst[:-1]) as b:
            if _stat_in(a, src[-1]) is None:
                raise NotFound(f"no such file: /{'/'.join(src)}")
            if _stat_in(b, dst[-1]) is not None:
                raise AlreadyExists(f"/{'/'.join(dst)} already exists")
            os.rename(src[-1], dst[-1], src_dir_fd=a, dst_dir_fd=b)
            os.fsync(b)
            if src[:-1] != dst[:-1]:
                os.fsync(a)
            return _entry("/".join(dst), os.stat(dst[-1], dir_fd=b, follow_symlinks=False))

    def files_delete(self, domain: str, account: str, path: str, *,
                     recursive: bool = False) -> int:
        parts = split_path(path)
        if not parts:
            raise InvalidFileName("the storage root cannot be deleted")
        key = self._file_key(domain, account, create=False)
        if key is None:
            raise NotFound(f"no such file: /{'/'.join(parts)}")
        with self.files.locked(key), self.files.folder(key, parts[:-1]) as parent:
            st = _stat_in(parent, parts[-1])
            if st is None:
                raise NotFound(f"no such file: /{'/'.join(parts)}")
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(parts[-1], dir_fd=parent)
                os.fsync(parent)
                return 1
            inside = self._names_in(parent, parts[-1])
            if inside and not recursive:
                raise FileError(f"/{'/'.join(parts)} is not empty")
            if not inside:
                os.rmdir(parts[-1], dir_fd=parent)
                os.fsync(parent)
                return 1
            before = self.files.usage(key).files
            doomed = f".removed-{secrets.token_hex(8)}"
            os.rename(parts[-1], doomed, src_dir_fd=parent, dst_dir_fd=parent)
            os.fsync(parent)
            removed = before - self.files.usage(key).files
            shutil.rmtree(doomed, dir_fd=parent)
            return removed

    @staticmethod
    def _names_in(parent: int, name: str) -> list[str]:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def files_usage(self, domain: str, account: str) -> FileUsage:
        key = self._file_key(domain, account, create=False)
        return FileUsage(0, 0) if key is None else self.files.usage(key)

    def files_gc(self, *, tmp_age: float = TMP_AGE) -> int:
        """Remove trees no account names any more (deleted accounts, after a
        crash between the deletion and the removal) and temporary files older
        than ``tmp_age`` seconds (uploads a crash interrupted). Returns how
        many trees and files went."""
        if not self.files.root.is_dir():
            return 0
        removed = 0
        cutoff = time.time() - tmp_age
        with contextlib.suppress(FileNotFoundError), os.scandir(self.files.root / TMP) as it:
            for item in it:
                if item.stat(follow_symlinks=False).st_mtime < cutoff:
                    if item.is_dir(follow_symlinks=False):
                        shutil.rmtree(item.path, ignore_errors=True)
                    else:
                        os.unlink(item.path)
                    removed += 1
        with self._read() as conn:
            keys = {str(k) for (k,) in conn.execute("SELECT key FROM file_roots")}
        for item in os.scandir(self.files.root):
            if item.name.startswith(".") or item.name in keys:
                continue
            if item.is_dir(follow_symlinks=False):
                self.files.remove_tree(Path(item.path))
            else:
                os.unlink(item.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.files.root / LOCKS / item.name)
            removed += 1
        return removed


