"""The login guard's policy, in process with an injected clock (issue 13 point 2).

End to end over SMTP, IMAP, POP3 and the web: ``test_login_guard_concurrency.py``.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waypost.services import login_guard
from waypost.services.login_guard import LoginGuard, Ticket
from waypost.settings import ServerSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def make_guard(clock: Clock, limit: int = 3, **kwargs: int) -> LoginGuard:
    return LoginGuard(limit, 60, 120, base_delay=0.5, max_delay=4, clock=clock,
                      sleep=clock.sleep, **kwargs)


def run_attempt(guard: LoginGuard, ip: str, login: str, result: str | None
                ) -> tuple[login_guard.Attempt, bool]:
    called = []

    async def verify() -> str | None:
        called.append(1)
        return result

    attempt = asyncio.run(guard.attempt(ip, login, verify, service="TEST"))
    return attempt, bool(called)


def test_parallel_attempts_get_no_more_guesses_than_one_client() -> None:
    clock = Clock()
    guard = make_guard(clock, limit=5)
    verified = []

    async def scenario() -> list[login_guard.Attempt]:
        gate = asyncio.Event()

        async def wrong() -> str | None:
            verified.append(1)
            await gate.wait()  # every allowed attempt is in flight at once
            return None

        tasks = [asyncio.create_task(guard.attempt("10.0.0.1", "carol@d", wrong, service="T"))
                 for _ in range(50)]
        for _ in range(10_000):  # the other 45 wait for those in flight
            if len(verified) == 5:
                break
            await asyncio.sleep(0)
        for _ in range(100):
            await asyncio.sleep(0)
        assert len(verified) == 5 and not any(t.done() for t in tasks)
        gate.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(scenario())
    assert len(verified) == 5
    assert sum(r.locked for r in results) == 45 and all(r.account is None for r in results)
    assert guard.failures("10.0.0.1", "carol@d") == (5, 5, 5)
    # Locked: the right password is refused from that address, unverified ...
    attempt, called = run_attempt(guard, "10.0.0.1", "carol@d", "carol@d")
    assert attempt.account is None and attempt.locked and not called
    # ... but not from another address, nor another account from this one.
    assert run_attempt(guard, "10.0.0.2", "carol@d", "carol@d")[0].account == "carol@d"
    assert run_attempt(guard, "10.0.0.1", "alice@d", "alice@d")[0].account == "alice@d"


def test_parallel_logins_with_the_right_password_all_get_in() -> None:
    """A client opening many connections at once (Thunderbird, a webmail)
    with the right password: those beyond the limit wait for the ones in
    flight instead of being refused, and every one logs in."""
    guard = make_guard(Clock(), limit=3)
    verified = []

    async def scenario() -> list[login_guard.Attempt]:
        async def right() -> str | None:
            verified.append(1)
            await asyncio.sleep(0.01)
            return "dave@d"

        return await asyncio.gather(*(guard.attempt("10.0.0.1", "dave@d", right, service="T")
                                      for _ in range(20)))

    results = asyncio.run(scenario())
    assert [r.account for r in results] == ["dave@d"] * 20 and len(verified) == 20
    assert guard.failures("10.0.0.1", "dave@d") == (0, 0, 0)


def test_a_busy_refusal_is_not_a_lock_out() -> None:
    guard = make_guard(Clock(), limit=1)
    first = guard.begin("10.0.0.1", "erin@d")
    busy = guard.begin("10.0.0.1", "erin@d")
    assert first.allowed and not busy.allowed and busy.busy
    guard.finish(first, success=False)  # the one failure allowed: now locked
    locked = guard.begin("10.0.0.1", "erin@d")
    assert not locked.allowed and not locked.busy


def test_attempts_in_flight_count_until_they_succeed() -> None:
    guard = make_guard(Clock(), limit=2)
    first = guard.begin("10.0.0.1", "bob@d")
    second = guard.begin("10.0.0.1", "bob@d")
    assert first.allowed and second.allowed
    refused = guard.begin("10.0.0.1", "bob@d")  # two in flight: the limit
    assert not refused.allowed and refused.why == "0 failures and 2 attempts in flight"
    assert guard.locked("10.0.0.1", "bob@d") and not guard.locked("10.0.0.2", "bob@d")
    assert guard.finish(first, success=True) == (0.0, False)
    assert guard.begin("10.0.0.1", "bob@d").allowed  # one in flight, no failures
    assert guard.finish(second, success=False) == (0.5, False)


def test_lock_out_lasts_lockout_and_failures_slide_out_of_the_window() -> None:
    clock = Clock()
    guard = make_guard(clock)  # limit 3, window 60, lock-out 120
    for _ in range(3):
        assert not run_attempt(guard, "10.0.0.1", "dave@d", None)[0].locked
    assert clock.slept == [0.5, 1.0, 2.0]
    clock.now += 119
    attempt, called = run_attempt(guard, "10.0.0.1", "dave@d", "dave@d")
    assert attempt.locked and not called and clock.slept[-1] == 2.0  # as slow as a failure
    clock.now += 2
    assert run_attempt(guard, "10.0.0.1", "dave@d", "dave@d")[0].account == "dave@d"
    # A lock-out shorter than the window: refused until the failures leave it.
    guard.lockout = 10
    for _ in range(3):
        run_attempt(guard, "10.0.0.1", "dave@d", None)
    clock.now += 30
    assert guard.locked("10.0.0.1", "dave@d")
    clock.now += 31
    assert not guard.locked("10.0.0.1", "dave@d")


def test_success_clears_the_pair_but_not_the_address() -> None:
    clock = Clock()
    guard = make_guard(clock)
    run_attempt(guard, "10.0.0.3", "erin@d", None)
    run_attempt(guard, "10.0.0.3", "erin@d", None)
    assert run_attempt(guard, "10.0.0.3", "erin@d", "erin@d")[0].account == "erin@d"
    assert guard.failures("10.0.0.3", "erin@d") == (0, 2, 2)
    run_attempt(guard, "10.0.0.3", "erin@d", None)
    run_attempt(guard, "10.0.0.3", "erin@d", None)
    assert not guard.locked("10.0.0.3", "erin@d")
    # The address's failures make its failure replies slower (Dovecot's auth_penalty).
    assert clock.slept[-1] == 4  # the address's fourth failure: capped at max_delay


def test_the_account_ceiling_slows_but_never_locks_out() -> None:
    clock = Clock()
    guard = make_guard(clock, account_limit=10)
    for n in range(40):  # a botnet: one guess from each of 40 addresses
        attempt, called = run_attempt(guard, f"10.1.0.{n}", "frank@d", None)
        assert called and not attempt.locked
    assert guard.failures("10.9.9.9", "frank@d") == (0, 0, 40)
    clock.slept.clear()
    attempt, called = run_attempt(guard, "10.9.9.9", "frank@d", "frank@d")
    assert attempt.account == "frank@d" and clock.slept == [4]  # slowed before verifying
    # An address with a failure for the account, below the pair limit: slowed, not refused.
    assert run_attempt(guard, "10.1.0.1", "frank@d", "frank@d")[0].account == "frank@d"


def test_the_address_ceiling_slows_but_never_locks_out() -> None:
    clock = Clock()
    guard = make_guard(clock, address_limit=10)
    for n in range(20):  # spraying: one guess at each of 20 accounts
        assert run_attempt(guard, "10.2.0.1", f"user{n}@d", None)[1]
    clock.slept.clear()
    attempt, called = run_attempt(guard, "10.2.0.1", "grace@d", "grace@d")
    assert called and attempt.account == "grace@d" and clock.slept == [4]
    clock.slept.clear()
    assert run_attempt(guard, "10.2.0.2", "grace@d", "grace@d")[0].account == "grace@d"
    assert clock.slept == []  # other addresses are not slowed


def test_an_attempt_that_does_not_succeed_counts_as_a_failure() -> None:
    clock = Clock()
    guard = make_guard(clock, limit=2)

    async def hang_up() -> str | None:
        raise ConnectionResetError

    for _ in range(2):
        with pytest.raises(ConnectionResetError):
            asyncio.run(guard.attempt("10.0.0.4", "heidi@d", hang_up, service="T"))
    assert guard.locked("10.0.0.4", "heidi@d")


def test_account_key_is_case_insensitive_and_limit_zero_never_locks() -> None:
    clock = Clock()
    guard = make_guard(clock, limit=0)
    for _ in range(10):
        assert run_attempt(guard, "10.0.1.1", "Ivan@D", None)[1]
    assert not guard.locked("10.0.1.1", "ivan@d")
    assert clock.slept[-1] == 4  # capped
    guard = make_guard(clock, limit=2)
    run_attempt(guard, "10.0.2.1", "Ivan@D", None)
    run_attempt(guard, "10.0.2.1", "ivan@d", None)
    assert guard.locked("10.0.2.1", "IVAN@d") and not guard.locked("10.0.2.2", "ivan@d")


def test_pruning_keeps_attempts_in_flight_and_lock_outs(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setattr(login_guard, "MAX_TRACKED", 7)
    guard = make_guard(Clock(), limit=2)
    for _ in range(2):
        run_attempt(guard, "10.0.3.99", "kate@d", None)  # locked out: kept while others go
    held = [guard.begin("10.0.3.1", "judy@d") for _ in range(2)]
    for n in range(10):  # one failure each: nothing locked, all prunable
        run_attempt(guard, f"10.0.3.{n + 2}", f"u{n}@d", None)
    assert len(guard._records) <= 7
    assert not guard.begin("10.0.3.1", "judy@d").allowed  # still reserved
    assert guard.locked("10.0.3.99", "kate@d")
    for ticket in held:
        guard.finish(ticket, success=True)
    assert guard.begin("10.0.3.1", "judy@d").allowed


def test_configure_from_settings() -> None:
    guard = LoginGuard()
    guard.configure(ServerSettings.from_store({
        "LoginFailureLimit": "3", "LoginFailureWindow": "10", "LoginLockout": "20",
        "LoginAddressFailureLimit": "40", "LoginAccountFailureLimit": "50",
        "LoginFailureMaxDelay": "2"}))
    assert (guard.limit, guard.window, guard.lockout, guard.address_limit,
            guard.account_limit, guard.max_delay) == (3, 10.0, 20.0, 40, 50, 2.0)
    guard.configure(ServerSettings.from_store({}))
    assert (guard.limit, guard.window, guard.lockout, guard.address_limit,
            guard.account_limit, guard.max_delay) == (5, 300.0, 300.0, 30, 30, 8.0)


# -- property: any interleaving -------------------------------------------------------------

IPS = ["10.5.0.1", "10.5.0.2", "10.5.0.3"]
NAMES = ["kim@d", "lee@d"]
OPS = st.lists(st.one_of(
    st.tuples(st.just("begin"), st.sampled_from(IPS), st.sampled_from(NAMES)),
    st.tuples(st.just("finish"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("tick"), st.floats(0, 50)),
), max_size=80)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, limit=st.integers(1, 4))
def test_no_interleaving_gets_more_guesses_or_locks_out_a_clean_pair(
        ops: list[tuple], limit: int) -> None:
    """Whatever the order of reservations, outcomes and time: a pair never has
    more than ``limit`` failures within one window since its last success, and
    a pair with no failure since ``max(window, lock-out)`` and nothing in flight
    is never refused, whatever other pairs, addresses or accounts did."""
    clock = Clock()
    guard = LoginGuard(limit, 60, 90, address_limit=2, account_limit=2, clock=clock,
                       sleep=clock.sleep)
    held: list[Ticket] = []
    failed: dict[tuple[str, str], list[float]] = {}
    for op in ops:
        if op[0] == "tick":
            clock.now += op[1]
        elif op[0] == "begin":
            pair = (op[1], op[2])
            times = failed.get(pair, [])
            clean = (not any(t > clock.now - 90 for t in times)
                     and not any((t.ip, t.account) == pair for t in held))
            ticket = guard.begin(*pair)
            assert ticket.allowed or not clean, (pair, times, clock.now)
            if ticket.allowed:
                held.append(ticket)
        elif held:
            ticket = held.pop(op[1] % len(held))
            pair = (ticket.ip, ticket.account)
            guard.finish(ticket, success=op[2])
            if op[2]:
                failed[pair] = []
            else:
                failed.setdefault(pair, []).append(clock.now)
                recent = [t for t in failed[pair] if t > clock.now - 60]
                assert len(recent) <= limit, (pair, failed[pair])
