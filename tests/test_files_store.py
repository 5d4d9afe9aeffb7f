"""Account File Storage (issue 11 point 1, web.md §6.1): the service over the
real store, on both backends (``store_location`` in tests/conftest.py).
Names, traversal, symbolic links, quotas under concurrency, atomic
replacement, streaming, account lifecycle, rights. Checks of SQLite's own
files (``DATA/webfiles``) run with the SQLite store only, in the same tests."""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from waypost.services.container import Services
from waypost.services.files import (
    AccountFiles,
    AlreadyExists,
    FileError,
    InvalidFileName,
    NotAllowed,
    NotFound,
    QuotaExceeded,
)
from waypost.storage.open import open_store
from waypost.storage.postgresql import PostgresStore
from waypost.storage.sqlite import SqliteStore

ALICE = "alice@main.dom"


@pytest.fixture
def svc(store_location: str) -> Iterator[Services]:
    services = Services(open_store(store_location, create=True))
    services.directory.init_server("main.dom")
    services.directory.create_account("alice", "pw-alice-1")
    services.directory.create_account("bob", "pw-bob-1")
    try:
        yield services
    finally:
        services.close()


@pytest.fixture
def files(svc: Services) -> AccountFiles:
    return AccountFiles(svc)


def read(files: AccountFiles, path: str, account: str = ALICE) -> bytes:
    with files.open(account, path) as opened:
        return opened.read()


def test_files_and_folders_round_trip(files: AccountFiles) -> None:
    assert files.list(ALICE) == []
    files.mkdir(ALICE, "docs")
    entry = files.write_bytes(ALICE, "/docs/a.html", b"<p>hi</p>")
    assert (entry.path, entry.size, entry.is_folder) == ("docs/a.html", 9, False)
    assert read(files, "docs/a.html") == b"<p>hi</p>"
    assert [(e.name, e.is_folder) for e in files.list(ALICE)] == [("docs", True)]
    assert [e.path for e in files.list(ALICE, "docs")] == ["docs/a.html"]
    files.rename(ALICE, "docs/a.html", "b.html")
    assert read(files, "b.html") == b"<p>hi</p>"
    with pytest.raises(NotFound):
        files.stat(ALICE, "docs/a.html")
    with pytest.raises(FileError):
        files.write_bytes(ALICE, "docs", b"x")  # a folder is not a file
    files.write_bytes(ALICE, "docs/deep/er/c.txt", b"c", parents=True)
    with pytest.raises(FileError, match="not empty"):
        files.delete(ALICE, "docs")
    assert files.delete(ALICE, "docs", recursive=True) == 4
    assert [e.path for e in files.list(ALICE)] == ["b.html"]
    usage = files.info(ALICE).usage
    assert (usage.files, usage.bytes) == (1, 9)


def test_unicode_names_are_kept_in_nfc(files: AccountFiles) -> None:
    files.write_bytes(ALICE, "cafe\u0301.txt", b"x")  # decomposed e + accent
    assert [e.name for e in files.list(ALICE)] == ["caf\u00e9.txt"]
    assert read(files, "caf\u00e9.txt") == b"x"


@pytest.mark.parametrize("path", [
    "..", "../x", "a/../../x", "a/./b", "./x", "a//b", "x\x00y", "x\\y", "..\\x",
    "a\u2215b", "a\u2044b", "a\uff0fb", "a\uff3cb", "a\u29f8b", ".hidden", "a/.git/config",
    "index.wssp", "sub/INDEX.WSSP", "tab\there", "new\nline", " lead", "trail ",
    "x" * 300,
])
def test_bad_names_are_refused_on_every_path(files: AccountFiles, path: str) -> None:
    files.mkdir(ALICE, "a")
    with pytest.raises(InvalidFileName):
        files.write_bytes(ALICE, path, b"x")
    with pytest.raises(InvalidFileName):
        files.mkdir(ALICE, path)
    with pytest.raises((InvalidFileName, NotFound)):
        files.rename(ALICE, "a", path)
    with pytest.raises(InvalidFileName):
        files.open(ALICE, path)
    assert [e.path for e in files.list(ALICE)] == ["a"]


def test_symbolic_links_lead_nowhere(files: AccountFiles, svc: Services,
                                     tmp_path: Path) -> None:
    """On PostgreSQL there is no file system path to plant a link in: the
    same requests must find nothing."""
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"outside")
    files.write_bytes(ALICE, "site/page.html", b"page", parents=True)
    if isinstance(svc.store, SqliteStore):
        root = next(p for p in (svc.data_dir / "webfiles").iterdir()
                    if not p.name.startswith("."))
        os.symlink(secret, root / "site" / "link.txt")
        os.symlink(tmp_path, root / "escape")
    assert [e.path for e in files.list(ALICE)] == ["site"]
    assert [e.path for e in files.list(ALICE, "site")] == ["site/page.html"]
    for path in ("site/link.txt", "escape/secret.txt"):
        with pytest.raises(NotFound):
            read(files, path)
    with pytest.raises(NotFound):
        files.write_bytes(ALICE, "escape/planted.txt", b"x")
    with pytest.raises(NotFound):
        files.list(ALICE, "escape")
    assert not (tmp_path / "planted.txt").exists()
    assert secret.read_bytes() == b"outside"


def test_quota_of_files_and_bytes(files: AccountFiles, svc: Services) -> None:
    svc.directory.set_account_settings(ALICE, {"MaxWebFiles": "3", "MaxWebSize": "1K"})
    files.mkdir(ALICE, "f")
    files.write_bytes(ALICE, "f/one", b"1" * 500)
    files.write_bytes(ALICE, "two", b"2" * 400)
    with pytest.raises(QuotaExceeded):
        files.write_bytes(ALICE, "three", b"3")
    with pytest.raises(QuotaExceeded):
        files.mkdir(ALICE, "g")
    with pytest.raises(QuotaExceeded):  # replacing counts the difference only
        files.write_bytes(ALICE, "two", b"2" * 600)
    assert read(files, "two") == b"2" * 400  # the old file is untouched
    files.write_bytes(ALICE, "two", b"2" * 524)  # exactly at the limit
    assert files.info(ALICE).usage.bytes == 1024
    if isinstance(svc.store, SqliteStore):
        tmp = svc.data_dir / "webfiles" / ".tmp"
        assert [p for p in tmp.iterdir()] == []  # refused uploads leave nothing behind


def test_concurrent_writers_cannot_overrun_the_quota(files: AccountFiles,
                                                     svc: Services) -> None:
    svc.directory.set_account_settings(ALICE, {"MaxWebFiles": "5"})
    results: list[str] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        try:
            files.write_bytes(ALICE, f"file{i}", b"x" * 100)
            outcome = "ok"
        except QuotaExceeded:
            outcome = "quota"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["ok"] * 5 + ["quota"] * 7
    assert files.info(ALICE).usage.files == 5


def test_a_reader_keeps_the_old_bytes_across_a_replacement(files: AccountFiles) -> None:
    files.write_bytes(ALICE, "page.html", b"old" * 1000)
    with files.open(ALICE, "page.html") as opened:
        files.write_bytes(ALICE, "page.html", b"new")
        assert opened.read() == b"old" * 1000
    assert read(files, "page.html") == b"new"


def test_writes_stream_without_holding_the_file(files: AccountFiles) -> None:
    chunk = b"z" * (256 * 1024)
    tracemalloc.start()
    try:
        entry = files.write(ALICE, "big.bin", (chunk for _ in range(160)))  # 40 MB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert entry.size == 160 * len(chunk)
    assert peak < 8 * 1024 * 1024, peak


def test_rename_refusals(files: AccountFiles) -> None:
    files.mkdir(ALICE, "a/b", parents=True)
    files.write_bytes(ALICE, "x", b"x")
    with pytest.raises(InvalidFileName):
        files.rename(ALICE, "a", "a/b/c")
    with pytest.raises(AlreadyExists):
        files.rename(ALICE, "x", "a/b")
    with pytest.raises(NotFound):
        files.rename(ALICE, "nope", "y")
    with pytest.raises(NotFound):
        files.rename(ALICE, "x", "missing/y")
    with pytest.raises(AlreadyExists):
        files.mkdir(ALICE, "a")


def test_files_follow_the_account(files: AccountFiles, svc: Services) -> None:
    files.write_bytes(ALICE, "keep.txt", b"mine")
    svc.directory.rename_account(ALICE, "alicia")
    assert read(files, "keep.txt", "alicia@main.dom") == b"mine"
    svc.directory.create_domain("other.dom")
    svc.directory.create_account("carol@other.dom", "pw-carol-1")
    files.write_bytes("carol@other.dom", "c.txt", b"carol")
    svc.directory.rename_domain("other.dom", "other.org")
    assert read(files, "c.txt", "carol@other.org") == b"carol"
    svc.directory.delete_account("alicia@main.dom")
    svc.directory.create_account("alicia", "pw-alicia-2")
    assert files.list("alicia@main.dom") == []  # a new account starts empty
    svc.directory.delete_domain("other.org", force=True)
    if isinstance(svc.store, SqliteStore):
        trees = [p for p in (svc.data_dir / "webfiles").iterdir()
                 if not p.name.startswith(".")]
        assert trees == []
    with pytest.raises(NotFound):
        files.list("carol@other.org")


def test_only_the_owner_or_a_web_site_administrator(files: AccountFiles,
                                                    svc: Services) -> None:
    files.write_bytes(ALICE, "a.txt", b"a")
    with pytest.raises(NotAllowed):
        files.list(ALICE, actor="bob@main.dom")
    with pytest.raises(NotAllowed):
        files.write_bytes(ALICE, "b.txt", b"b", actor="bob@main.dom")
    svc.directory.set_rights("bob@main.dom", ["Domain", "CanAccessWebSites"])
    files.write_bytes(ALICE, "b.txt", b"b", actor="bob@main.dom")
    assert [e.path for e in files.list(ALICE, actor="alice@main.dom")] == ["a.txt", "b.txt"]


def test_leftovers_of_a_crashed_upload_are_swept(files: AccountFiles, svc: Services) -> None:
    """A stale temporary upload goes, a running one stays (on PostgreSQL: a
    content no file names, released long ago or just now)."""
    files.write_bytes(ALICE, "a.txt", b"a")
    store = svc.store
    if isinstance(store, SqliteStore):
        tmp = svc.data_dir / "webfiles" / ".tmp"
        stale = tmp / "crashed-upload"
        stale.write_bytes(b"half")
        os.utime(stale, (1, 1))
        fresh = tmp / "running-upload"
        fresh.write_bytes(b"still going")
        assert store.files_gc() == 1
        assert not stale.exists() and fresh.exists()
    else:
        assert isinstance(store, PostgresStore)
        with psycopg.connect(store.url, autocommit=True) as conn:
            conn.execute("INSERT INTO file_contents (size, released) VALUES (4, 1), (11, %s)",
                         (time.time(),))
            assert store.files_gc() == 1
            left = conn.execute("SELECT size FROM file_contents ORDER BY size").fetchall()
        assert left == [(1,), (11,)]  # a.txt and the running upload
    assert read(files, "a.txt") == b"a"
