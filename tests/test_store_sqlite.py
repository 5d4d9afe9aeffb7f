"""The Directory part of the store on both backends (names, change counter,
transactions), and what only one backend has: the SQLite data directory, WAL
and migrations; the PostgreSQL URL, empty-database rule and migrations.

The ``store`` and ``populated`` fixtures run on SQLite and on a fresh
PostgreSQL database (``store_location`` in tests/conftest.py); tests that
take ``sqlite_store`` or ``tmp_path`` only are SQLite-only because they look
at SQLite's own files or connection.
"""

from __future__ import annotations

import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.clock import FakeClock

from waypost.storage.interface import AlreadyExists, NotFound, ObjectRecord, Store, StoreError
from waypost.storage.open import open_store, store_exists
from waypost.storage.postgresql import PostgresStore
from waypost.storage.postgresql import migrations as pg_migrations
from waypost.storage.sqlite import DB_NAME, SqliteStore
from waypost.storage.sqlite.migrations import MIGRATIONS, migrate, schema_versions
from waypost.storage.sqlite.store import VERSION_TTL


@pytest.fixture
def store(store_location: str) -> Iterator[Store]:
    s = open_store(store_location, create=True)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = open_store(tmp_path / "data", create=True)
    assert isinstance(s, SqliteStore)
    yield s
    s.close()


@pytest.fixture
def populated(store: Store) -> Store:
    store.create_domain("main.dom", is_main=True)
    store.create_domain("domain.dom")
    store.create_object(ObjectRecord("domain.dom", "Alice", "account", {"Settings": {}}, "h"))
    return store


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path / DB_NAME)


# -- data directory -----------------------------------------------------------

def test_missing_data_refused_without_create(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no Waypost data in .*nothing; run `waypost init`"):
        open_store(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_create_makes_private_directory_and_database(tmp_path: Path) -> None:
    data = tmp_path / "a" / "data"
    open_store(data, create=True).close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert (data / DB_NAME).is_file()
    open_store(data).close()  # now it opens without create


def test_other_storage_urls_are_refused() -> None:
    with pytest.raises(StoreError, match=r"'mysql' is not supported"):
        open_store("mysql://db/waypost")


def test_wal_and_durability_pragmas(sqlite_store: SqliteStore) -> None:
    conn = sqlite_store.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # NORMAL: the store flushes the WAL itself after each durable commit
    # (group commit, tests/test_store_group_commit.py)
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000


def test_data_survives_reopen(tmp_path: Path) -> None:
    with open_store(tmp_path / "d", create=True) as s:
        s.create_domain("main.dom", is_main=True)
        s.set_router_table("a = b\n")
    with open_store(tmp_path / "d") as s:
        assert [d.name for d in s.list_domains()] == ["main.dom"]
        assert s.get_router_table() == "a = b\n"


def test_closed_store_refuses(store: Store) -> None:
    store.close()
    store.close()
    with pytest.raises(StoreError, match=r"closed"):
        store.version()


# -- migrations -----------------------------------------------------------------

def test_new_database_records_every_migration(sqlite_store: SqliteStore) -> None:
    assert schema_versions(sqlite_store.conn) == [m[0] for m in MIGRATIONS]


def test_old_database_gets_only_the_new_migrations(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    assert migrate(conn, MIGRATIONS[:1]) == [1]
    conn.execute("INSERT INTO settings (key, value) VALUES ('kept', 'yes')")
    extra = (
        MIGRATIONS[-1][0] + 1,
        "test: a table with a trigger",
        """
        CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL DEFAULT 'a;b');
        CREATE TRIGGER notes_count AFTER INSERT ON notes BEGIN
            UPDATE meta SET change_counter = change_counter + 1;
        END;
        INSERT INTO notes (text) VALUES ('semi;colon');
        """,
    )
    applied = migrate(conn, [*MIGRATIONS, extra])
    assert applied == [m[0] for m in MIGRATIONS[1:]] + [extra[0]]
    assert schema_versions(conn) == [m[0] for m in MIGRATIONS] + [extra[0]]
    assert conn.execute("SELECT text FROM notes").fetchone()[0] == "semi;colon"
    assert conn.execute("SELECT change_counter FROM meta").fetchone()[0] == 1
    assert conn.execute("SELECT value FROM settings").fetchone()[0] == "yes"
    assert migrate(conn, [*MIGRATIONS, extra]) == []


def test_failed_migration_leaves_nothing_behind(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    migrate(conn)
    broken = (MIGRATIONS[-1][0] + 1, "broken", "CREATE TABLE t1 (x); CREATE TABLE t1 (x);")
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, [*MIGRATIONS, broken])
    assert schema_versions(conn) == [m[0] for m in MIGRATIONS]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "t1" not in tables


def test_database_newer_than_code_is_refused(tmp_path: Path) -> None:
    open_store(tmp_path / "d", create=True).close()
    conn = raw(tmp_path / "d")
    conn.execute("INSERT INTO schema_version VALUES (999, 'future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"version 999.* newer than this Waypost"):
        open_store(tmp_path / "d")


def test_migration_versions_must_increase(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    with pytest.raises(StoreError, match=r"unique and increasing"):
        migrate(conn, [(2, "b", "SELECT 1"), (1, "a", "SELECT 1")])


# -- change counter -------------------------------------------------------------

def test_every_change_bumps_the_version_and_reads_do_not(store: Store) -> None:
    changes = [
        lambda: store.set_setting("A", "1"),
        lambda: store.set_setting("A", None),
        lambda: store.set_router_table("x = y"),
        lambda: store.create_domain("main.dom", is_main=True),
        lambda: store.create_domain("d.dom"),
        lambda: store.update_domain("d.dom", settings={"WebSitePrefix": "~"}),
        lambda: store.add_domain_alias("d.dom", "alias.dom"),
        lambda: store.remove_domain_alias("d.dom", "alias.dom"),
        lambda: store.rename_domain("d.dom", "e.dom"),
        lambda: store.create_object(ObjectRecord("e.dom", "x", "account")),
        lambda: store.update_object("e.dom", "x", data={"a": 1}),
        lambda: store.rename_object("e.dom", "x", "y"),
        lambda: store.delete_object("e.dom", "y"),
        lambda: store.delete_domain("e.dom"),
    ]
    for change in changes:
        before = store.version()
        change()
        assert store.version() == before + 1
    before = store.version()
    store.list_domains()
    store.get_settings()
    store.all_objects()
    store.get_router_table()
    assert store.version() == before


def test_refused_change_does_not_bump_the_version(populated: Store) -> None:
    before = populated.version()
    with pytest.raises(AlreadyExists):
        populated.create_object(ObjectRecord("domain.dom", "alice", "group"))
    assert populated.version() == before


def test_another_store_sees_the_change(tmp_path: Path) -> None:
    a = open_store(tmp_path / "d", create=True)
    clock = FakeClock()
    b = SqliteStore(tmp_path / "d", clock=clock)
    before = b.version()
    a.set_setting("HoldMailForDomains", "x.dom")
    assert a.version() == before + 1  # the writer sees its own change at once
    clock.advance(VERSION_TTL * 2)  # another store within VERSION_TTL
    assert b.version() == before + 1
    assert b.get_settings() == {"HoldMailForDomains": "x.dom"}
    a.close()
    b.close()


# -- settings and Router table --------------------------------------------------

def test_settings_are_strings_and_none_removes(store: Store) -> None:
    store.set_setting("ServerIPAddresses", "192.0.2.10")
    store.set_setting("ServerIPAddresses", "192.0.2.11")
    store.set_setting("Other", "x")
    assert store.get_settings() == {"Other": "x", "ServerIPAddresses": "192.0.2.11"}
    store.set_setting("Other", None)
    assert store.get_settings() == {"ServerIPAddresses": "192.0.2.11"}


def test_router_table_starts_empty(store: Store) -> None:
    assert store.get_router_table() == ""


# -- domains ------------------------------------------------------------------

def test_domain_names_are_case_insensitive_and_keep_spelling(store: Store) -> None:
    store.create_domain("Main.Dom", is_main=True)
    assert store.get_domain("MAIN.DOM").name == "Main.Dom"
    with pytest.raises(AlreadyExists, match=r"domain Main.Dom already exists"):
        store.create_domain("main.dom")


def test_exactly_one_main_domain(store: Store) -> None:
    store.create_domain("main.dom", is_main=True)
    with pytest.raises(AlreadyExists, match=r"Main Domain already exists: main.dom"):
        store.create_domain("other.dom", is_main=True)
    assert [d.is_main for d in store.list_domains()] == [True]


def test_main_domain_cannot_be_deleted(store: Store) -> None:
    store.create_domain("main.dom", is_main=True)
    with pytest.raises(StoreError, match=r"Main Domain main.dom cannot be deleted"):
        store.delete_domain("main.dom")


def test_missing_domain(store: Store) -> None:
    with pytest.raises(NotFound, match=r"domain 'x.dom' does not exist"):
        store.get_domain("x.dom")
    with pytest.raises(NotFound):
        store.delete_domain("x.dom")
    with pytest.raises(NotFound):
        store.list_objects("x.dom")


def test_domain_alias_names_share_the_domain_name_space(populated: Store) -> None:
    populated.add_domain_alias("domain.dom", "mail.domain.dom")
    with pytest.raises(AlreadyExists, match=r"domain main.dom already exists"):
        populated.add_domain_alias("domain.dom", "MAIN.dom")
    with pytest.raises(AlreadyExists, match=r"already an alias of domain domain.dom"):
        populated.add_domain_alias("main.dom", "Mail.Domain.Dom")
    with pytest.raises(AlreadyExists, match=r"already an alias of domain domain.dom"):
        populated.create_domain("mail.domain.dom")
    with pytest.raises(AlreadyExists, match=r"already an alias"):
        populated.rename_domain("main.dom", "mail.domain.dom")
    assert populated.get_domain("domain.dom").aliases == ("mail.domain.dom",)


def test_remove_alias_of_the_wrong_domain(populated: Store) -> None:
    populated.add_domain_alias("domain.dom", "a.dom")
    with pytest.raises(NotFound, match=r"'a.dom' is not an alias of domain main.dom"):
        populated.remove_domain_alias("main.dom", "a.dom")


def test_rename_domain_keeps_objects_and_allows_a_case_change(populated: Store) -> None:
    populated.rename_domain("domain.dom", "new.dom")
    assert populated.get_object("new.dom", "alice").domain == "new.dom"
    populated.rename_domain("new.dom", "New.dom")
    assert populated.get_domain("new.dom").name == "New.dom"
    with pytest.raises(AlreadyExists):
        populated.rename_domain("new.dom", "main.dom")


def test_delete_domain_deletes_its_objects_and_aliases(populated: Store) -> None:
    populated.add_domain_alias("domain.dom", "a.dom")
    populated.delete_domain("domain.dom")
    assert [o.name for o in populated.all_objects()] == []
    populated.create_domain("a.dom")  # the alias name is free again


def test_update_domain_replaces_each_dictionary(populated: Store) -> None:
    populated.update_domain("domain.dom", settings={"A": "1"}, template={"Mailboxes": ["x"]})
    populated.update_domain("domain.dom", settings={"B": "2"})
    d = populated.get_domain("domain.dom")
    assert (d.settings, d.template, d.account_defaults) == ({"B": "2"}, {"Mailboxes": ["x"]}, {})


# -- objects --------------------------------------------------------------------

def test_object_names_unique_across_kinds_case_insensitively(populated: Store) -> None:
    with pytest.raises(AlreadyExists, match=r"'Alice' already exists in domain.dom \(account\)"):
        populated.create_object(ObjectRecord("domain.dom", "ALICE", "forwarder"))
    populated.create_object(ObjectRecord("main.dom", "alice", "forwarder"))  # other domain


def test_object_round_trip(populated: Store) -> None:
    record = populated.get_object("DOMAIN.dom", "alice")
    assert record == ObjectRecord("domain.dom", "Alice", "account", {"Settings": {}}, "h")
    populated.update_object("domain.dom", "alice", data={"Settings": {"RealName": "Ä"}})
    populated.update_object("domain.dom", "alice", secret="h2")
    record = populated.get_object("domain.dom", "alice")
    assert (record.data, record.secret) == ({"Settings": {"RealName": "Ä"}}, "h2")


def test_missing_object(populated: Store) -> None:
    with pytest.raises(NotFound, match=r"'bob' does not exist in domain.dom"):
        populated.get_object("domain.dom", "bob")
    for call in (lambda: populated.delete_object("domain.dom", "bob"),
                 lambda: populated.rename_object("domain.dom", "bob", "carl"),
                 lambda: populated.update_object("domain.dom", "bob", data={})):
        with pytest.raises(NotFound):
            call()


def test_rename_object(populated: Store) -> None:
    populated.create_object(ObjectRecord("domain.dom", "grp", "group"))
    with pytest.raises(AlreadyExists, match=r"'grp' already exists in domain.dom \(group\)"):
        populated.rename_object("domain.dom", "alice", "GRP")
    populated.rename_object("domain.dom", "alice", "ALICE")
    assert populated.get_object("domain.dom", "alice").name == "ALICE"


def test_listing(populated: Store) -> None:
    populated.create_object(ObjectRecord("domain.dom", "b-group", "group", {"Members": ["x"]}))
    populated.create_object(ObjectRecord("main.dom", "postmaster", "account"))
    assert [o.name for o in populated.list_objects("domain.dom")] == ["Alice", "b-group"]
    assert [o.name for o in populated.list_objects("domain.dom", "group")] == ["b-group"]
    assert [(o.domain, o.name) for o in populated.all_objects()] == [
        ("domain.dom", "Alice"), ("domain.dom", "b-group"), ("main.dom", "postmaster")]


def test_concurrent_writers_from_threads(populated: Store) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                populated.create_object(ObjectRecord("domain.dom", f"t{n}-{i}", "forwarder"))
                populated.version()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(populated.list_objects("domain.dom", "forwarder")) == 80


def test_unsynced_blobs_are_synced_in_one_batch_and_torn_ones_rewritten(tmp_path: Path) -> None:
    from waypost.storage.sqlite.blobs import BlobFiles

    blobs = BlobFiles(tmp_path)
    keys = [blobs.put(f"body {i}".encode() * 100, sync_dir=False) for i in range(5)]
    assert len(blobs._unsynced) == 5
    blobs.sync()
    assert not blobs._unsynced
    # the remains of a crash before the sync: right name, wrong content length
    path = blobs.path(keys[0])
    path.write_bytes(b"torn")
    assert blobs.put(b"body 0" * 100) == keys[0]
    assert blobs.get(keys[0]) == b"body 0" * 100


def test_a_transaction_commits_several_calls_together_or_none(store: Store) -> None:
    store.create_domain("main.dom", is_main=True)
    before = store.version()
    with pytest.raises(RuntimeError), store.transaction():
        store.create_domain("a.dom")
        store.set_setting("HoldMailForDomains", "a.dom")
        raise RuntimeError("the second half fails")
    assert [d.name for d in store.list_domains()] == ["main.dom"]
    assert store.get_settings() == {}
    with store.transaction():
        store.create_domain("b.dom")
        store.set_setting("HoldMailForDomains", "b.dom")
    assert {d.name for d in store.list_domains()} == {"main.dom", "b.dom"}
    assert store.version() > before


def test_a_refused_call_inside_a_transaction_leaves_it_usable(store: Store) -> None:
    """On PostgreSQL a failed statement aborts its transaction; each call
    inside :meth:`transaction` runs in a savepoint so the caller may go on,
    as on SQLite."""
    store.create_domain("main.dom", is_main=True)
    with store.transaction():
        with pytest.raises(AlreadyExists):
            store.create_domain("MAIN.dom")
        store.create_domain("b.dom")
        with store.transaction():  # nested: joins the outer one
            store.set_setting("X", "1")
    assert {d.name for d in store.list_domains()} == {"main.dom", "b.dom"}
    assert store.get_settings() == {"X": "1"}


# -- PostgreSQL only: the database URL ---------------------------------------------

def _pg_raw(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def test_postgresql_create_makes_the_schema_and_records_its_migrations(pg_url: str) -> None:
    assert not store_exists(pg_url)
    with pytest.raises(StoreError, match=r"no Waypost data in .*; run `waypost init`"):
        open_store(pg_url)
    with open_store(pg_url, create=True) as s:
        s.create_domain("main.dom", is_main=True)
        s.set_router_table("a = b\n")
    assert store_exists(pg_url)
    with open_store(pg_url) as s:  # now it opens without create; the data survived
        assert [d.name for d in s.list_domains()] == ["main.dom"]
        assert s.get_router_table() == "a = b\n"
    with _pg_raw(pg_url) as conn:
        assert pg_migrations.schema_versions(conn) == [m[0] for m in pg_migrations.MIGRATIONS]


def test_both_backends_have_the_same_migrations() -> None:
    """Each schema change lands on both backends with the same version
    (issue 15: the PostgreSQL store fell behind at 10 and 11); descriptions
    may differ where the storage does (bodies as files or as rows)."""
    assert [m[0] for m in pg_migrations.MIGRATIONS] == [m[0] for m in MIGRATIONS]


def test_postgresql_database_holding_something_else_is_refused(pg_url: str) -> None:
    with _pg_raw(pg_url) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StoreError, match=r"holds other tables \(invoices\)"):
        open_store(pg_url, create=True)
    with _pg_raw(pg_url) as conn:
        tables = conn.execute("SELECT table_name FROM information_schema.tables"
                              " WHERE table_schema = 'public'").fetchall()
    assert tables == [("invoices",)]


def test_postgresql_unreachable_database_is_an_error(postgres_cluster: Any) -> None:
    url = postgres_cluster.url("no_such_database")
    assert not store_exists(url)
    with pytest.raises(StoreError, match=r"cannot reach the database"):
        open_store(url, create=True)


def test_postgresql_newer_schema_is_refused_and_failed_migration_leaves_nothing(
    pg_url: str,
) -> None:
    open_store(pg_url, create=True).close()
    with _pg_raw(pg_url) as conn:
        conn.autocommit = False
        broken = (999, "broken", "CREATE TABLE t1 (x INTEGER); CREATE TABLE t1 (x INTEGER);")
        with pytest.raises(Exception, match=r"t1"):
            pg_migrations.migrate(conn, [*pg_migrations.MIGRATIONS, broken])
        conn.rollback()
        assert pg_migrations.schema_versions(conn) == [m[0] for m in pg_migrations.MIGRATIONS]
        assert conn.execute("SELECT to_regclass('t1')").fetchone() == (None,)
        conn.rollback()
        conn.autocommit = True
        conn.execute("INSERT INTO schema_version VALUES (999, 'future', 0)")
    with pytest.raises(StoreError, match=r"version 999.* newer than this Waypost"):
        open_store(pg_url)


def test_postgresql_concurrent_first_opens_make_one_schema(pg_url: str) -> None:
    """Several worker processes start at once on an empty database: the
    advisory lock lets one migrate, the others find the schema made."""
    errors: list[BaseException] = []
    stores: list[Store] = []

    def opener() -> None:
        try:
            stores.append(PostgresStore(pg_url))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for s in stores:
        s.close()
    assert errors == [] and len(stores) == 4
    with _pg_raw(pg_url) as conn:
        assert pg_migrations.schema_versions(conn) == [m[0] for m in pg_migrations.MIGRATIONS]


def test_postgresql_commits_are_synchronous(pg_url: str) -> None:
    """Acknowledged means durable: the pooled connections commit with
    synchronous_commit on even when the database's default is off."""
    with _pg_raw(pg_url) as conn:
        conn.execute("SELECT 1")
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    s = PostgresStore(pg_url)
    try:
        with s.pool.connection() as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
    finally:
        s.close()


def test_postgresql_another_store_sees_the_change(pg_url: str) -> None:
    """Another process (here another store object with its own pool) sees a
    Directory change through the shared change counter, within VERSION_TTL."""
    a = open_store(pg_url, create=True)
    clock = FakeClock()
    b = PostgresStore(pg_url, clock=clock)
    before = b.version()
    a.set_setting("HoldMailForDomains", "x.dom")
    assert a.version() == before + 1
    clock.advance(VERSION_TTL * 2)
    assert b.version() == before + 1
    assert b.get_settings() == {"HoldMailForDomains": "x.dom"}
    a.close()
    b.close()


# -- message bodies and the queue (both backends) -----------------------------------

def test_bodies_round_trip_and_ranges_cross_chunk_boundaries(store: Store) -> None:
    """A body larger than several PostgreSQL chunks (256 KiB) reads back whole
    and in any range; an existing body is not stored twice; a missing one is
    NotFound, a malformed key refused."""
    from waypost.storage.postgresql.blobs import CHUNK

    body = bytes(range(256)) * (3 * CHUNK // 256 + 7)
    key = store.blob_put(body)
    assert store.blob_put(body, sync_dir=False) == key
    store.blob_sync()
    assert store.blob_get(key) == body
    for offset, size in ((0, 10), (CHUNK - 3, 6), (CHUNK, CHUNK), (2 * CHUNK - 1, 2 * CHUNK + 2),
                         (len(body) - 5, 100), (len(body), 10), (3, 0)):
        assert store.blob_read(key, offset, size) == body[offset:offset + size], (offset, size)
    assert store.blob_get(store.blob_put(b"")) == b""
    with pytest.raises(NotFound):
        store.blob_get("0" * 64)
    with pytest.raises(StoreError):
        store.blob_read("../etc/passwd", 0, 1)


def _queued(store: Store, message_id: str, body: bytes, now: float) -> str:
    from waypost.storage.interface import NewQueueMessage, NewQueueRecipient

    key = store.blob_put(body)
    store.queue_commit(add=[NewQueueMessage(
        id=message_id, mail_from="a@x.test", blob=key, size=len(body), created=now,
        recipients=(NewQueueRecipient("b@y.test", "SMTP", route_address="b@y.test",
                                      notify=("FAILURE",)),
                    NewQueueRecipient("c@z.test", "SMTP", queue="z.test")),
        params={"BODY": "8BITMIME"}, client_ip="192.0.2.1", helo="x.test", trusted=True,
    )])
    return key


def test_queue_commit_due_settle_and_history(store: Store) -> None:
    from waypost.storage.interface import QueueAttempt, RecipientUpdate

    before = store.queue_commits()
    _queued(store, "m1", b"body one", 100.0)
    assert store.queue_commits() == before + 1
    [msg] = store.queue_due(100.0, 10)
    assert (msg.id, msg.params, msg.trusted, msg.size) == ("m1", {"BODY": "8BITMIME"}, True, 8)
    first, second = msg.recipients
    assert first.notify == ("FAILURE",) and second.queue == "z.test" and first.pending
    assert store.queue_due(99.0, 10) == []
    assert store.queue_due(100.0, 10, skip=[("SMTP", "z.test")])[0].recipients == (first,)
    store.queue_commit(settle=[RecipientUpdate(
        first.key, "deferred", "451 later", 700.0,
        history=QueueAttempt(100.0, "deferred", "451 later", "mx.y.test"))])
    got = store.queue_get("m1")
    assert got.recipients[0].attempts == 1 and got.recipients[0].next_attempt == 700.0
    assert got.recipients[0].history == (QueueAttempt(100.0, "deferred", "451 later",
                                                      "mx.y.test"),)
    assert store.queue_schedule(50.0, module="SMTP", queue="Z.TEST", release=True) == 1
    assert [r.released for r in store.queue_get("m1").recipients] == [False, True]
    store.queue_commit(settle=[RecipientUpdate(first.key, "delivered"),
                               RecipientUpdate(second.key, "failed", "550 no")])
    with pytest.raises(NotFound):  # all recipients final: the message left the queue
        store.queue_get("m1")
    assert store.queue_list() == []


def test_queue_delete_and_body_collection(store: Store) -> None:
    key = _queued(store, "m2", b"body two", 100.0)
    assert [m.id for m in store.queue_list()] == ["m2"]
    assert store.blob_gc(0.0, full=True) == 0  # referenced by the queue
    store.queue_delete("m2")
    with pytest.raises(NotFound):
        store.queue_delete("m2")
    assert store.blob_gc(3600.0) == 0  # young: a new reference may be on its way
    assert store.blob_get(key) == b"body two"
    assert store.blob_gc(0.0) == 1
    with pytest.raises(NotFound):
        store.blob_get(key)
    orphan = store.blob_put(b"never queued")  # a submission that never committed
    assert store.blob_gc(0.0) == 0  # not a candidate
    assert store.blob_gc(0.0, full=True) == 1
    with pytest.raises(NotFound):
        store.blob_get(orphan)


# -- SIP registrations (both backends) ----------------------------------------------

def test_sip_bindings_follow_their_account_and_expire(populated: Store) -> None:
    from waypost.storage.interface import SipBinding, SipBindingChanges

    def put(*bindings: SipBinding) -> object:
        return lambda current: SipBindingChanges(put=bindings)

    phone = SipBinding("k1", "<sip:alice@192.0.2.1>", 200.0, "c1", 1, 100.0, q=500)
    soft = SipBinding("k2", "<sip:alice@192.0.2.2>", 150.0, "c2", 1, 100.0)
    now = populated.sip_change_bindings("domain.dom", "ALICE", 100.0, put(phone, soft))
    assert [b.contact for b in now] == [soft.contact, phone.contact]  # q 1000 before 500
    assert {b.account for b in now} == {"Alice"}
    refreshed = SipBinding("k1", "<sip:alice@192.0.2.9>", 300.0, "c1", 2, 120.0, q=500)
    seen: list[list[SipBinding]] = []

    def decide(current: list[SipBinding]) -> SipBindingChanges:
        seen.append(current)
        return SipBindingChanges(remove=(current[0].id,), put=(refreshed,))

    after = populated.sip_change_bindings("domain.dom", "alice", 120.0, decide)
    assert [b.contact for b in after] == [refreshed.contact]
    assert [b.key for b in seen[0]] == ["k2", "k1"]
    assert populated.sip_bindings(now=299.0)[0].cseq == 2
    assert populated.sip_bindings("DOMAIN.dom", now=300.0) == []  # expired
    assert populated.sip_bindings("main.dom", now=0.0) == []
    populated.rename_object("domain.dom", "alice", "alicia")
    assert [b.account for b in populated.sip_bindings(now=0.0)] == ["alicia"]
    populated.delete_object("domain.dom", "alicia")
    assert populated.sip_bindings(now=0.0) == []
    with pytest.raises(NotFound):
        populated.sip_bindings("domain.dom", "alicia", now=0.0)


def test_concurrent_registers_of_one_account_never_act_on_the_same_old_state(
    populated: Store,
) -> None:
    """Each decide() sees the bindings every earlier change left (the CSeq
    check and the update are one step, RFC 3261 §10.3 step 7)."""
    from waypost.storage.interface import SipBinding, SipBindingChanges

    counts: list[int] = []
    lock = threading.Lock()

    def register(n: int) -> None:
        def decide(current: list[SipBinding]) -> SipBindingChanges:
            with lock:
                counts.append(len(current))
            return SipBindingChanges(put=(SipBinding(f"k{n}", f"<sip:a@h{n}>", 1e12, "c", 1,
                                                     1.0),))
        populated.sip_change_bindings("domain.dom", "alice", 2.0, decide)

    threads = [threading.Thread(target=register, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(counts) == list(range(8))
    assert len(populated.sip_bindings(now=2.0)) == 8


def test_postgresql_commits_without_a_flush_only_what_sqlite_does(pg_url: str) -> None:
    """``_txn(sync=False)`` commits with synchronous_commit off; every other
    change, and a sync=False change inside a transaction() (which joins its
    durable commit), keeps it on."""
    with open_store(pg_url, create=True) as s:
        assert isinstance(s, PostgresStore)

        def setting(sync: bool) -> str:
            with s._txn(sync=sync) as conn:
                row = conn.execute("SHOW synchronous_commit").fetchone()
            assert row is not None
            return str(row[0])

        assert setting(False) == "off"
        assert setting(True) == "on"
        assert setting(True) == "on"  # SET LOCAL ended with its transaction
        with s.transaction():
            assert setting(False) == "on"
