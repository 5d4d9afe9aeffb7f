"""Local delivery: Return-Path, X-Real-To for unified accounts, Direct Mailbox
Addressing, one shared body, and never twice / never lost across a crash."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.support.delivery import harness, pending_dsns_and_inbox, run
from tests.support.services import body, submission

from waypost.services.container import Services
from waypost.services.mailstore import Mailstore
from waypost.services.message import Submission
from waypost.storage.sqlite import SqliteStore, queue_store


def inbox(svc: Services, account: str) -> list[bytes]:
    return pending_dsns_and_inbox(svc, account)


def deliver(svc: Services, sub: Submission) -> str:
    async def go() -> str:
        queue, runner = await harness(svc)
        try:
            message_id = await queue.submit(sub)
            await runner.run_once()
            return message_id
        finally:
            await queue.close()

    return run(go)


def test_return_path_goes_on_top_and_the_body_is_untouched(svc: Services) -> None:
    deliver(svc, submission(svc, "alice@main.dom", mail_from="Bob@Remote.example"))
    (stored,) = inbox(svc, "alice@main.dom")
    assert stored == b"Return-Path: <Bob@Remote.example>\r\n" + body()
    assert svc.store.queue_list() == []


def test_null_sender_gets_an_empty_return_path(svc: Services) -> None:
    deliver(svc, submission(svc, "alice@main.dom", mail_from=""))
    assert inbox(svc, "alice@main.dom")[0].startswith(b"Return-Path: <>\r\n")


def test_an_old_return_path_is_replaced(svc: Services) -> None:
    data = b"Return-Path: <forged@x>\r\n" + body()
    deliver(svc, submission(svc, "alice@main.dom", data=data))
    (stored,) = inbox(svc, "alice@main.dom")
    assert stored.count(b"Return-Path") == 1 and b"forged" not in stored


def test_x_real_to_one_copy_per_message_listing_that_accounts_recipients(
    svc: Services,
) -> None:
    """client.dom -> dd-customer.local (Main Domain); other.dom -> carol in
    secondary.dom via .domain. One copy per account lists exactly the
    recipients routed into it; no copy leaks another account's recipients;
    a forged X-Real-To is dropped (issue 4)."""
    forged = body(extra=b"X-Real-To: forged@client.dom\r\n")
    deliver(svc, submission(svc, "a@client.dom", "B@client.dom", "c@other.dom", "d@other.dom",
                            "alice@main.dom", data=forged))
    dd = inbox(svc, "dd-customer@main.dom")
    carol = inbox(svc, "carol@secondary.dom")
    (plain,) = inbox(svc, "alice@main.dom")

    def real_to(stored: bytes) -> list[bytes]:
        head = stored.split(b"\r\n\r\n")[0]
        return [line for line in head.split(b"\r\n") if line.lower().startswith(b"x-real-to")]

    assert [real_to(m) for m in dd] == [[b"X-Real-To: a@client.dom, B@client.dom"]]
    assert [real_to(m) for m in carol] == [[b"X-Real-To: c@other.dom, d@other.dom"]]
    for stored in dd + carol:
        assert stored.startswith(b"Return-Path: <bob@remote.example>\r\nX-Real-To: ")
        assert b"forged" not in stored
        assert stored.endswith(b"Hi there.\r\n")
    assert real_to(plain) == [b"X-Real-To: forged@client.dom"]  # ordinary delivery: untouched


def test_the_real_to_header_name_is_a_setting(svc: Services) -> None:
    svc.set_setting("RealToHeader", "X-Envelope-To")
    deliver(svc, submission(svc, "a@client.dom"))
    (stored,) = inbox(svc, "dd-customer@main.dom")
    assert b"\r\nX-Envelope-To: a@client.dom\r\n" in stored and b"X-Real-To" not in stored


def test_one_copy_per_account_for_several_names_of_it(svc: Services) -> None:
    svc.directory.add_alias("ali@main.dom", "alice@main.dom")
    deliver(svc, submission(svc, "alice@main.dom", "ali@main.dom", "team@main.dom"))
    assert len(inbox(svc, "alice@main.dom")) == 1


def test_direct_mailbox_addressing(svc: Services) -> None:
    ms = Mailstore(svc.store)
    ms.create_mailbox("alice@main.dom", "Sales")
    deliver(svc, submission(svc, "alice#Sales@main.dom", "alice#Missing@main.dom"))
    assert len(ms.list_messages("alice@main.dom", "Sales")) == 1
    assert len(ms.list_messages("alice@main.dom", "INBOX")) == 1  # no such mailbox: INBOX


def test_queue_and_mailboxes_share_one_body_file(svc: Services) -> None:
    store = svc.store
    assert isinstance(store, SqliteStore)

    async def go() -> str:
        queue, runner = await harness(svc)
        try:
            message_id = await queue.submit(submission(svc, "alice@main.dom", "a@client.dom",
                                                       "bob@friend.com"))
            blob = (await queue.show(message_id)).blob
            await runner.run_once()  # local delivered; the SMTP copy still waits (no relay)
            assert (await queue.show(message_id)).blob == blob
            return blob
        finally:
            await queue.close()

    blob = run(go)
    ms = Mailstore(store)
    for account in ("alice@main.dom", "dd-customer@main.dom"):
        assert [m.blob for m in ms.list_messages(account)] == [blob]
    files = [p for p in (svc.data_dir / "blobs").rglob("*") if p.is_file()]
    assert files == [store.blobs.path(blob)]
    assert files[0].stat().st_nlink == 1


def test_a_crash_inside_the_delivery_transaction_stores_nothing_and_a_rerun_stores_once(
    svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulate kill -9 between "message stored" and "recipient marked
    delivered": both are one transaction, so the failure rolls back the
    mailbox insert too; the re-run delivers exactly once."""
    real_settle = queue_store.settle
    crash = {"armed": True}

    def settle(conn: Any, updates: Any) -> None:
        if crash["armed"] and any(u.state == "delivered" for u in updates):
            crash["armed"] = False
            raise KeyboardInterrupt("power cut")  # not an error anyone handles
        real_settle(conn, updates)

    monkeypatch.setattr(queue_store, "settle", settle)
    ms = Mailstore(svc.store)

    async def go() -> None:
        queue, runner = await harness(svc)
        try:
            message_id = await queue.submit(submission(svc, "alice@main.dom", "a@client.dom"))
            (message,) = await queue.list()
            with pytest.raises(KeyboardInterrupt):
                await runner.local.deliver("alice@main.dom", [message])
            # nothing half-done: no message, UIDNEXT unchanged, recipient still queued
            assert ms.list_messages("alice@main.dom") == []
            assert ms.mailbox("alice@main.dom").uidnext == 1
            assert {r.state for r in (await queue.show(message_id)).recipients} == {"queued"}
            await runner.run_once()
            await runner.run_once()
            # a stale re-run (the same due rows again) finds nothing pending: no duplicate
            assert await runner.local.deliver("alice@main.dom", [message]) != []
            assert await queue.list() == []
        finally:
            await queue.close()

    run(go)
    assert len(inbox(svc, "alice@main.dom")) == 1
    assert len(inbox(svc, "dd-customer@main.dom")) == 1
    assert ms.mailbox("alice@main.dom").uidnext == 2


def test_a_failing_store_defers_and_retries_without_duplicates(
    svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = svc.store
    real = store.mail_store
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            from waypost.storage.interface import StoreError

            raise StoreError("database error: disk I/O error")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "mail_store", flaky)

    async def go() -> None:
        queue, runner = await harness(svc)
        try:
            message_id = await queue.submit(submission(svc, "alice@main.dom"))
            await runner.run_once()
            (r,) = (await queue.show(message_id)).recipients
            assert r.state == "deferred" and r.attempts == 1 and "disk I/O" in r.last_error
            await queue.flush()
            await runner.run_once()
            assert await queue.list() == []
        finally:
            await queue.close()

    run(go)
    assert len(inbox(svc, "alice@main.dom")) == 1


def test_an_account_deleted_while_mail_waits_bounces_it(svc: Services) -> None:
    async def go() -> None:
        queue, runner = await harness(svc)
        try:
            await queue.submit(submission(svc, "dd-customer@main.dom", mail_from="alice@main.dom"))
            await asyncio.to_thread(svc.directory.delete_account, "dd-customer")
            await runner.run_once()
            await runner.run_once()
        finally:
            await queue.close()

    run(go)
    (dsn,) = inbox(svc, "alice@main.dom")
    assert b"Status: 5.1.1" in dsn and b"dd-customer@main.dom" in dsn


def test_many_messages_for_one_account_are_stored_in_one_transaction(
    svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = svc.store
    real = store.mail_store
    transactions = []
    monkeypatch.setattr(store, "mail_store",
                        lambda copies, settle=(): transactions.append(len(copies))
                        or real(copies, settle))

    async def go() -> None:
        queue, runner = await harness(svc)
        try:
            await asyncio.gather(*(queue.submit(submission(svc, "alice@main.dom",
                                                           data=body(str(i))))
                                   for i in range(20)))
            await runner.run_once()
        finally:
            await queue.close()

    run(go)
    assert transactions == [20]
    uids = [m.uid for m in Mailstore(store).list_messages("alice@main.dom")]
    assert uids == list(range(1, 21))


class _Watcher:
    """Stands where an IMAP session in IDLE stands: it wants to be poked."""

    def __init__(self) -> None:
        self.pokes = 0

    def poke(self) -> None:
        self.pokes += 1


def test_delivery_pokes_whoever_watches_the_mailbox(svc: Services) -> None:
    inbox_watcher, other_watcher = _Watcher(), _Watcher()
    svc.events.subscribe(("MAIN.DOM", "Alice", "inbox"), inbox_watcher)  # spelling differs
    svc.events.subscribe(("main.dom", "alice", "Sent"), other_watcher)
    deliver(svc, submission(svc, "alice@main.dom"))
    assert inbox_watcher.pokes == 1 and other_watcher.pokes == 0
    svc.events.unsubscribe(("main.dom", "alice", "INBOX"), inbox_watcher)
    assert svc.events.watching(("main.dom", "alice", "INBOX")) == 0


def test_the_mime_structure_is_parsed_at_delivery(svc: Services) -> None:
    from waypost import mime

    deliver(svc, submission(svc, "alice@main.dom"))
    (stored,) = inbox(svc, "alice@main.dom")
    cached = svc.store.mail_structure_get("main.dom", "alice", "INBOX", 1)
    assert cached is not None
    parsed = mime.ParsedMessage.from_json(cached)
    assert parsed.size == len(stored) == mime.parse(stored).size
    assert parsed.root.body_start == mime.parse(stored).root.body_start
