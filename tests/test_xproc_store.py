"""The store methods behind state shared by several processes (issue 15 point 3):
login failures, named locks with a lease, WebUser sessions, shared secrets.
Two store objects on one database stand for two processes; the ``two``
fixture runs each test on SQLite and on PostgreSQL (``store_location``)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from waypost.storage.interface import Store, WebSessionRecord
from waypost.storage.open import open_store

PAIR, IP, ACCT = "pair\0bob@main.dom\0" + "10.0.0.1", "ip\0" + "10.0.0.1", "account\0bob@main.dom"


@pytest.fixture
def two(store_location: str):
    a = open_store(store_location, create=True)
    b = open_store(store_location)
    yield a, b
    a.close()
    b.close()


def fail(store: Store, now: float, reservation: int | None = None, limit: int = 3):
    return store.login_failed(PAIR, IP, ACCT, now=now, since=now - 100, limit=limit,
                              lockout=50, reservation=reservation)


def test_failures_count_across_stores_and_lock_out_once(two) -> None:
    a, b = two
    assert fail(a, 1000).pair == 1
    assert fail(b, 1001).pair == 2
    third = fail(a, 1002)
    assert (third.pair, third.address, third.locked_now) == (3, 3, True)
    assert not fail(b, 1003).locked_now  # already locked: not a new lock-out
    state = b.login_state(PAIR, IP, ACCT, since=1003 - 100, now=1003)
    assert (state.pair, state.address, state.account) == (4, 4, 4)
    assert state.locked_until == 1052
    # the lock-out ends after ``lockout`` seconds; failures leave the window
    assert a.login_state(PAIR, IP, ACCT, since=1053 - 100, now=1053).locked_until == 0
    assert a.login_state(PAIR, IP, ACCT, since=1002.5, now=1102).pair == 1


def test_success_clears_the_pair_only(two) -> None:
    a, b = two
    fail(a, 1000)
    fail(a, 1001)
    b.login_succeeded(PAIR, reservation=None)
    state = a.login_state(PAIR, IP, ACCT, since=900, now=1002)
    assert (state.pair, state.address, state.account) == (0, 2, 2)


def test_reservations_are_shared_and_bounded(two) -> None:
    a, b = two
    r1 = a.login_reserve(PAIR, since=900, now=1000, limit=3, extra=0, ttl=60)
    r2 = b.login_reserve(PAIR, since=900, now=1000, limit=3, extra=0, ttl=60)
    assert r1 and r2
    assert a.login_reserve(PAIR, since=900, now=1000, limit=3, extra=1, ttl=60) is None
    assert a.login_state(PAIR, IP, ACCT, since=900, now=1000).in_flight == 2
    fail(a, 1001, reservation=r1)
    # failures plus reservations: still 2 of 3
    assert a.login_state(PAIR, IP, ACCT, since=900, now=1001).in_flight == 1
    assert b.login_reserve(PAIR, since=900, now=1001, limit=3, extra=1, ttl=60) is None
    assert b.login_reserve(PAIR, since=900, now=1001, limit=3, extra=0, ttl=60)
    # a reservation of a dead process expires after its ttl
    assert a.login_state(PAIR, IP, ACCT, since=900, now=1061).in_flight == 0


def test_old_failures_are_deleted(two) -> None:
    a, _ = two
    for t in range(10):
        fail(a, 1000 + t, limit=0)
    fail(a, 5000, limit=0)
    with a._read() as conn:  # the same SQL on both backends
        rows = conn.execute("SELECT COUNT(*) FROM login_failures").fetchone()[0]
    assert rows == 3


def test_shared_lock_is_exclusive_until_dropped_or_expired(two) -> None:
    a, b = two
    assert a.shared_lock_holder("pop3:bob") is None
    assert a.shared_lock_take("pop3:bob", "A", now=1000, ttl=10)
    assert b.shared_lock_holder("pop3:bob") == "A"
    assert not b.shared_lock_take("pop3:bob", "B", now=1001, ttl=10)
    assert a.shared_lock_take("pop3:bob", "A", now=1001, ttl=10)  # its own
    assert b.shared_lock_take("pop3:eve", "B", now=1001, ttl=10)
    a.shared_lock_drop("pop3:bob", "B")  # not B's: nothing happens
    assert not b.shared_lock_take("pop3:bob", "B", now=1002, ttl=10)
    a.shared_lock_drop("pop3:bob", "A")
    assert b.shared_lock_take("pop3:bob", "B", now=1002, ttl=10)
    # renewed leases hold; one not renewed expires and is lost
    assert b.shared_lock_renew(["pop3:bob"], "B", now=1010, ttl=10) == []
    assert not a.shared_lock_take("pop3:bob", "A", now=1015, ttl=10)
    assert a.shared_lock_take("pop3:eve", "A", now=1012, ttl=10)  # eve's lease ended at 1011
    assert b.shared_lock_renew(["pop3:eve", "pop3:bob"], "B", now=1013, ttl=10) == ["pop3:eve"]


def record(key: str, last_seen: float) -> WebSessionRecord:
    return WebSessionRecord(key=key, cookie="c" + key, account="bob@main.dom",
                            domain="main.dom", skin="", client_ip="127.0.0.1", secure=False,
                            last_seen=last_seen)


def test_web_sessions_shared_touched_dropped_expired_bounded(two) -> None:
    a, b = two
    a.web_session_put(record("k1", 1000), max_sessions=3)
    got = b.web_session_get("k1")
    assert got == record("k1", 1000)
    b.web_session_touch("k1", 1100)
    b.web_session_touch("k1", 1050)  # never back in time
    assert a.web_session_get("k1").last_seen == 1100
    for n, t in ((2, 1001), (3, 1002), (4, 1003)):
        a.web_session_put(record(f"k{n}", t), max_sessions=3)
    assert a.web_session_get("k2") is None  # least recently seen went first
    assert a.web_session_get("k1") is not None
    assert b.web_session_drop("k1") and not b.web_session_drop("k1")
    assert a.web_session_get("k1") is None
    assert a.web_sessions_expire(1002.5) == 1  # k3
    assert a.web_session_get("k4") is not None


def test_shared_secret_made_once(two) -> None:
    a, b = two
    secret = a.shared_secret("web")
    assert len(secret) == 32
    assert b.shared_secret("web") == secret
    assert b.shared_secret("other") != secret


def test_maildrop_leases_refuse_in_process_and_across(two) -> None:
    from waypost.services.shared_locks import MaildropLeases

    now = [1000.0]
    a = MaildropLeases(two[0], lease=10, holder="A", wall=lambda: now[0])
    b = MaildropLeases(two[1], lease=10, holder="B", wall=lambda: now[0])
    assert a.acquire("Bob@main.dom")
    assert not a.acquire("bob@main.dom")  # a second session of the same process
    assert not b.acquire("bob@main.dom")
    now[0] = 1008
    assert a.renew() == []
    now[0] = 1015  # renewed at 1008: held until 1018
    assert not b.acquire("bob@main.dom")
    now[0] = 1019  # A stopped renewing (it died): the lease ran out
    assert b.acquire("bob@main.dom")
    assert a.renew() == ["bob@main.dom"]
    a.release("bob@main.dom")  # A's session ends: drops nothing of B's
    assert not a.acquire("bob@main.dom")
    b.release("bob@main.dom")
    assert b.held() == [] and a.acquire("bob@main.dom")


def test_first_sealing_key_is_one_key_when_processes_race(tmp_path: Path) -> None:
    """Processes sealing for the first time at once end with one key, and
    each sealed with that key (issue 15: the key file is linked, not replaced)."""
    import subprocess
    import sys

    script = ("import sys; from pathlib import Path; from waypost.services import sealed;"
              "d = Path(sys.argv[1]); t = sealed.seal(d, 'pw');"
              "print(sealed.unseal(d, t))")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert outs == ["pw"] * 6  # every seal opens with the key that stayed
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["sealing.key"]


def _race(calls: list) -> list:
    """Run the calls in threads started together; their results in order."""
    import threading

    results: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait(timeout=20)
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # reported by the assertions, not lost
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a call hung"
    return results


def test_concurrent_takes_and_reservations_respect_their_limits(two) -> None:
    """Eight writers on two stores at once: one takes a free lock, and no
    more reservations than the limit are granted (the check-and-change is
    atomic: an advisory lock on the pair and INSERT ... ON CONFLICT on
    PostgreSQL, BEGIN IMMEDIATE on SQLite)."""
    for round_ in range(3):
        name = f"maildrop-{round_}"
        took = _race([partial(two[i % 2].shared_lock_take, name, f"H{i}", now=1000, ttl=60)
                      for i in range(8)])
        assert took.count(True) == 1 and took.count(False) == 7, took
        pair = f"{PAIR}-{round_}"
        got = _race([partial(two[i % 2].login_reserve, pair, since=900, now=1000, limit=3,
                             extra=0, ttl=60)
                     for i in range(8)])
        assert not [g for g in got if isinstance(g, BaseException)], got
        assert len([g for g in got if g is not None]) == 3, got
