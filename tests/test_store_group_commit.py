"""The store's group commit and reader connections (``storage/sqlite/store.py``).

A durable change returns only after a WAL flush that began after its COMMIT;
concurrent changes share flushes; a read never waits behind another thread's
commit, never sees an uncommitted change, and never sees a committed change
before it is flushed. The flush is ``os.fdatasync``, wrapped here (not
replaced) to count calls and, where a test needs it, to hold one flush until
a condition holds.

SQLite only: the group commit, the WAL and the reader connections are the
embedded store's own machinery. The PostgreSQL store commits each change
with ``synchronous_commit = on`` (tests/test_store_sqlite.py checks it), and
PostgreSQL groups concurrent WAL flushes itself.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from waypost.storage.sqlite import SqliteStore

THREADS = 10
WAIT = 30.0  # every wait is bounded


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path)
    yield s
    s.close()


class Flushes:
    """Counts ``os.fdatasync`` calls; ``hold`` makes the next one wait until
    ``release`` is set (the real flush then runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.hold_until: Callable[[], bool] | None = None
        real = os.fdatasync

        def fdatasync(fd: int) -> None:
            self.count += 1
            self.started.set()
            assert self.release.wait(WAIT), "held flush never released"
            real(fd)

        monkeypatch.setattr(os, "fdatasync", fdatasync)


def test_each_durable_change_is_flushed_before_it_returns(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushes = Flushes(monkeypatch)
    for i in range(5):
        before = flushes.count
        store.set_setting(f"key{i}", "value")
        assert flushes.count == before + 1  # alone: one flush per change


def test_concurrent_changes_share_flushes(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushes = Flushes(monkeypatch)
    store.set_setting("warm", "up")  # the WAL file exists and is open
    flushes.count = 0
    flushes.started.clear()
    flushes.release.clear()  # the first flush waits ...
    done: list[int] = []
    errors: list[BaseException] = []

    def change(i: int) -> None:
        try:
            store.set_setting(f"key{i}", str(i))
            done.append(i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=change, args=(i,)) for i in range(THREADS)]
    threads[0].start()
    assert flushes.started.wait(WAIT)
    for t in threads[1:]:
        t.start()
    # ... until every other change has committed (they then wait for a flush)
    for _ in range(int(WAIT * 100)):
        if store._commits >= THREADS + 1:
            break
        threading.Event().wait(0.01)
    assert store._commits == THREADS + 1
    assert not done  # nobody returned before a flush covering its commit
    flushes.release.set()
    for t in threads:
        t.join(WAIT)
    assert not errors
    assert sorted(done) == list(range(THREADS))
    assert flushes.count == 2  # the held one, then one for the nine others
    assert store.get_settings() == {"warm": "up"} | {f"key{i}": str(i) for i in range(THREADS)}


@contextmanager
def held(store: SqliteStore, change: Callable[[], object] = lambda: None) -> Iterator[None]:
    """Another thread holds the store in an open transaction (making
    ``change`` in it) while the block runs, then commits."""
    inside, finish = threading.Event(), threading.Event()

    def writer() -> None:
        with store.transaction():
            change()
            inside.set()
            assert finish.wait(WAIT)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert inside.wait(WAIT)
        yield
    finally:
        finish.set()
        thread.join(WAIT)


def test_a_read_does_not_wait_behind_another_threads_change(store: SqliteStore) -> None:
    store.set_setting("colour", "red")
    with held(store, lambda: store.set_setting("colour", "blue")):
        seen: list[dict[str, str]] = []
        reader = threading.Thread(target=lambda: seen.append(store.get_settings()))
        reader.start()
        reader.join(WAIT)  # returns while the writer still holds the store
        assert not reader.is_alive()
        assert seen == [{"colour": "red"}]  # never the uncommitted change
    assert store.get_settings() == {"colour": "blue"}


def test_a_read_does_not_see_a_change_before_it_is_flushed(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushes = Flushes(monkeypatch)
    store.set_setting("colour", "red")
    flushes.started.clear()
    flushes.release.clear()
    writer = threading.Thread(target=store.set_setting, args=("colour", "blue"))
    writer.start()
    assert flushes.started.wait(WAIT)  # committed, flush in progress
    seen: list[dict[str, str]] = []
    reader = threading.Thread(target=lambda: seen.append(store.get_settings()))
    reader.start()
    reader.join(0.3)
    assert reader.is_alive() and not seen  # waits for the flush
    flushes.release.set()
    reader.join(WAIT)
    writer.join(WAIT)
    assert seen == [{"colour": "blue"}]


def test_reader_connections_are_closed_with_the_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    with held(store):
        store.get_settings()  # on this thread's reader connection
    readers = [conn for _thread, conn in store._reader_conns]
    assert readers
    store.close()
    for conn in readers:
        with pytest.raises(Exception, match="closed"):
            conn.execute("SELECT 1")


def test_the_reader_of_an_ended_thread_is_closed(store: SqliteStore) -> None:
    """Reader connections do not pile up when threads come and go."""

    def read_while_busy() -> None:
        with held(store):
            reader = threading.Thread(target=store.get_settings)
            reader.start()
            reader.join(WAIT)

    read_while_busy()
    (first,) = [conn for _thread, conn in store._reader_conns]
    read_while_busy()  # another thread: the first one's reader is closed
    assert [conn for _thread, conn in store._reader_conns] != [first]
    assert len(store._reader_conns) == 1
    with pytest.raises(Exception, match="closed"):
        first.execute("SELECT 1")
