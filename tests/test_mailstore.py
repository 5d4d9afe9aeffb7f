"""The mailstore: mailboxes per account, UIDs, metadata over shared blobs, listings.

The store tests run on both backends (the ``svc`` here: a data directory or a
fresh PostgreSQL database, ``store_location`` in tests/conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from waypost import mime
from waypost.services.container import Services
from waypost.services.mailstore import (
    Mailstore,
    StoredCopies,
    assemble,
    display_header,
    field_ranges,
    header_block,
    summarize,
)
from waypost.storage.interface import (
    AlreadyExists,
    NotFound,
    QueuedMessage,
    QueuedRecipient,
    StoreError,
    canonical_mailbox,
)
from waypost.storage.open import open_store
from waypost.storage.postgresql import PostgresStore
from waypost.storage.sqlite import SqliteStore

MSG = (b"From: =?utf-8?q?Ren=C3=A9e?= <renee@example.com>\r\n"
       b"Subject: =?iso-8859-1?q?caf=E9?= and more\r\n"
       b"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n"
       b"Message-ID: <m1@example.com>\r\n\r\nBody line\r\n")


@pytest.fixture
def svc(store_location: str) -> Iterator[Services]:
    """The accounts these tests use, on each backend."""
    services = Services(open_store(store_location, create=True))
    services.directory.init_server("main.dom")
    services.directory.create_account("alice")
    services.directory.create_domain("secondary.dom")
    services.directory.create_account("carol@secondary.dom")
    yield services
    services.close()


@pytest.fixture
def ms(svc: Services) -> Mailstore:
    return Mailstore(svc.store)


def test_every_account_has_an_inbox_from_its_creation(ms: Mailstore) -> None:
    (inbox,) = ms.mailboxes("alice@main.dom")
    assert (inbox.name, inbox.messages, inbox.uidnext) == ("INBOX", 0, 1)
    assert inbox.uidvalidity >= int(time.time()) - 5


def test_append_assigns_increasing_uids_and_reads_back_prefix_plus_body(ms: Mailstore) -> None:
    uid1 = ms.append("alice@main.dom", "INBOX", MSG, prefix=b"Return-Path: <x@y>\r\n",
                     flags=["\\Seen"], date=1_700_000_000)
    uid2 = ms.append("alice@main.dom", "inbox", MSG)  # INBOX is case-insensitive
    assert (uid1, uid2) == (1, 2)
    assert ms.read_message("alice@main.dom", "INBOX", 1) == b"Return-Path: <x@y>\r\n" + MSG
    first, second = ms.list_messages("alice@main.dom")
    assert first.flags == ("\\Seen",) and first.internal_date == 1_700_000_000
    assert first.size == len(MSG) + len(b"Return-Path: <x@y>\r\n") and second.size == len(MSG)
    assert first.modseq < second.modseq
    assert first.summary == {"from": "Renée <renee@example.com>", "subject": "café and more",
                             "date": "Mon, 2 Mar 2026 10:00:00 +0000",
                             "message_id": "<m1@example.com>"}
    info = ms.mailbox("alice@main.dom")
    assert (info.messages, info.uidnext, info.size) == (2, 3, first.size + second.size)


def test_the_same_body_is_one_blob_file(ms: Mailstore, svc: Services) -> None:
    ms.append("alice@main.dom", "INBOX", MSG)
    ms.append("carol@secondary.dom", "INBOX", MSG)
    store = svc.store
    (a,) = store.mail_messages("main.dom", "alice", "INBOX")
    (c,) = store.mail_messages("secondary.dom", "carol", "INBOX")
    assert a.blob == c.blob and store.blob_get(a.blob) == MSG
    if isinstance(store, SqliteStore):
        files = [p for p in (svc.data_dir / "blobs").rglob("*") if p.is_file()]
        assert len(files) == 1 and files[0].read_bytes() == MSG


def test_other_mailboxes_are_case_sensitive_and_must_exist(ms: Mailstore) -> None:
    with pytest.raises(NotFound):
        ms.append("alice@main.dom", "Archive", MSG)
    ms.create_mailbox("alice@main.dom", "Archive")
    with pytest.raises(AlreadyExists):
        ms.create_mailbox("alice@main.dom", "Archive")
    ms.create_mailbox("alice@main.dom", "archive")  # a different mailbox
    assert ms.append("alice@main.dom", "Archive", MSG) == 1
    assert ms.append("alice@main.dom", "Later", MSG, create=True) == 1
    names = [b.name for b in ms.mailboxes("alice@main.dom")]
    assert names == ["Archive", "INBOX", "Later", "archive"]
    assert canonical_mailbox("inbox/Sub") == "INBOX/Sub" and canonical_mailbox("Inboxes") == "Inboxes"


def test_uidvalidity_never_repeats(ms: Mailstore) -> None:
    a = ms.create_mailbox("alice@main.dom", "A")
    b = ms.create_mailbox("alice@main.dom", "B")
    assert b.uidvalidity > a.uidvalidity


def test_unknown_accounts_and_messages(ms: Mailstore) -> None:
    with pytest.raises(NotFound):
        ms.list_messages("nobody@main.dom")
    with pytest.raises(NotFound):
        ms.read_message("alice@main.dom", "INBOX", 7)
    with pytest.raises(StoreError):
        ms.list_messages("no-domain-part")


def test_mail_follows_a_renamed_account_and_goes_with_a_deleted_one(
    ms: Mailstore, svc: Services
) -> None:
    ms.append("alice@main.dom", "INBOX", MSG)
    svc.directory.rename_account("alice", "alicia")
    assert len(ms.list_messages("alicia@main.dom")) == 1
    svc.directory.delete_account("alicia")
    with pytest.raises(NotFound):
        ms.list_messages("alicia@main.dom")
    assert svc.store.blob_gc(0) == 1  # its body is collected


def test_deleted_messages_free_their_blob_only_when_no_copy_is_left(
    ms: Mailstore, svc: Services
) -> None:
    ms.append("alice@main.dom", "INBOX", MSG)
    ms.append("carol@secondary.dom", "INBOX", MSG)
    store = svc.store
    (message,) = store.mail_messages("main.dom", "alice", "INBOX")
    assert ms.delete_messages("alice@main.dom", "INBOX", [1, 99]) == 1
    assert store.blob_gc(0) == 0  # carol still has it
    ms.delete_messages("carol@secondary.dom", "INBOX", [1])
    assert store.blob_gc(0) == 1
    with pytest.raises(NotFound):
        store.blob_get(message.blob)
    if isinstance(store, SqliteStore):
        assert not [p for p in (svc.data_dir / "blobs").rglob("*") if p.is_file()]


def test_header_fields_are_found_with_their_continuation_lines() -> None:
    msg = (b"Return-Path: <old@x>\r\nX-Real-To: a@b,\r\n\tc@d\r\nSubject: s\r\n"
           b"x-real-to: e@f\r\n\r\nX-Real-To: in the body\r\n")
    ranges = field_ranges(msg, ["X-Real-To", "Return-Path"])
    assert assemble(b"P: 1\r\n", msg, ranges) == (
        b"P: 1\r\nSubject: s\r\n\r\nX-Real-To: in the body\r\n")
    assert header_block(b"A: 1\n\nbody\r\n\r\n") == b"A: 1\n\n"
    assert header_block(b"\r\nno header") == b""


def test_broken_headers_never_fail_the_summary() -> None:
    broken = (b"From: \xff\xfe <\x00@>\r\nSubject: =?bogus?x?abc?= caf\xc3\xa9\r\n"
              b"Date: yesterday-ish\r\n\tfolded\r\nNoColonLine\r\n\r\nbody")
    summary = summarize(broken)
    assert "café" in summary["subject"] and summary["date"] == "yesterday-ish folded"
    assert summarize(b"") == {} and summarize(b"\x00\x01\x02") == {}
    assert display_header("=?utf-8?b?w6k=?=") == "é"


def test_accounts_created_before_the_mailstore_get_an_inbox_on_first_delivery(
    ms: Mailstore, svc: Services
) -> None:
    store = svc.store
    if isinstance(store, SqliteStore):
        store.conn.execute("DELETE FROM mailboxes")
    else:
        assert isinstance(store, PostgresStore)
        with psycopg.connect(store.url, autocommit=True) as conn:
            conn.execute("DELETE FROM mailboxes")
    assert ms.mailboxes("alice@main.dom") == []
    assert ms.append("alice@main.dom", "INBOX", MSG) == 1
    assert [b.name for b in ms.mailboxes("alice@main.dom")] == ["INBOX"]


def _queued(mail_from: str, *rcpts: tuple[int, str | None, str | None]) -> QueuedMessage:
    return QueuedMessage(
        id="Q1", mail_from=mail_from, params={}, client_ip="", helo="", auth_user=None,
        trusted=False, protocol="ESMTP", blob="b1", size=0, created=0.0,
        recipients=tuple(
            QueuedRecipient(key, "Q1", f"r{key}@x", "LOCAL", "alice@main.dom", "", real_to, box,
                            (), None, "queued", 0, 0.0, "", False)
            for key, real_to, box in rcpts),
    )


def test_stored_copies_share_one_return_path_date_and_summary() -> None:
    body = b"Return-Path: <forged@x>\r\nX-Real-To: forged@x\r\n" + MSG
    copies = StoredCopies(_queued("bob@\r\nx", (1, None, None), (2, "<a@c.dom>", None),
                                  (3, "B@c.dom", None), (4, "a@C.dom", None), (5, None, "Sales")),
                          body, real_to_header="X-Real-To", now=42.0)
    inbox, unified, sales = copies.for_recipients("alice@main.dom", copies.message.recipients)
    assert (inbox.domain, inbox.account, inbox.queue_keys) == ("main.dom", "alice", (1,))
    assert [c.mailbox for c in (inbox, unified, sales)] == ["INBOX", "INBOX", "Sales"]
    assert unified.queue_keys == (2, 3, 4) and sales.queue_keys == (5,)
    plain = assemble(inbox.prefix, body, inbox.omit)
    assert plain == b"Return-Path: <bob@x>\r\nX-Real-To: forged@x\r\n" + MSG
    assert assemble(unified.prefix, body, unified.omit) == (
        b"Return-Path: <bob@x>\r\nX-Real-To: a@c.dom, B@c.dom\r\n" + MSG)
    assert {c.internal_date for c in (inbox, unified, sales)} == {42.0}
    assert inbox.summary == summarize(MSG) and all(c.fallback_inbox for c in (inbox, sales))


def test_rule_edits_change_the_copy_its_summary_and_flags_not_the_blob() -> None:
    copies = StoredCopies(_queued("", (1, None, None)), MSG, real_to_header="X-Real-To")
    (copy,) = copies.for_recipients("alice@main.dom", copies.message.recipients)
    subject = field_ranges(MSG, ["Subject"])
    edited = copies.edited(copy, b"X-Rule: 1\r\nSubject: [spam] cafe\r\n", subject,
                           ["\\seen", "Junk"])
    stored = assemble(edited.prefix, MSG, edited.omit)
    assert stored.startswith(b"Return-Path: <>\r\nX-Rule: 1\r\nSubject: [spam] cafe\r\nFrom:")
    assert edited.summary["subject"] == "[spam] cafe" and edited.blob == copy.blob
    assert edited.flags == ("\\Seen", "Junk")
    assert copies.edited(edited, b"", (), ["junk", "\\Flagged"]).flags == (
        "\\Seen", "Junk", "\\Flagged")
    (parsed,) = copies.with_structure([edited])
    assert parsed.structure is not None
    assert mime.ParsedMessage.from_json(parsed.structure).size == len(stored)
