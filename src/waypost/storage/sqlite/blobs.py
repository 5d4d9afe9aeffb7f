"""Content-addressed message bodies: ``DATA/blobs/xx/<sha256>``.

A body is written once and never changed, so the queue and every mailbox
copy of a message share one file. A write is durable before it returns:
temporary file in the blob directory, fsync, rename, fsync of the
directory (the rename itself must survive a crash) -- or, with
``sync_dir=False``, once :meth:`BlobFiles.sync` has run: the queue's group
commit makes the whole batch durable with one ``syncfs`` before the rows
that name the bodies commit (without syncfs: an fsync per file and per
directory touched). 256 subdirectories keep concurrent writers from
queueing on one directory. A blob that already
exists is not written again; its modification time is refreshed instead,
which is what keeps the collector away from it (see :meth:`BlobFiles.remove_if_stale`).

A full disk (``ENOSPC``) raises :class:`StorageFull` and leaves no partial
file behind: the caller defers, and the same put succeeds once space returns.

Files carry no reference count: the database rows that name a blob are the
references, and the collector deletes a file only when no row names it and
the file has not been touched for a grace period.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from waypost.storage.durable import FULL_ERRNOS, fsync_dir, is_full
from waypost.storage.interface import NotFound, StorageFull, StoreError

BLOB_DIR = "blobs"
_KEY = re.compile(r"^[0-9a-f]{64}$")


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        return libc.syncfs  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()


def blob_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobFiles:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / BLOB_DIR
        self._root = str(self.root)
        # Serialises "exists -> touch" in put against "stale -> unlink" in the
        # collector, so a reused blob is never deleted under a new reference.
        # Striped by key, so writers of different bodies do not queue.
        self._locks = [threading.Lock() for _ in range(64)]
        self._pending_lock = threading.Lock()
        self._unsynced: set[Path] = set()

    def path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise StoreError(f"invalid blob key {key!r}")
        return self.root / key[:2] / key

    def _lock(self, key: str) -> threading.Lock:
        return self._locks[int(key[:2], 16) % len(self._locks)]

    def put(self, data: bytes, *, sync_dir: bool = True) -> str:
        """Write a body once. With ``sync_dir=False`` nothing is synced here:
        the caller must call :meth:`sync` before anything durable names the
        blob (the queue's committer does, once per batch)."""
        key = blob_key(data)
        path = self.path(key)
        with self._lock(key):
            try:
                # A file of the wrong size is the remains of a crash before
                # its sync: written again below, never trusted.
                if path.stat().st_size == len(data):
                    os.utime(path)
                    return key
            except FileNotFoundError:
                pass
        tmp = path.parent / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            self._ensure_dir(path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if sync_dir:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()  # a partial body must not hold on to the little room left
            if is_full(exc):
                raise StorageFull(f"cannot write message body: {exc.strerror}") from exc
            raise StoreError(f"cannot write message body {path}: {exc}") from exc
        if sync_dir:
            fsync_dir(path.parent)
        else:
            with self._pending_lock:
                self._unsynced.add(path)
        return key

    def sync(self) -> None:
        """Make every body written with ``sync_dir=False`` durable, names
        included: one ``syncfs`` of the blob file system for the whole
        batch where Linux offers it, else an fsync per file and one of the
        directory."""
        with self._pending_lock:
            pending, self._unsynced = self._unsynced, set()
        if not pending:
            return
        if _syncfs is not None:
            fd = os.open(self.root, os.O_RDONLY)
            try:
                if _syncfs(fd) == 0:
                    return
                error = ctypes.get_errno()
            finally:
                os.close(fd)
            if error not in (errno.ENOSYS, errno.EPERM):
                with self._pending_lock:
                    self._unsynced |= pending
                kind = StorageFull if error in FULL_ERRNOS else StoreError
                raise kind(f"cannot sync message bodies: {os.strerror(error)}")
        for path in pending:
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        for directory in {path.parent for path in pending}:
            fsync_dir(directory)

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"message body {key} is missing") from None
        except OSError as exc:
            raise StoreError(f"cannot read message body {key}: {exc}") from exc

    def read(self, key: str, offset: int, size: int) -> bytes:
        """``size`` octets of a body from ``offset`` (fewer at its end): a
        large body is streamed in pieces without ever being read whole.
        Plain ``os`` calls: POP3 reads thousands of small bodies a second."""
        if not _KEY.match(key):
            raise StoreError(f"invalid blob key {key!r}")
        try:
            fd = os.open(os.path.join(self._root, key[:2], key), os.O_RDONLY)
        except FileNotFoundError:
            raise NotFound(f"message body {key} is missing") from None
        except OSError as exc:
            raise StoreError(f"cannot read message body {key}: {exc}") from exc
        try:
            parts = []
            while size > 0:
                piece = os.pread(fd, size, offset)
                if not piece:
                    break
                parts.append(piece)
                size -= len(piece)
                offset += len(piece)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        except OSError as exc:
            raise StoreError(f"cannot read message body {key}: {exc}") from exc
        finally:
            os.close(fd)

    def remove_if_stale(
        self, key: str, grace: float, is_referenced: Callable[[str], bool]
    ) -> str:
        """Delete the blob unless a row names it or it was touched within
        ``grace`` seconds: ``removed``, ``referenced``, ``young`` or ``missing``."""
        path = self.path(key)
        with self._lock(key):
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                return "missing"
            if is_referenced(key):
                return "referenced"
            if age < grace:
                return "young"
            path.unlink(missing_ok=True)
            return "removed"

    def keys(self) -> Iterator[str]:
        """Every blob on disk (leftover temporary files are removed when old)."""
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir():
                continue
            for entry in sub.iterdir():
                name = entry.name
                if _KEY.match(name):
                    yield name
                elif name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        if time.time() - entry.stat().st_mtime > 3600:
                            entry.unlink()

    def _ensure_dir(self, directory: Path) -> None:
        if directory.is_dir():
            return
        created = not self.root.is_dir()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if created:
            fsync_dir(self.root.parent)
        fsync_dir(self.root)

