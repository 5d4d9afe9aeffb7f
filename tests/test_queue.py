"""The durable queue: group commit, per-target queues, hold/release, retry, expiry, DSNs.

Real stores: SQLite with real blob files in tmp_path, and a fresh
PostgreSQL database (the ``svc`` fixture below runs each test on both;
tests that look at SQLite's own files or group commit stay on SQLite).
The end-to-end kill -9 test over a server process lives elsewhere; here
durability is shown at the unit level (what is on disk when ``submit``
returns).
"""

from __future__ import annotations

import asyncio
import email
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.delivery import FakeRelay, dsns, harness, pending_dsns_and_inbox, run
from tests.support.services import body, open_world, routed, submission

from waypost.services.container import Services
from waypost.services.message import Submission
from waypost.services.queue import (
    Queue,
    QueuePolicy,
    hold_patterns,
    parse_queue_name,
    recipient_state,
)
from waypost.storage.interface import NotFound
from waypost.storage.sqlite import SqliteStore

# Tests that read SQLite's own files, connection or group-commit counter.
SQLITE_ONLY = {
    "test_submit_returns_the_queue_id_after_body_and_envelope_are_on_disk",
    "test_concurrent_submissions_share_commits",
    "test_blobs_of_finished_messages_are_collected",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each test on both backends, but the SQLite-only ones."""
    if "backend" in metafunc.fixturenames:
        sqlite_only = metafunc.function.__name__ in SQLITE_ONLY
        metafunc.parametrize("backend", ["sqlite"] if sqlite_only else ["sqlite", "postgresql"])


@pytest.fixture
def svc(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    """The world of tests.support.services on the test's backend."""
    location = (str(request.getfixturevalue("pg_url")) if backend == "postgresql"
                else str(tmp_path / "var"))
    services = open_world(location)
    yield services
    services.close()


# -- durability ------------------------------------------------------------------

def test_submit_returns_the_queue_id_after_body_and_envelope_are_on_disk(svc: Services) -> None:
    sub = submission(svc, "alice@main.dom", "bob@friend.com", QueueID="ABC123", ENVID="e1")

    async def go() -> str:
        queue, _ = await harness(svc)
        try:
            return await queue.submit(sub)
        finally:
            await queue.close()

    assert run(go) == "ABC123"
    # a second process (the CLI) sees it committed: nothing lives only in memory
    other = SqliteStore(svc.data_dir)
    try:
        m = other.queue_get("ABC123")
        assert other.blob_get(m.blob) == sub.body
        path = other.blobs.path(m.blob)
        assert path.parent.parent == svc.data_dir / "blobs" and path.name == m.blob
        assert path.read_bytes() == sub.body and not list(path.parent.glob("*.tmp"))
        assert [(r.address, r.module, r.queue, r.state) for r in m.recipients] == [
            ("alice@main.dom", "LOCAL", "alice@main.dom", "queued"),
            ("bob@friend.com", "SMTP", "friend.com", "queued"),
        ]
        assert m.params["ENVID"] == "e1" and m.client_ip == "192.0.2.1" and m.size == len(sub.body)
    finally:
        other.close()


def test_an_id_is_generated_when_the_session_gave_none(svc: Services) -> None:
    async def go() -> list[str]:
        queue, _ = await harness(svc)
        try:
            return [await queue.submit(submission(svc, "alice")) for _ in range(3)]
        finally:
            await queue.close()

    ids = run(go)
    assert len(set(ids)) == 3 and all(i.isalnum() for i in ids)


def test_concurrent_submissions_share_commits(svc: Services) -> None:
    """Group commit: 50 sessions at once need far fewer than 50 transactions."""
    store = svc.store
    assert isinstance(store, SqliteStore)

    async def go() -> list[str]:
        queue, _ = await harness(svc)
        try:
            return await asyncio.gather(*(
                queue.submit(submission(svc, "alice", data=body(f"message {i}")))
                for i in range(50)))
        finally:
            await queue.close()

    before = store.queue_commits()
    ids = run(go)
    commits = store.queue_commits() - before
    assert len(set(ids)) == 50 and len(store.queue_list()) == 50
    assert commits < 25, commits


def test_group_commit_batches_everything_that_waits_on_a_slow_sync(
    svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a 30 ms commit (a slow disk), submissions pile up and go together."""
    store = svc.store
    real = store.queue_commit

    def slow(*args: Any, **kwargs: Any) -> None:
        time.sleep(0.03)
        real(*args, **kwargs)

    monkeypatch.setattr(store, "queue_commit", slow)

    async def go() -> None:
        queue, _ = await harness(svc)
        try:
            await asyncio.gather(*(queue.submit(submission(svc, "alice", data=body(str(i))))
                                   for i in range(50)))
        finally:
            await queue.close()

    before = store.queue_commits()
    run(go)
    assert store.queue_commits() - before <= 6
    assert len(store.queue_list()) == 50


def test_one_bad_submission_does_not_fail_the_others_in_its_batch(svc: Services) -> None:
    async def go() -> list[Any]:
        queue, _ = await harness(svc)
        try:
            return await asyncio.gather(
                *(queue.submit(submission(svc, "alice", QueueID=f"ID{i % 9}")) for i in range(10)),
                return_exceptions=True)
        finally:
            await queue.close()

    results = run(go)
    assert sum(isinstance(r, Exception) for r in results) == 1  # ID0 twice
    assert len(svc.store.queue_list()) == 9


def test_submit_never_blocks_the_event_loop(svc: Services, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    """While a (slow) commit runs, the loop keeps ticking."""
    store = svc.store
    real = store.queue_commit
    monkeypatch.setattr(store, "queue_commit", lambda *a, **k: (time.sleep(0.2), real(*a, **k)))

    async def go() -> int:
        queue, _ = await harness(svc)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            await queue.submit(submission(svc, "alice"))
        finally:
            task.cancel()
            await queue.close()
        return ticks

    assert run(go) >= 10


# -- queue names, hold patterns, backoff ---------------------------------------------

def test_queue_names_and_hold_patterns() -> None:
    assert parse_queue_name("SMTP(example.com)") == ("SMTP", "example.com")
    assert parse_queue_name("local(alice@main.dom)") == ("LOCAL", "alice@main.dom")
    assert parse_queue_name("relay.host:25") == ("SMTP", "relay.host:25")
    assert parse_queue_name("#relay.host:25") == ("SMTP", "relay.host:25")
    assert hold_patterns("a.com, *.b.com\nc.com = acct@main.dom ; comment") == (
        "a.com", "*.b.com", "c.com")
    policy = QueuePolicy(hold=("customer.com", "*.dialup.net", "[192.0.2.9]"))
    assert policy.held("SMTP", "customer.com") and policy.held("SMTP", "Customer.COM:2525")
    assert policy.held("SMTP", "x.dialup.net") and not policy.held("SMTP", "dialup.net")
    assert policy.held("SMTP", "[192.0.2.9]") and not policy.held("SMTP", "other.com")
    assert not policy.held("LOCAL", "customer.com")


def test_backoff_doubles_from_ten_minutes_to_an_hour_and_expiry_is_five_or_seven_days() -> None:
    policy = QueuePolicy()
    assert [policy.backoff(n) for n in range(1, 6)] == [600, 1200, 2400, 3600, 3600]
    assert policy.expires(0, held=False) == 5 * 86400
    assert policy.expires(0, held=True) == 7 * 86400


def test_policy_comes_from_the_settings(svc: Services) -> None:
    svc.set_setting("QueueRetryFirst", "60")
    svc.set_setting("QueueRetryMax", "300")
    svc.set_setting("HoldMailForDomains", "held.example")
    policy = QueuePolicy.from_settings(svc.settings())
    assert (policy.retry_first, policy.retry_max, policy.hold) == (60, 300, ("held.example",))


def test_a_setting_the_store_does_not_have_yet_falls_back_to_the_default() -> None:
    """An older store (or a setting not declared yet) keeps the built-in
    retry and expiry values, not whatever the class attribute happens to be
    (with ``slots=True`` that is the slot descriptor, not the default)."""
    from waypost.settings import ServerSettings

    policy = QueuePolicy.from_settings(ServerSettings({"HoldMailForDomains": "held.example"}))
    assert policy == QueuePolicy(hold=("held.example",))
    assert [policy.backoff(n) for n in (1, 2, 9)] == [600, 1200, 3600]
    assert policy.expires(0, held=False) == 5 * 86400 and policy.expires(0, held=True) == 7 * 86400


# -- delivery outcomes through the runner -----------------------------------------

def test_deferred_recipients_back_off_and_flush_retries_them_now(svc: Services) -> None:
    relay = FakeRelay({"bob@friend.com": "deferred"})

    async def go() -> None:
        queue, runner = await harness(svc, relay)
        try:
            await queue.submit(submission(svc, "bob@friend.com"))
            t0 = time.time()
            await runner.run_once()
            (r,) = svc.store.queue_list()[0].recipients
            assert r.state == "deferred" and r.attempts == 1
            assert t0 + 590 < r.next_attempt < time.time() + 610
            assert "451" in r.last_error and "mx.remote.example" in r.last_error
            await runner.run_once()  # not due: no new attempt
            assert len(relay.calls) == 1
            assert await queue.flush("SMTP(friend.com)") == 1
            await runner.run_once()
            (r,) = svc.store.queue_list()[0].recipients
            assert r.attempts == 2 and r.next_attempt > time.time() + 1190
            relay.answers.clear()
            await queue.flush()
            await runner.run_once()
            assert svc.store.queue_list() == []  # delivered: the message left the queue
        finally:
            await queue.close()

    run(go)
    assert [q for q, _ in relay.calls] == ["friend.com"] * 3


def test_relay_gets_one_call_per_target_with_route_addresses_and_params(svc: Services) -> None:
    relay = FakeRelay()

    async def go() -> None:
        queue, runner = await harness(svc, relay)
        try:
            await queue.submit(submission(svc, "bob@friend.com", "eve@friend.com",
                                          "x@elsewhere.org", QueueID="Q1", SIZE="99",
                                          ENVID="env"))
            await runner.run_once()
        finally:
            await queue.close()

    run(go)
    calls = dict(relay.calls)
    assert set(calls) == {"friend.com", "elsewhere.org"}
    (msg,) = calls["friend.com"]
    assert [r.address for r in msg.recipients] == ["bob@friend.com", "eve@friend.com"]
    assert msg.params == {"SIZE": "99", "ENVID": "env"} and msg.id == "Q1"
    assert msg.body == body()
    assert svc.store.queue_list() == []


def test_smtp_waits_in_the_queue_while_there_is_no_relay(svc: Services) -> None:
    svc.set_setting("QueueLifetime", "0")  # even expired: parked mail is not bounced

    async def go() -> None:
        queue, runner = await harness(svc, relay=None)
        try:
            await queue.submit(submission(svc, "bob@friend.com"))
            await runner.run_once()
        finally:
            await queue.close()

    run(go)
    (m,) = svc.store.queue_list()
    assert m.recipients[0].state == "deferred" and m.recipients[0].attempts == 0
    assert "not available yet" in m.recipients[0].last_error and dsns(svc) == []


def test_permanent_failure_bounces_at_once_with_a_dsn_to_the_sender(svc: Services) -> None:
    relay = FakeRelay({"bob@friend.com": "failed"})

    async def go() -> None:
        queue, runner = await harness(svc, relay)
        try:
            await queue.submit(submission(svc, "bob@friend.com", "ok@friend.com",
                                          mail_from="alice@main.dom", ENVID="E-42"))
            await runner.run_once()
            assert [m.mail_from for m in await queue.list()] == [""]  # only the DSN left
            await runner.run_once()
        finally:
            await queue.close()

    run(go)
    # the original is done (one delivered, one failed); the DSN went into alice's INBOX
    assert svc.store.queue_list() == []
    (dsn,) = pending_dsns_and_inbox(svc, "alice@main.dom")
    assert dsn.startswith(b"Return-Path: <>\r\n")
    parsed = email.message_from_bytes(dsn)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    assert b"Final-Recipient: rfc822; bob@friend.com" in dsn
    assert b"ok@friend.com" not in dsn.split(b"message/delivery-status")[1].split(b"--")[0]
    assert b"Action: failed" in dsn and b"Status: 5.0.0" in dsn
    assert b"Original-Envelope-Id: E-42" in dsn and b"Subject: hello" in dsn


def test_expiry_bounces_deferred_mail(svc: Services) -> None:
    svc.set_setting("QueueLifetime", "0")
    relay = FakeRelay({"bob@friend.com": "deferred"})

    async def go() -> None:
        queue, runner = await harness(svc, relay)
        try:
            await queue.submit(submission(svc, "bob@friend.com", mail_from="carol@secondary.dom"))
            await runner.run_once()
            await runner.run_once()  # deliver the DSN
        finally:
            await queue.close()

    run(go)
    (dsn,) = pending_dsns_and_inbox(svc, "carol@secondary.dom")
    assert b"Status: 5.4.7" in dsn and b"expired" in dsn
    assert svc.store.queue_list() == []


def test_a_bounce_is_never_bounced(svc: Services, caplog: pytest.LogCaptureFixture) -> None:
    relay = FakeRelay({"bob@friend.com": "failed"})

    async def go() -> None:
        queue, runner = await harness(svc, relay)
        try:
            await queue.submit(submission(svc, "bob@friend.com", mail_from=""))
            await runner.run_once()
            await runner.run_once()
        finally:
            await queue.close()

    with caplog.at_level("WARNING"):
        run(go)
    assert svc.store.queue_list() == [] and "null sender" in caplog.text


def test_notify_never_and_notify_success_only_send_no_failure_dsn(svc: Services) -> None:
    relay = FakeRelay({"a@friend.com": "failed", "b@friend.com": "failed"})
    recipients = (routed(svc, "a@friend.com", notify=["NEVER"])
                  + routed(svc, "b@friend.com", notify=["SUCCESS"]))

    async def go() -> None:
        queue, runner = await harness(svc, relay)
        try:
            await queue.submit(Submission("alice@main.dom", recipients, body()))
            await runner.run_once()
            await runner.run_once()
        finally:
            await queue.close()

    run(go)
    assert svc.store.queue_list() == [] and pending_dsns_and_inbox(svc, "alice@main.dom") == []


def test_accepted_and_bounced_discarded_and_lists(svc: Services) -> None:
    svc.directory.create_list("news", "alice")

    async def go() -> None:
        queue, runner = await harness(svc)
        try:
            await queue.submit(submission(svc, "nobody@bounced.dom", "nobody@discarded.dom",
                                          "news@main.dom", mail_from="alice@main.dom"))
            await runner.run_once()
            await runner.run_once()
        finally:
            await queue.close()

    run(go)
    (dsn,) = pending_dsns_and_inbox(svc, "alice@main.dom")
    assert b"Final-Recipient: rfc822; nobody@bounced.dom" in dsn and b"Status: 5.1.1" in dsn
    (m,) = svc.store.queue_list()  # the list recipient waits, with a note; the rest is done
    (r,) = m.recipients
    assert (r.module, r.state) == ("LIST", "deferred") and "not delivered yet" in r.last_error


def test_groups_were_expanded_at_rcpt_time(svc: Services) -> None:
    relay = FakeRelay()

    async def go() -> None:
        queue, runner = await harness(svc, relay)
        try:
            await queue.submit(submission(svc, "team@main.dom"))
            await runner.run_once()
        finally:
            await queue.close()

    run(go)
    assert len(pending_dsns_and_inbox(svc, "alice@main.dom")) == 1
    assert [r.address for _, ms in relay.calls for m in ms for r in m.recipients] == [
        "bob@remote.example"]


# -- hold and release --------------------------------------------------------------

def test_held_queues_are_not_attempted_until_released_and_return_to_hold(svc: Services) -> None:
    svc.set_setting("HoldMailForDomains", "*.customer.com, friend.com")
    relay = FakeRelay({"x@mx.customer.com": "deferred"})

    async def go() -> None:
        queue, runner = await harness(svc, relay)
        try:
            await queue.submit(submission(svc, "x@mx.customer.com", "y@friend.com",
                                          "z@free.org"))
            await runner.run_once()
            assert [q for q, _ in relay.calls] == ["free.org"]
            states = {r.queue: recipient_state(r, queue.policy)
                      for m in await queue.list() for r in m.recipients}
            assert states == {"mx.customer.com": "held", "friend.com": "held"}
            assert queue.held("mx.customer.com") and queue.held("SMTP(friend.com)")
            assert not queue.held("free.org")
            # ETRN-style release: one attempt now, held or not
            assert await queue.release("mx.customer.com") == 1
            await runner.run_once()
            assert [q for q, _ in relay.calls] == ["free.org", "mx.customer.com"]
            (m,) = await queue.list()
            by_queue = {r.queue: r for r in m.recipients}
            again = by_queue["mx.customer.com"]
            assert recipient_state(again, queue.policy) == "held" and again.attempts == 1
            await runner.run_once()  # still held: no further attempt
            assert len(relay.calls) == 2
            # releasing a domain with @ covers its subdomains; friend.com delivers
            assert await queue.release("@customer.com") == 1
            assert await queue.release("friend.com") == 1
            relay.answers.clear()
            await runner.run_once()
            assert await queue.list() == []
        finally:
            await queue.close()

    run(go)


def test_releasing_an_empty_queue_reports_nothing_waiting(svc: Services) -> None:
    async def go() -> int:
        queue, _ = await harness(svc)
        try:
            return await queue.release("nothing.example")
        finally:
            await queue.close()

    assert run(go) == 0


def test_removing_a_domain_from_the_hold_list_delivers_its_mail(svc: Services) -> None:
    svc.set_setting("HoldMailForDomains", "friend.com")
    relay = FakeRelay()

    async def go() -> None:
        queue, runner = await harness(svc, relay)
        try:
            await queue.submit(submission(svc, "y@friend.com"))
            await runner.run_once()
            assert relay.calls == []
            svc.set_setting("HoldMailForDomains", "")
            await runner.run_once()  # notices the change: held queues are flushed
            await runner.run_once()
            assert len(relay.calls) == 1 and await queue.list() == []
        finally:
            await queue.close()

    run(go)


def test_held_mail_expires_after_the_hold_lifetime_with_its_own_text(svc: Services) -> None:
    svc.set_setting("HoldMailForDomains", "friend.com")
    svc.set_setting("HeldQueueLifetime", "0")
    relay = FakeRelay()

    async def go() -> None:
        queue, runner = await harness(svc, relay)
        try:
            await queue.submit(submission(svc, "y@friend.com", mail_from="alice@main.dom"))
            await runner.run_once()
            await runner.run_once()
        finally:
            await queue.close()

    run(go)
    assert relay.calls == []
    (dsn,) = pending_dsns_and_inbox(svc, "alice@main.dom")
    assert b"Status: 5.4.7" in dsn and b"friend.com" in dsn and b"collect" in dsn


def test_delete_removes_a_message_without_a_bounce(svc: Services) -> None:
    async def go() -> None:
        queue, runner = await harness(svc)
        try:
            message_id = await queue.submit(submission(svc, "y@friend.com"))
            assert (await queue.show(message_id)).id == message_id
            await queue.delete(message_id)
            with pytest.raises(NotFound):
                await queue.show(message_id)
            with pytest.raises(NotFound):
                await queue.delete(message_id)
            await runner.run_once()
        finally:
            await queue.close()

    run(go)
    assert svc.store.queue_list() == []


def test_the_runner_loop_wakes_on_submit(svc: Services, caplog: pytest.LogCaptureFixture
                                         ) -> None:
    caplog.set_level(logging.DEBUG, logger="waypost.delivery")

    async def go() -> float:
        queue, runner = await harness(svc)
        runner.poll = 30  # only the submit event can wake it in time
        task = asyncio.create_task(runner.run())
        try:
            deadline = time.monotonic() + 10
            while not any("delivery runner waiting" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the runner never reached its wait"
                await asyncio.sleep(0.01)
            start = time.monotonic()
            await queue.submit(submission(svc, "alice"))
            while svc.store.queue_list():
                await asyncio.sleep(0.01)
            return time.monotonic() - start
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    assert run(go) < 2
    assert len(pending_dsns_and_inbox(svc, "alice@main.dom")) == 1


def test_start_delivery_attaches_the_queue_and_the_runner_to_the_server(svc: Services) -> None:
    from waypost.server import Server
    from waypost.services.delivery.runner import start_delivery

    async def go() -> None:
        server = Server(svc)
        await start_delivery(server)
        assert isinstance(server.queue, Queue)  # type: ignore[attr-defined]
        await server.queue.submit(submission(svc, "alice"))  # type: ignore[attr-defined]
        for _ in range(200):
            if not svc.store.queue_list():
                break
            await asyncio.sleep(0.01)
        await server.stop()

    run(go)
    assert len(pending_dsns_and_inbox(svc, "alice@main.dom")) == 1


def test_blobs_of_finished_messages_are_collected(svc: Services) -> None:
    async def go() -> str:
        queue, runner = await harness(svc, FakeRelay())
        try:
            message_id = await queue.submit(submission(svc, "bob@friend.com"))
            blob = (await queue.show(message_id)).blob
            await runner.run_once()
            return blob
        finally:
            await queue.close()

    blob = run(go)
    store = svc.store
    assert isinstance(store, SqliteStore)
    assert store.blobs.path(blob).exists()
    assert store.blob_gc(3600) == 0  # too young: a submission may be reusing it
    assert store.blob_gc(0) == 1 and not store.blobs.path(blob).exists()
    # a body written by a submission that never committed (a crash) goes on a full sweep
    orphan = store.blob_put(b"never committed")
    assert store.blob_gc(0) == 0 and store.blob_gc(0, full=True) == 1
    assert not store.blobs.path(orphan).exists()
