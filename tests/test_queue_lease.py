"""Queue leases (issue 15 points 3 and 5): two processes' worth of store
connections and runners on one data directory claim queue work instead of
sharing it. Each "process" here is its own ``Services`` over its own SQLite
connection to the same database, with its own Queue and DeliveryRunner
(real components; only the relay is the suite's FakeRelay). The ``two``
fixture runs each test on SQLite and on PostgreSQL (``store_location``);
the CLI test reads a data directory and stays on SQLite. The
cross-process end-to-end test with ``kill -9`` is ``test_queue_lease_e2e.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from tests.support.delivery import FakeRelay, dsns, harness, run
from tests.support.services import body, open_at, open_world, submission

from waypost.cli import queue as queue_cli
from waypost.cli.common import data_option
from waypost.services.container import Services, open_services
from waypost.services.delivery.outbound import Outcome
from waypost.services.mailstore import Mailstore
from waypost.services.message import Submission
from waypost.storage.interface import QueuedMessage, RecipientUpdate

ACCOUNTS = 10


@pytest.fixture
def two(store_location: str) -> Iterator[tuple[Services, Services]]:
    """Two store connections (two processes' worth) on one store, per backend."""
    first = open_world(store_location)
    second = open_at(store_location)
    try:
        yield first, second
    finally:
        second.store.close()
        first.store.close()


@pytest.fixture
def two_sqlite(tmp_path: Path) -> Iterator[tuple[Services, Services]]:
    """Two store connections on one data directory (for the CLI, which takes one)."""
    first = open_world(tmp_path / "data")
    second = open_services(tmp_path / "data")
    try:
        yield first, second
    finally:
        second.store.close()
        first.store.close()


def message_ids(svc: Services, account: str) -> list[str]:
    mail = Mailstore(svc.store)
    out = []
    for m in mail.list_messages(account):
        found = re.search(rb"(?im)^Message-ID: *(<[^>]*>)",
                          mail.read_message(account, "INBOX", m.uid))
        assert found, "stored copy without its Message-ID"
        out.append(found.group(1).decode())
    return out


def queued(svc: Services, *subs: Submission) -> None:
    """Submit (no delivery: no runner ticks)."""
    async def go() -> None:
        queue, _ = await harness(svc)
        try:
            for sub in subs:
                await queue.submit(sub)
        finally:
            await queue.close()

    run(go)


def keys(messages: list[QueuedMessage]) -> list[int]:
    return [r.key for m in messages for r in m.recipients]


def test_two_runners_deliver_500_local_messages_each_once(
    two: tuple[Services, Services],
) -> None:
    """500 queued local messages (ten accounts, 50 each, so a claim of 50 is
    about one route queue), two runners ticking at once on two connections:
    every recipient is claimed by exactly one runner, every message is
    stored exactly once, nothing is left queued."""
    a, b = two
    for i in range(ACCOUNTS):
        a.directory.create_account(f"u{i}")
    claimed: dict[str, list[int]] = {"a": [], "b": []}

    def spy(svc: Services, name: str) -> None:  # observes what each claim returned
        real = svc.store.queue_claim

        def claim(*args: Any, **kwargs: Any) -> list[QueuedMessage]:
            got = real(*args, **kwargs)
            claimed[name] += keys(got)
            return got

        svc.store.queue_claim = claim  # type: ignore[method-assign]

    spy(a, "a")
    spy(b, "b")

    async def go() -> None:
        qa, ra = await harness(a)
        qb, rb = await harness(b)
        ra.batch = rb.batch = 50
        try:
            await asyncio.gather(*[
                qa.submit(submission(a, f"u{n // 50}@main.dom", data=body(
                    f"m{n}", extra=f"Message-ID: <m{n}@lease.test>\r\n".encode())))
                for n in range(500)])
            for _ in range(200):  # bounded: each round delivers up to 100
                await asyncio.gather(ra.run_once(), rb.run_once())
                if not await qa.db(a.store.queue_list):
                    break
        finally:
            await qa.close()
            await qb.close()

    run(go)
    assert a.store.queue_list() == []
    both = claimed["a"] + claimed["b"]
    assert len(both) == 500 and len(set(both)) == 500  # each recipient claimed once
    assert claimed["a"] and claimed["b"], "one runner did all the work: no race was tried"
    stored = [mid for i in range(ACCOUNTS) for mid in message_ids(a, f"u{i}@main.dom")]
    assert sorted(stored) == sorted(f"<m{n}@lease.test>" for n in range(500))


def test_a_dead_owners_claim_waits_for_its_lease_then_is_taken(
    two: tuple[Services, Services],
) -> None:
    a, b = two
    queued(a, submission(a, "alice@main.dom"))
    now = time.time()
    dead = a.store.queue_claim("host:1:dead", now, 60, 100)
    assert len(keys(dead)) == 1
    # the "dead" owner never settles; another process asks before and after the lease
    assert b.store.queue_claim("host:2:live", now + 30, 60, 100) == []
    assert b.store.queue_claim("host:2:live", now + 59.9, 60, 100) == []
    taken = b.store.queue_claim("host:2:live", now + 60.1, 60, 100)
    assert keys(taken) == keys(dead)
    (r,) = b.store.queue_list()[0].recipients
    assert r.owner == "host:2:live" and r.lease_until == pytest.approx(now + 120.1)


def test_renewal_keeps_the_claim_and_settling_clears_it(two: tuple[Services, Services]) -> None:
    a, b = two
    queued(a, submission(a, "y@friend.com"))
    now = time.time()
    got = keys(a.store.queue_claim("A", now, 60, 100))
    assert a.store.queue_renew("A", got, now + 200) == set(got)
    assert b.store.queue_claim("B", now + 100, 60, 100) == []  # past the first lease
    assert b.store.queue_renew("B", got, now + 300) == set()  # not B's to renew
    a.store.queue_commit(settle=[RecipientUpdate(got[0], "deferred", next_attempt=now,
                                                 owner="A")])
    (r,) = a.store.queue_list()[0].recipients
    assert r.owner is None and r.lease_until == 0  # settled: free at once
    assert keys(b.store.queue_claim("B", now + 1, 60, 100)) == got
    assert a.store.queue_renew("A", got, now + 400) == set()  # A lost it


def test_a_runner_renews_the_claim_of_a_long_delivery(two: tuple[Services, Services]) -> None:
    """QueueLeaseTime 1 s, a relay that takes 2.5 s: the runner renews every
    third of a second, so the other connection cannot claim the recipient
    mid-delivery (it could after 1 s without renewal)."""
    a, b = two
    a.set_setting("QueueLeaseTime", "1")
    stolen: list[list[QueuedMessage]] = []

    class SlowRelay(FakeRelay):
        async def deliver(self, queue: str, messages: Any, ctx: Any) -> list[Any]:
            await asyncio.sleep(2.5)
            stolen.append(b.store.queue_claim("other", time.time(), 1, 100))
            return await super().deliver(queue, messages, ctx)

    relay = SlowRelay()

    async def go() -> None:
        queue, runner = await harness(a, relay)
        try:
            await queue.submit(submission(a, "y@friend.com"))
            await runner.run_once()
        finally:
            await queue.close()

    run(go)
    assert stolen == [[]]
    assert len(relay.calls) == 1
    assert a.store.queue_list() == []


def test_a_stale_owner_stores_nothing_after_a_takeover(two: tuple[Services, Services]) -> None:
    """A's lease ran out (a stall) and B took the recipient over: A's late
    local delivery neither stores a copy nor settles; B's stores once."""
    a, b = two

    async def go() -> None:
        qa, ra = await harness(a)
        qb, rb = await harness(b)
        try:
            await qa.submit(submission(a, "alice@main.dom", data=body(
                "late", extra=b"Message-ID: <late@lease.test>\r\n")))
            now = time.time()
            mine = await qa.db(a.store.queue_claim, "A", now, 10, 100)
            theirs = await qb.db(b.store.queue_claim, "B", now + 11, 10, 100)
            assert keys(theirs) == keys(mine)
            await ra.local.deliver("alice@main.dom", mine, owner="A")  # too late
            assert message_ids(a, "alice@main.dom") == []
            assert len(a.store.queue_list()) == 1  # A's settle did not apply either
            await rb.local.deliver("alice@main.dom", theirs, owner="B")
            await ra.local.deliver("alice@main.dom", mine, owner="A")  # and again later
        finally:
            await qa.close()
            await qb.close()

    run(go)
    assert message_ids(a, "alice@main.dom") == ["<late@lease.test>"]
    assert a.store.queue_list() == []


@click.group()
@data_option
def cli() -> None:
    """``waypost queue`` as cli/main.py registers it."""


for command in queue_cli.COMMANDS:
    cli.add_command(command)


def test_waypost_queue_shows_who_holds_a_claim_and_until_when(
    two_sqlite: tuple[Services, Services],
) -> None:
    a, _ = two_sqlite
    queued(a, submission(a, "y@friend.com", QueueID="Q1"),
           submission(a, "z@friend.com", QueueID="Q2"))
    now = time.time()
    a.store.queue_claim("mx1:4242:beef", now, 60, 1)  # the oldest only: Q1
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(now + 60))
    out = CliRunner().invoke(cli, ["--data", str(a.data_dir), "queue", "list"]).output
    (q1,) = [line for line in out.splitlines() if "Q1" in line]
    (q2,) = [line for line in out.splitlines() if "Q2" in line]
    assert "mx1:4242:beef until " + until in q1 and "expired" not in q1
    assert "mx1:4242:beef" not in q2
    shown = CliRunner().invoke(cli, ["--data", str(a.data_dir), "queue", "show", "Q1"]).output
    assert "mx1:4242:beef until " + until in shown


def test_a_stale_owner_sends_no_second_dsn(two: tuple[Services, Services]) -> None:
    """A failure found by a runner whose claim was taken over is neither
    recorded nor reported: the new owner reports it (one DSN, not two)."""
    a, b = two
    queued(a, submission(a, "nobody@bounced.dom"))

    async def go() -> None:
        qa, ra = await harness(a)
        try:
            now = time.time()
            (mine,) = await qa.db(a.store.queue_claim, "A", now, 10, 100)
            assert keys(b.store.queue_claim("B", now + 11, 10, 100))  # A's lease ran out
            await ra.bounce(mine, [(r, Outcome(r.key, "failed", 550, "5.1.1", "no such user"))
                                   for r in mine.recipients], owner="A")
        finally:
            await qa.close()

    run(go)
    assert dsns(a) == []
    (m,) = a.store.queue_list()
    assert [r.owner for r in m.recipients] == ["B"]


def test_a_runner_that_stops_releases_its_claims(two: tuple[Services, Services]) -> None:
    """A clean stop (the run task cancelled mid-delivery) frees what it
    claimed at once: another process need not wait for the lease."""
    a, b = two
    started = asyncio.Event()

    class StuckRelay(FakeRelay):
        async def deliver(self, queue: str, messages: Any, ctx: Any) -> list[Any]:
            started.set()
            await asyncio.sleep(60)  # cancelled long before
            return []

    async def go() -> None:
        queue, runner = await harness(a, StuckRelay())
        await queue.submit(submission(a, "y@friend.com"))
        task = asyncio.create_task(runner.run())
        async with asyncio.timeout(20):
            await started.wait()
        (held,) = [r for m in a.store.queue_list() for r in m.recipients]
        assert held.owner == runner.owner
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run(go)
    (r,) = [r for m in a.store.queue_list() for r in m.recipients]
    assert r.owner is None and r.state == "queued"
    assert keys(b.store.queue_claim("B", time.time(), 60, 100)) == [r.key]


def test_two_postgresql_stores_claim_200_recipients_concurrently_each_once(
    pg_url: str,
) -> None:
    """Two store objects (two nodes) on one PostgreSQL database, two threads
    each, claim 200 due recipients in small batches at once: every recipient
    is claimed by exactly one owner (SELECT ... FOR UPDATE SKIP LOCKED and the
    claim lock), and every one is claimed. Each recipient has its own route
    queue, so the held-queue rule does not make the claimers take turns."""
    from waypost.storage.interface import NewQueueMessage, NewQueueRecipient, Store
    from waypost.storage.open import open_store

    stores: list[Store] = [open_store(pg_url, create=True)]
    stores.append(open_store(pg_url))
    try:
        blob = stores[0].blob_put(b"Subject: x\r\n\r\nbody\r\n")
        now = time.time()
        stores[0].queue_commit(add=[
            NewQueueMessage(f"C{n}", "bob@remote.example", blob, 20, now - 1,
                            (NewQueueRecipient(f"u{n}@friend.com", "SMTP", f"q{n}"),))
            for n in range(200)
        ])
        claimed: dict[str, list[int]] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def claimer(store: Store, owner: str) -> None:
            got = claimed.setdefault(owner, [])
            try:
                start.wait(timeout=20)
                for _ in range(200):  # bounded: 200 rounds of 7 cover 200 alone
                    batch = keys(store.queue_claim(owner, time.time(), 600, 7))
                    if not batch:
                        return
                    got += batch
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=claimer, args=(stores[i % 2], f"node{i % 2}:t{i}"))
                   for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a claimer hung"
        assert errors == []
        every = [k for got in claimed.values() for k in got]
        assert len(every) == 200 and len(set(every)) == 200  # each recipient claimed once
        assert sum(1 for got in claimed.values() if got) >= 2, "no race was tried"
        owners = {r.key: r.owner for m in stores[1].queue_list() for r in m.recipients}
        assert all(owners[k] == owner for owner, got in claimed.items() for k in got)
    finally:
        for store in stores:
            store.close()
