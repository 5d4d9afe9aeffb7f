"""The mailstore operations IMAP needs: flags and MODSEQ, copy over shared
blobs, move, expunge log and changes_since, APPEND durability, counters, the
cached MIME structure, and the cost of a 10,000-message mailbox.

Through the Store interface, on both backends (``store_location`` in
tests/conftest.py): real SQLite and blob files in tmp_path, or a fresh
PostgreSQL database. Tests that look at SQLite's files or migrate an old
SQLite database take ``sqlite_only`` and say why.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from waypost.services.container import Services
from waypost.services.mailstore import Mailstore
from waypost.storage.interface import (
    MailboxExists,
    NewMailMessage,
    NoSuchMailbox,
    NotFound,
    OverQuota,
    Store,
)
from waypost.storage.open import open_store
from waypost.storage.sqlite import SqliteStore
from waypost.storage.sqlite.migrations import MIGRATIONS, migrate

A = ("main.dom", "alice")
B = ("main.dom", "bob")
MSG = b"From: x@example.com\r\nSubject: hello\r\n\r\nbody\r\n"


@pytest.fixture
def svc(store_location: str) -> Iterator[Services]:
    services = Services(open_store(store_location, create=True))
    services.directory.init_server("main.dom")
    services.directory.create_account("alice")
    services.directory.create_account("bob")
    yield services
    services.close()


@pytest.fixture
def store(svc: Services) -> Store:
    return svc.store



def append(store: Store, n: int, mailbox: str = "INBOX", who: tuple[str, str] = A,
           **kw: object) -> list[int]:
    return [store.mail_append(*who, mailbox, MSG + str(i).encode(), **kw)[1]  # type: ignore[arg-type]
            for i in range(n)]


def blob_files(svc: Services) -> list[Path]:
    return [p for p in (svc.data_dir / "blobs").rglob("*") if p.is_file()]


def recount(store: Store, mailbox: str, who: tuple[str, str] = A) -> tuple[int, int, int]:
    """Messages, unseen, size counted the slow way (to check the trigger counters)."""
    rows = store.mail_messages(*who, mailbox)
    return len(rows), sum("\\Seen" not in m.flags for m in rows), sum(m.size for m in rows)


# -- flags and MODSEQ ---------------------------------------------------------


def test_set_flags_bumps_modseq_once_per_operation_and_reports_new_flags(
        store: Store) -> None:
    append(store, 3)
    before = store.mail_mailbox_state(*A, "INBOX").highestmodseq
    result = store.mail_set_flags(*A, "INBOX", [1, 2], ["\\seen", "$Work"], "add")
    assert result == [(1, before + 1, ("\\Seen", "$Work")), (2, before + 1, ("\\Seen", "$Work"))]
    assert result.modified == []
    state = store.mail_mailbox_state(*A, "INBOX")
    assert (state.highestmodseq, state.messages, state.unseen) == (before + 1, 3, 1)

    # a no-op changes nothing: same MODSEQ, mailbox HIGHESTMODSEQ unchanged
    again = store.mail_set_flags(*A, "INBOX", [1], ["\\Seen"], "add")
    assert again == [(1, before + 1, ("\\Seen", "$Work"))]
    assert store.mail_mailbox_state(*A, "INBOX").highestmodseq == before + 1

    removed = store.mail_set_flags(*A, "INBOX", [1, 2, 3, 99], ["$work"], "remove")
    assert [(u, f) for u, _, f in removed] == [(1, ("\\Seen",)), (2, ("\\Seen",)), (3, ())]
    assert removed[0][1] == removed[1][1] == before + 2 and removed[2][1] <= before
    replaced = store.mail_set_flags(*A, "INBOX", None, ["\\Flagged", "\\Recent"], "replace")
    assert [f for _, _, f in replaced] == [("\\Flagged",)] * 3  # \Recent is never stored
    assert store.mail_mailbox_state(*A, "INBOX").unseen == 3
    assert recount(store, "INBOX")[:2] == (3, 3)
    with pytest.raises(Exception, match="flag mode"):
        store.mail_set_flags(*A, "INBOX", [1], ["\\Seen"], "toggle")


def test_unchanged_since_refuses_messages_modified_later(store: Store) -> None:
    append(store, 2)
    seen = store.mail_mailbox_state(*A, "INBOX").highestmodseq
    store.mail_set_flags(*A, "INBOX", [2], ["\\Answered"], "add")  # another session
    result = store.mail_set_flags(*A, "INBOX", [1, 2], ["\\Flagged"], "add",
                                  unchanged_since=seen)
    assert [uid for uid, _, _ in result] == [1] and result.modified == [2]
    assert store.mail_message(*A, "INBOX", 2).flags == ("\\Answered",)


# -- copy, move, expunge ----------------------------------------------------------


def test_copy_shares_the_blob_and_keeps_flags_date_prefix(svc: Services,
                                                          store: Store) -> None:
    ms = Mailstore(store)
    ms.append("alice@main.dom", "INBOX", MSG, prefix=b"Return-Path: <a@b>\r\n",
              flags=["\\Seen"], date=1_700_000_000)
    ms.append("alice@main.dom", "INBOX", MSG, date=1_700_000_100)
    store.mail_create_mailbox(*A, "Archive")
    store.mail_append(*A, "Archive", b"Subject: first\r\n\r\n")
    pairs = store.mail_copy(*A, "INBOX", [2, 1, 7], *A, "Archive")
    assert pairs == [(1, 2), (2, 3)]  # UID order, missing UIDs skipped
    to_bob = store.mail_copy(*A, "INBOX", None, *B, "INBOX")  # another account
    assert to_bob == [(1, 1), (2, 2)]
    rows = [*store.mail_messages(*A, "INBOX"), *store.mail_messages(*A, "Archive"),
            *store.mail_messages(*B, "INBOX")]
    assert len({m.blob for m in rows}) == 2  # MSG once, "first" once: no byte copy
    if isinstance(store, SqliteStore):
        assert len(blob_files(svc)) == 2
    copied = store.mail_message(*A, "Archive", 2)
    assert copied.flags == ("\\Seen",) and copied.internal_date == 1_700_000_000
    assert ms.read_message("alice@main.dom", "Archive", 2) == b"Return-Path: <a@b>\r\n" + MSG
    assert ms.read_message("bob@main.dom", "INBOX", 2) == MSG
    state = store.mail_mailbox_state(*A, "Archive")
    assert (state.uidnext, state.messages, state.unseen) == (4, 3, 2)
    assert recount(store, "Archive")[2] == state.size
    # copying into the same mailbox works too
    assert store.mail_copy(*A, "Archive", [1], *A, "Archive") == [(1, 4)]
    with pytest.raises(NoSuchMailbox):
        store.mail_copy(*A, "INBOX", [1], *A, "Nowhere")


def test_move_is_copy_plus_expunge_in_one_transaction(store: Store) -> None:
    append(store, 3)
    store.mail_create_mailbox(*A, "Done")
    since = store.mail_mailbox_state(*A, "INBOX").highestmodseq
    assert store.mail_move(*A, "INBOX", [1, 3], *A, "Done") == [(1, 1), (3, 2)]
    assert [m.uid for m in store.mail_index(*A, "INBOX")] == [2]
    assert [m.uid for m in store.mail_index(*A, "Done")] == [1, 2]
    changes = store.mail_changes_since(*A, "INBOX", since)
    assert changes.expunged == [1, 3] and changes.highestmodseq == since + 1
    assert store.mail_mailbox_state(*A, "INBOX").messages == 1


def test_expunge_removes_only_deleted_and_logs_them(store: Store) -> None:
    append(store, 4)
    store.mail_set_flags(*A, "INBOX", [1, 2, 3], ["\\Deleted"], "add")
    assert store.mail_expunge(*A, "INBOX", [1, 4]) == [1]  # UID EXPUNGE: \Deleted in the set
    assert store.mail_expunge(*A, "INBOX") == [2, 3]  # EXPUNGE: every \Deleted
    assert store.mail_expunge(*A, "INBOX") == []
    assert [m.uid for m in store.mail_index(*A, "INBOX")] == [4]
    assert recount(store, "INBOX") == (1, 1, store.mail_mailbox_state(*A, "INBOX").size)
    # POP3 DELE / administrators: regardless of flags, also logged
    since = store.mail_mailbox_state(*A, "INBOX").highestmodseq
    assert store.mail_delete(*A, "INBOX", [4, 5]) == 1
    assert store.mail_changes_since(*A, "INBOX", since).expunged == [4]


def test_changes_since_splits_new_changed_expunged(store: Store) -> None:
    append(store, 3)
    state = store.mail_mailbox_state(*A, "INBOX")
    store.mail_set_flags(*A, "INBOX", [1], ["\\Seen"], "add")
    store.mail_set_flags(*A, "INBOX", [2], ["\\Deleted"], "add")
    store.mail_expunge(*A, "INBOX")
    append(store, 1)
    changes = store.mail_changes_since(*A, "INBOX", state.highestmodseq, uidnext=state.uidnext)
    assert [(m.uid, m.flags) for m in changes.changed] == [(1, ("\\Seen",))]
    assert [m.uid for m in changes.new] == [4] and changes.expunged == [2]
    assert changes.uidnext == 5 and changes.uidvalidity == state.uidvalidity
    assert changes.highestmodseq == store.mail_mailbox_state(*A, "INBOX").highestmodseq
    nothing = store.mail_changes_since(*A, "INBOX", changes.highestmodseq, uidnext=5)
    assert (nothing.new, nothing.changed, nothing.expunged) == ([], [], [])


# -- APPEND, state, recent, structure ------------------------------------------------


def test_append_is_durable_when_it_returns(svc: Services, store: Store,
                                           store_location: str) -> None:
    uidvalidity, uid = store.mail_append(*A, "INBOX", MSG, flags=["\\Draft"],
                                         internal_date=1_600_000_000,
                                         summary={"subject": "hello"})
    assert uid == 1 and uidvalidity == store.mail_mailbox_state(*A, "INBOX").uidvalidity
    # another process opening the store sees the committed row and the body
    other = open_store(store_location)
    try:
        (row,) = other.mail_fetch(*A, "INBOX", [1])
        assert row.flags == ("\\Draft",) and row.internal_date == 1_600_000_000
        assert other.blob_get(row.blob) == MSG and row.summary["subject"] == "hello"
    finally:
        other.close()
    if isinstance(store, SqliteStore):  # one body file, no temporary one left
        assert len(blob_files(svc)) == 1
        assert not list((svc.data_dir / "blobs").rglob(".*.tmp"))
    store.mail_create_mailbox(*A, "Folder/")
    with pytest.raises(NoSuchMailbox):
        store.mail_append(*A, "Folder", MSG)  # \Noselect
    with pytest.raises(NoSuchMailbox):
        store.mail_append(*A, "Missing", MSG)
    assert store.blob_gc(0.0, full=True) == 0  # refused before a body was written


def test_mailbox_state_counters_and_recent(store: Store) -> None:
    append(store, 2, flags=["\\Seen"])
    append(store, 1)
    state = store.mail_mailbox_state(*A, "INBOX")
    assert (state.messages, state.unseen, state.recent, state.uidnext) == (3, 1, 3, 4)
    assert store.mail_claim_recent(*A, "INBOX") == 1  # this session: UIDs >= 1 are \Recent
    assert store.mail_mailbox_state(*A, "INBOX").recent == 0
    append(store, 1)
    assert store.mail_mailbox_state(*A, "INBOX").recent == 1
    assert store.mail_claim_recent(*A, "INBOX") == 4
    info = store.mail_mailbox(*A, "INBOX")
    assert (info.messages, info.size) == (4, recount(store, "INBOX")[2])


def test_structure_cache_is_not_a_change(store: Store) -> None:
    append(store, 2)
    modseq = store.mail_mailbox_state(*A, "INBOX").highestmodseq
    assert store.mail_structure_get(*A, "INBOX", 1) is None
    store.mail_structure_put(*A, "INBOX", 1, '{"type": "text/plain"}')
    assert store.mail_structure_get(*A, "INBOX", 1) == '{"type": "text/plain"}'
    assert store.mail_structures(*A, "INBOX", None) == {1: '{"type": "text/plain"}'}
    assert store.mail_mailbox_state(*A, "INBOX").highestmodseq == modseq
    store.mail_create_mailbox(*A, "Copy")
    store.mail_copy(*A, "INBOX", [1], *A, "Copy")
    assert store.mail_structure_get(*A, "Copy", 1) == '{"type": "text/plain"}'
    with pytest.raises(NotFound):
        store.mail_structure_get(*A, "INBOX", 9)


def test_special_use_by_name_or_stored(store: Store) -> None:
    store.mail_create_mailbox(*A, "Sent")
    store.mail_create_mailbox(*A, "Outbox", special_use="\\sent")
    store.mail_create_mailbox(*A, "Projects/Trash")
    uses = {e.name: e.special_use for e in store.mail_folders(*A)}
    assert uses == {"INBOX": "", "Sent": "\\Sent", "Outbox": "\\Sent", "Projects": "",
                    "Projects/Trash": ""}
    store.mail_set_special_use(*A, "Sent", "")
    store.mail_set_special_use(*A, "Projects/Trash", "\\Trash")
    assert store.mail_folder(*A, "Sent").attributes() == ("\\HasNoChildren",)
    assert store.mail_folder(*A, "Projects/Trash").special_use == "\\Trash"
    store.mail_set_special_use(*A, "Sent", None)
    assert store.mail_folder(*A, "Sent").special_use == "\\Sent"
    with pytest.raises(Exception, match="special use"):
        store.mail_set_special_use(*A, "Sent", "\\Important")


# -- account templates, subscriptions, aliases -------------------------------------


def test_the_account_template_gives_mailboxes_subscriptions_aliases(svc: Services) -> None:
    svc.directory.create_account("marketing")
    svc.store.mail_create_mailbox("main.dom", "marketing", "announce")
    svc.directory.set_account_template("main.dom", {
        "Mailboxes": ["Sent", "Drafts", "Projects/Current", "INBOX"],
        "Subscriptions": ["INBOX", "~marketing/announce"],
        "MailboxAliases": {"Announce": "~marketing/announce"},
    })
    svc.directory.create_account("newbie")
    names = [e.name for e in svc.store.mail_folders("main.dom", "newbie")]
    assert names == ["Drafts", "INBOX", "Projects", "Projects/Current", "Sent"]
    assert svc.store.mail_subscriptions("main.dom", "newbie") == ["INBOX",
                                                                  "~marketing/announce"]
    assert svc.store.mail_aliases("main.dom", "newbie") == {"Announce": "~marketing/announce"}
    # existing accounts are not touched
    assert [e.name for e in svc.store.mail_folders(*A)] == ["INBOX"]
    # a template that cannot be applied leaves no half-made account
    svc.directory.set_account_template("main.dom", {"Mailboxes": ["bad%name"]})
    with pytest.raises(Exception, match="Account Template"):
        svc.directory.create_account("second")
    with pytest.raises(NotFound):
        svc.directory.get_account("second")


def test_aliases_cannot_collide_with_mailboxes(store: Store) -> None:
    store.mail_create_mailbox(*A, "Team")
    with pytest.raises(MailboxExists):
        store.mail_set_alias(*A, "Team", "~bob/Team")
    store.mail_set_alias(*A, "Shared", "~bob/Shared")
    with pytest.raises(MailboxExists):
        store.mail_create_mailbox(*A, "Shared")
    with pytest.raises(MailboxExists):
        store.mail_create_mailbox(*A, "Shared/sub")
    store.mail_set_alias(*A, "Shared", None)
    with pytest.raises(NoSuchMailbox):
        store.mail_set_alias(*A, "Shared", None)
    store.mail_subscribe(*A, "~bob/inbox")
    store.mail_subscribe(*A, "~bob/INBOX")
    assert store.mail_subscriptions(*A) == ["~bob/INBOX"]
    assert store.mail_unsubscribe(*A, "~bob/INBOX") and not store.mail_unsubscribe(*A, "x")


# -- schema --------------------------------------------------------------------------


def test_migration_4_initialises_the_counters_of_existing_mail(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    migrate(conn, MIGRATIONS[:3])
    conn.execute("INSERT INTO domains (name, name_lower, is_main) VALUES ('d', 'd', 1)")
    conn.execute("INSERT INTO objects (domain_id, name, name_lower, kind) VALUES"
                 " (1, 'u', 'u', 'account')")
    conn.execute("INSERT INTO mailboxes (account_id, name, uidvalidity, uidnext, created)"
                 " VALUES (1, 'INBOX', 1, 3, 0)")
    for uid, flags, size in ((1, "\\Seen", 10), (2, "", 20)):
        conn.execute("INSERT INTO messages (mailbox_id, uid, flags, internal_date, size, blob)"
                     " VALUES (1, ?, ?, 0, ?, 'x')", (uid, flags, size))
    assert migrate(conn) == [m[0] for m in MIGRATIONS[3:]]
    row = conn.execute("SELECT message_count, unseen_count, total_size, recent_uid, selectable"
                       " FROM mailboxes").fetchone()
    assert row == (2, 1, 30, 3, 1)
    conn.close()


# -- a 10,000-message mailbox ----------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    """The world of ``svc`` on SQLite only."""
    store = open_store(tmp_path / "var", create=True)
    assert isinstance(store, SqliteStore)
    services = Services(store)
    services.directory.init_server("main.dom")
    services.directory.create_account("alice")
    yield store
    services.close()


def test_ten_thousand_messages_one_query_one_transaction(sqlite_store: SqliteStore) -> None:
    """SQLite only: it counts statements with SQLite's trace callback."""
    store = sqlite_store
    key = store.blob_put(MSG)
    now = time.time()
    store.mail_store([NewMailMessage(domain="main.dom", account="alice", mailbox="INBOX",
                                     blob=key, blob_size=len(MSG), internal_date=now + i)
                      for i in range(10_000)])
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    try:
        started = time.perf_counter()
        index = store.mail_index(*A, "INBOX")
        listing = time.perf_counter() - started
        reads = [s for s in statements if "FROM messages" in s]
        statements.clear()
        started = time.perf_counter()
        result = store.mail_set_flags(*A, "INBOX", list(range(1, 2001, 2)), ["\\Seen"], "add")
        flagging = time.perf_counter() - started
        begins = [s for s in statements if s.startswith("BEGIN")]
    finally:
        store.conn.set_trace_callback(None)
    assert len(index) == 10_000 and index[0].uid == 1 and index[-1].size == len(MSG)
    assert len(reads) == 1  # the whole index in one query
    assert len(result) == 1000 and len(begins) == 1  # 1,000 updates, one transaction
    assert store.mail_mailbox_state(*A, "INBOX").unseen == 9000
    assert listing < 1.0 and flagging < 1.0, (listing, flagging)


def test_header_bytes_read_only_the_head_of_the_blob(store: Store) -> None:
    body = (b"X-Real-To: forged\r\nSubject: big\r\n\r\n" + b"x" * 200_000)
    key = store.blob_put(body)
    omit = ((0, len(b"X-Real-To: forged\r\n")),)
    store.mail_store([NewMailMessage(domain="main.dom", account="alice", mailbox="INBOX",
                                     blob=key, blob_size=len(body), internal_date=0,
                                     prefix=b"Return-Path: <a@b>\r\n", omit=omit)])
    (message,) = store.mail_fetch(*A, "INBOX", [1])
    assert store.mail_header_bytes(message) == b"Return-Path: <a@b>\r\nSubject: big\r\n\r\n"
    store.mail_append(*A, "INBOX", b"\r\nno header")
    store.mail_append(*A, "INBOX", b"Subject: no body")
    _, empty, unterminated = store.mail_fetch(*A, "INBOX", None)
    assert store.mail_header_bytes(empty) == b"\r\n"
    assert store.mail_header_bytes(unterminated) == b"Subject: no body"


# -- several processes on one PostgreSQL database ------------------------------------


def test_two_nodes_appending_to_one_mailbox_take_consecutive_uids(pg_url: str) -> None:
    """Two store objects (two processes or nodes, each with its own pool) append
    into one mailbox at once: every UID is handed out once, MODSEQ grows, and
    the counters add up (the mailbox row is locked before UIDNEXT is read)."""
    first = open_store(pg_url, create=True)
    services = Services(first)
    services.directory.init_server("main.dom")
    services.directory.create_account("alice")
    second = open_store(pg_url)
    errors: list[BaseException] = []
    uids: list[int] = []
    lock = threading.Lock()

    def work(store: Store, n: int) -> None:
        try:
            for i in range(15):
                _, uid = store.mail_append(*A, "INBOX", MSG + f"{n}-{i}".encode())
                with lock:
                    uids.append(uid)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, n))
               for n, s in enumerate((first, second, first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert errors == []
        assert sorted(uids) == list(range(1, 61))
        state = second.mail_mailbox_state(*A, "INBOX")
        assert (state.uidnext, state.messages, state.unseen) == (61, 60, 60)
        modseqs = [m.modseq for m in first.mail_index(*A, "INBOX")]
        assert len(set(modseqs)) == 60
    finally:
        second.close()
        services.close()


def test_two_nodes_cannot_both_squeeze_under_the_quota(pg_url: str) -> None:
    """Appends racing from two store objects into two mailboxes of one account:
    the usage row's lock makes the later one see the earlier one's octets."""
    first = open_store(pg_url, create=True)
    services = Services(first)
    services.directory.init_server("main.dom")
    services.directory.create_account("alice")
    first.mail_create_mailbox(*A, "Other")
    second = open_store(pg_url)
    body = b"Subject: q\r\n\r\n" + b"x" * 1000
    limit = 10 * len(body) + 10
    accepted: list[int] = []
    lock = threading.Lock()

    def work(store: Store, mailbox: str) -> None:
        for _ in range(10):
            try:
                store.mail_append(*A, mailbox, body, max_usage=limit)
            except OverQuota:
                continue
            with lock:
                accepted.append(1)

    threads = [threading.Thread(target=work, args=(s, box))
               for s, box in ((first, "INBOX"), (second, "Other"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert len(accepted) == 10
        assert second.mail_usage(*A) == 10 * len(body) <= limit
    finally:
        second.close()
        services.close()
