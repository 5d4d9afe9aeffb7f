"""Protection against password guessing, shared by every login service.

One guard per process (:func:`shared_guard`) serves SMTP AUTH (and so
ATRN/ODMR), POP3, IMAP, the web login, WebDAV and whatever logs in next
(SIP): failures on one protocol count for all. Passwords are never seen
here, let alone logged. The server keeps failures in the store (see
"Several processes" below), so they survive a restart; without a store
(unit tests) they are in memory.

Policy (issue 13 point 2). Three counters of failures within
``LoginFailureWindow`` seconds, each with its own job:

* **(account, client IP)** locks out. A login *reserves* a slot under one
  lock before its password is verified, and an attempt in flight counts as
  a failure until it succeeds; a login is refused unverified when the
  pair's failures reach ``LoginFailureLimit``. A login that would take the
  failures plus attempts in flight past the limit *waits* (up to
  ``BUSY_WAIT`` seconds) until an attempt in flight ends, then asks again:
  a mail client opening ten connections at once with the right password
  gets all ten in (the first success clears the pair), while N parallel
  connections with wrong passwords get no more guesses than one sequential
  client:
  at most ``LoginFailureLimit`` wrong passwords are verified per pair and
  window, whatever the concurrency. Reaching the limit locks the pair out
  for ``LoginLockout`` seconds (and, since failures are a sliding window,
  at least until they leave the window). During a lock-out the right
  password is refused too, with the reply of a wrong one, unverified
  (no oracle); the credentials cache sits inside the verification, after
  the guard, so a cached password is refused as well. A success clears
  the pair's failures.
* **client IP (all accounts)** and **account (all client IPs)** only slow:
  past ``LoginAddressFailureLimit`` (or ``LoginAccountFailureLimit``)
  failures, every login from that address (or to that account) waits
  ``LoginFailureMaxDelay`` seconds before its password is verified,
  success or not. They never refuse: a lock-out per account (as before,
  and as naive fail2ban jails on the user name do) lets anyone lock a user
  out on purpose from anywhere, and one per address locks out a whole NAT
  for one misconfigured phone. This is Dovecot's ``auth_penalty``
  reasoning (slow the source, do not deny the user) combined with a
  fail2ban-style ban that is narrowed to the pair that failed.
* Every failure's reply is delayed ``0.5 s`` doubling per failure of the
  pair or of the address (the larger), capped at ``LoginFailureMaxDelay``;
  a refusal waits as long as the failure that caused the lock-out would,
  so timing does not tell a refusal from a wrong password either.

An attempt that does not end in success (a wrong password, an error, a
client that hung up while its password was checked) counts as a failure:
the verification may have run all the same.

The account key should be the account a name routes to, when it routes to
one, so that ``alice``, ``alice%domain.dom`` and an alias share one
counter; :meth:`LoginGuard.attempt` takes it from the caller for that
reason. Every verification the guard lets through is logged at DEBUG
(``password verification for ...``, never with the password), so the
number of guesses an attacker got can be counted from the log.

Several processes (issue 15 point 3). Once :meth:`LoginGuard.configure` is
given the store (``auth.guarded_login`` does), failures and lock-outs are
rows in the store (``Store.login_*``, wall-clock times) instead of memory:
wrong passwords sent to several ``waypost serve`` processes of one store
count together, a lock-out made by one refuses in all at once, and a success
clears the pair everywhere. Attempts in flight are counted in the store too
(a reservation row, expiring after ``RESERVATION_TTL`` if its process dies),
except the fast path: a login whose pair has no failures, no reservation and
no attempt in flight in this process costs one indexed read
(``Store.login_state``) and, on success, nothing more. The price of that
fast path: when several processes start logins of one clean pair within the
same instant, each may let one through unreserved, so N processes verify at
most ``LoginFailureLimit + N - 1`` wrong passwords per pair and window in a
burst (exactly ``LoginFailureLimit`` within one process, as before). A
login that is busy only because of attempts in flight elsewhere asks again
every ``SHARED_POLL`` seconds (another process's end cannot wake it).
Failure writes are not flushed before the reply: a crash may forget the last
few failures, acceptable for a rate limit. Failures older than the window
are deleted by the next failure, so the table stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from waypost.settings import ServerSettings
from waypost.storage.interface import LoginState, Store

log = logging.getLogger("waypost.login")

MAX_TRACKED = 100_000
"""Keys tracked at most; spraying random logins cannot grow memory forever."""
BUSY_WAIT = 30.0
"""Seconds a login waits at most for the pair's attempts in flight to end."""
SHARED_POLL = 0.2
"""With a store: seconds between asking again while another process's
attempts in flight make a login busy."""
RESERVATION_TTL = 120.0
"""With a store: seconds after which an attempt in flight of a process that
died stops counting (a verification never takes this long)."""


@dataclass
class _Local:
    """With a store: this process's attempts in flight for one pair."""

    pending: int = 0
    unreserved: int = 0  # of those, taken on the fast path (no store row)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    pending: int = 0
    locked_until: float = 0.0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)  # see begin()


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one login: ``account`` on success; ``locked`` when it
    was refused because of a lock-out (the client must not be told)."""

    account: str | None
    locked: bool = False


@dataclass(frozen=True, slots=True)
class Ticket:
    """A reserved login attempt (:meth:`LoginGuard.begin`): ``allowed`` says
    whether the password may be verified at all (``why`` not, for the log),
    ``wait`` how long to wait before verifying it (the address or account
    is past its ceiling); ``busy`` when it was refused only because of the
    pair's attempts in flight, so asking again once they end may succeed."""

    ip: str
    account: str
    allowed: bool
    wait: float = 0.0
    why: str = ""
    busy: bool = False
    reservation: int | None = None  # with a store: its row (None: fast path)
    clean: bool = False  # with a store: the pair had no failures (success writes nothing)


class LoginGuard:
    """Failure counters per (account, IP), per IP and per account.

    ``limit`` 0 disables lock-outs (replies are still slowed); ``address_limit``
    and ``account_limit`` 0 disable the slowing ceilings. ``clock`` and
    ``sleep`` are injectable so tests need not wait. Thread-safe: the
    counters are changed under one lock only.
    """

    def __init__(
        self,
        limit: int = 5,
        window: float = 300.0,
        lockout: float = 300.0,
        *,
        address_limit: int = 30,
        account_limit: int = 30,
        base_delay: float = 0.5,
        max_delay: float = 8.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        wall: Callable[[], float] = time.time,
        store: Store | None = None,
    ) -> None:
        self.limit = limit
        self.window = window
        self.lockout = lockout
        self.address_limit = address_limit
        self.account_limit = account_limit
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.clock = clock
        self.sleep = sleep
        self.wall = wall
        self.store = store
        self._lock = threading.Lock()
        self._records: dict[tuple[str, ...], _Record] = {}
        self._local: dict[str, _Local] = {}
        self._ends = 0  # attempts ended in this process (see begin_shared)

    def configure(self, settings: ServerSettings, store: Store | None = None) -> None:
        """Take the ``Login*`` limits from the settings (called per login, so
        a changed setting applies at once); with ``store``, count failures
        there from now on (shared by every process of the store)."""
        if store is not None:
            self.store = store
        self.limit = settings.number("LoginFailureLimit")
        self.window = float(settings.number("LoginFailureWindow"))
        self.lockout = float(settings.number("LoginLockout"))
        self.address_limit = settings.number("LoginAddressFailureLimit")
        self.account_limit = settings.number("LoginAccountFailureLimit")
        self.max_delay = float(settings.number("LoginFailureMaxDelay"))

    # -- the pure part -------------------------------------------------------

    @staticmethod
    def _keys(ip: str, account: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """The (account, IP), IP and account keys."""
        name = account.strip().lower()
        return ("pair", name, ip), ("ip", ip), ("account", name)

    def _get(self, key: tuple[str, ...], now: float) -> _Record:
        rec = self._records.get(key)
        if rec is None:
            rec = self._records[key] = _Record()
        self._expire(rec, now)
        return rec

    def _count(self, key: tuple[str, ...], now: float) -> int:
        rec = self._records.get(key)
        if rec is None:
            return 0
        self._expire(rec, now)
        return len(rec.failures)

    def locked(self, ip: str, account: str) -> bool:
        """Would a login to ``account`` from ``ip`` be refused unverified now?
        (With a store: because of a lock-out; blocks on the store.)"""
        if self.store is not None:
            state, now = self._state(ip, account)
            return bool(self.limit) and (state.locked_until > now or state.pair >= self.limit)
        pair = self._keys(ip, account)[0]
        now = self.clock()
        with self._lock:
            rec = self._records.get(pair)
            if rec is None:
                return False
            self._expire(rec, now)
            return self._refuses(rec, now)

    def _refuses(self, rec: _Record, now: float) -> bool:
        if not self.limit:
            return False
        return rec.locked_until > now or len(rec.failures) + rec.pending >= self.limit

    def failures(self, ip: str, account: str) -> tuple[int, int, int]:
        """Failures within the window: of the pair, the IP and the account."""
        if self.store is not None:
            state, _now = self._state(ip, account)
            return state.pair, state.address, state.account
        now = self.clock()
        with self._lock:
            pair, address, name = (self._count(key, now) for key in self._keys(ip, account))
            return pair, address, name

    def begin(self, ip: str, account: str, waiter: asyncio.Future[None] | None = None
              ) -> Ticket:  # fmt: skip
        """Reserve an attempt before verifying its password: refused while the
        pair is locked out or its failures and attempts in flight reach the
        limit; slowed past the IP's or the account's ceiling. An allowed
        ticket must be given back to :meth:`finish`. A ``busy`` refusal
        registers ``waiter``, under the same lock, to be woken when an
        attempt in flight ends (so no wake-up is missed in between)."""
        pair_key, ip_key, account_key = self._keys(ip, account)
        now = self.clock()
        with self._lock:
            self._prune(now)
            pair = self._get(pair_key, now)
            if self._refuses(pair, now):
                locked = pair.locked_until > now or len(pair.failures) >= self.limit
                why = ("locked out after repeated failures" if locked
                       else f"{len(pair.failures)} failures and {pair.pending} attempts "
                            "in flight")
                if not locked and waiter is not None:
                    pair.waiters.append(waiter)
                return Ticket(ip, account, allowed=False, why=why, busy=not locked)
            pair.pending += 1
            over = (
                0 < self.address_limit <= self._count(ip_key, now)
                or 0 < self.account_limit <= self._count(account_key, now)
            )
            return Ticket(ip, account, allowed=True, wait=self.max_delay if over else 0.0)

    def finish(self, ticket: Ticket, success: bool) -> tuple[float, bool]:
        """Give back an allowed ticket: a success clears the pair's failures;
        anything else counts one failure for the pair, the IP and the
        account. Returns (seconds to delay the reply, a lock-out began)."""
        keys = self._keys(ticket.ip, ticket.account)
        now = self.clock()
        with self._lock:
            self._prune(now)
            pair = self._get(keys[0], now)
            pair.pending = max(pair.pending - 1, 0)
            waiters, pair.waiters = pair.waiters, []
            for waiter in waiters:  # they ask again (from their own loop's thread)
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)
            if success:
                pair.failures.clear()
                pair.locked_until = 0.0
                if not pair.pending:
                    del self._records[keys[0]]
                return 0.0, False
            counts = []
            for key in keys:
                rec = self._get(key, now)
                rec.failures.append(now)
                counts.append(len(rec.failures))
            locked_now = bool(self.limit) and counts[0] >= self.limit and pair.locked_until <= now
            if locked_now:
                pair.locked_until = now + self.lockout
            return self.delay(max(counts[0], counts[1])), locked_now

    def delay(self, failures: int) -> float:
        """Reply delay after ``failures`` failures: doubling, capped."""
        if failures <= 0:
            return 0.0
        return min(self.base_delay * 2 ** min(failures - 1, 30), self.max_delay)

    @property
    def locked_delay(self) -> float:
        """A refusal during a lock-out is as slow as the failure that caused it."""
        return self.delay(max(self.limit, 1))

    def _expire(self, rec: _Record, now: float) -> None:
        while rec.failures and rec.failures[0] <= now - self.window:
            rec.failures.popleft()

    def _prune(self, now: float) -> None:
        """Room for the three records of one login (called first, under the
        lock, so no record in use is dropped afterwards)."""
        room = MAX_TRACKED - 3
        if len(self._records) <= room:
            return
        for key, rec in list(self._records.items()):
            self._expire(rec, now)
            if not rec.failures and not rec.pending and rec.locked_until <= now:
                del self._records[key]
        # Still full: the oldest first (insertion order), never one in flight,
        # and lock-outs last, so spraying new names does not lift them cheaply.
        candidates = [k for k, rec in self._records.items() if not rec.pending]
        candidates.sort(key=lambda k: self._records[k].locked_until > now)  # stable
        for key in candidates:
            if len(self._records) <= room:
                break
            del self._records[key]

    # -- with a store (several processes); these block: call them in a thread --

    @staticmethod
    def _store_keys(ip: str, account: str) -> tuple[str, str, str]:
        return tuple("\0".join(key) for key in LoginGuard._keys(ip, account))  # type: ignore[return-value]

    def _state(self, ip: str, account: str) -> tuple[LoginState, float]:
        assert self.store is not None
        pair, address, name = self._store_keys(ip, account)
        now = self.wall()
        return self.store.login_state(pair, address, name, since=now - self.window, now=now), now

    def begin_shared(self, ip: str, account: str, waiter: asyncio.Future[None] | None = None
                     ) -> Ticket:  # fmt: skip
        """:meth:`begin` over the store: one read, and a reservation row
        unless the pair is clean (see the module docstring)."""
        assert self.store is not None
        pair_key = self._store_keys(ip, account)[0]
        with self._lock:
            ends = self._ends
        state, now = self._state(ip, account)
        limit = self.limit
        if limit and (state.locked_until > now or state.pair >= limit):
            return Ticket(ip, account, allowed=False, why="locked out after repeated failures")
        over = (0 < self.address_limit <= state.address
                or 0 < self.account_limit <= state.account)
        wait = self.max_delay if over else 0.0
        clean = state.pair == 0 and state.locked_until == 0
        with self._lock:
            local = self._local.setdefault(pair_key, _Local())
            # fast path only if no attempt of this process ended since the read
            # (its failure may be newer than what we read)
            if not limit or (clean and state.in_flight == 0 and local.pending == 0
                             and ends == self._ends):
                local.pending += 1
                local.unreserved += 1
                return Ticket(ip, account, allowed=True, wait=wait, clean=clean)
            extra = local.unreserved
            local.pending += 1  # held while reserving, so the fast path is not taken
        reservation = None
        try:
            reservation = self.store.login_reserve(
                pair_key, since=now - self.window, now=now, limit=limit, extra=extra,
                ttl=RESERVATION_TTL)
        finally:
            if reservation is None:
                with self._lock:
                    local.pending -= 1
                    local.waiters = [w for w in local.waiters if not w.done()]
                    if waiter is not None and local.pending:  # else only polling helps
                        local.waiters.append(waiter)
                    self._drop_local(pair_key, local)
        if reservation is None:
            return Ticket(ip, account, allowed=False, busy=True,
                          why=f"{state.pair} failures and attempts in flight")
        return Ticket(ip, account, allowed=True, wait=wait, reservation=reservation)

    def end_local(self, ticket: Ticket) -> None:
        """The in-process half of :meth:`finish_shared`, after it (so the
        failure is in the store before the attempt stops counting here):
        never blocks; wakes this process's waiters."""
        pair_key = self._store_keys(ticket.ip, ticket.account)[0]
        with self._lock:
            self._ends += 1
            local = self._local.get(pair_key)
            if local is None:
                return
            local.pending = max(local.pending - 1, 0)
            if ticket.reservation is None:
                local.unreserved = max(local.unreserved - 1, 0)
            waiters, local.waiters = local.waiters, []
            for waiter in waiters:
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)
            self._drop_local(pair_key, local)

    def _drop_local(self, key: str, local: _Local) -> None:
        if not local.pending and not local.waiters and self._local.get(key) is local:
            del self._local[key]

    def finish_shared(self, ticket: Ticket, success: bool) -> tuple[float, bool]:
        """The store half of :meth:`finish` (after :meth:`end_local`): a
        success clears the pair (no write when it was clean and unreserved),
        a failure counts for all three keys. Returns as :meth:`finish`."""
        assert self.store is not None
        pair, address, name = self._store_keys(ticket.ip, ticket.account)
        if success:
            if not ticket.clean or ticket.reservation is not None:
                self.store.login_succeeded(pair, reservation=ticket.reservation)
            return 0.0, False
        now = self.wall()
        failure = self.store.login_failed(
            pair, address, name, now=now, since=now - self.window, limit=self.limit,
            lockout=self.lockout, reservation=ticket.reservation)
        return self.delay(max(failure.pair, failure.address)), failure.locked_now

    # -- the protocol-facing part ---------------------------------------------

    async def attempt(
        self,
        ip: str,
        login: str,
        verify: Callable[[], Awaitable[str | None]],
        *,
        service: str,
    ) -> Attempt:
        """Check a login: reserve it, refuse it unverified during a lock-out,
        else run ``verify`` (which returns the account or None), count the
        outcome and sleep the failure's delay.

        ``login`` is the account key (the account when the name routes to one).
        """
        shared = self.store is not None
        ticket = await self._begin_waiting(ip, login)
        if not ticket.allowed:
            log.warning("%s login as %r from %s refused: %s", service, login, ip, ticket.why)
            await self.sleep(self.locked_delay)
            return Attempt(None, locked=True)
        account: str | None = None
        try:
            if ticket.wait:
                log.info("%s login as %r from %s slowed %.1f s: many failures of the "
                         "address or the account", service, login, ip, ticket.wait)
                await self.sleep(ticket.wait)
            log.debug("%s password verification for %r from %s", service, login, ip)
            account = await verify()
        finally:
            if shared:
                # shielded: a client hanging up mid-verification still counts
                ending = asyncio.ensure_future(asyncio.to_thread(
                    self.finish_shared, ticket, account is not None))
                ending.add_done_callback(lambda _f: self.end_local(ticket))
                delay, locked_now = await asyncio.shield(ending)
            else:
                delay, locked_now = self.finish(ticket, account is not None)
        if account is not None:
            return Attempt(account)
        log.info("%s login as %r from %s failed (reply delayed %.1f s)", service, login, ip, delay)
        if locked_now:
            log.warning(
                "%s: %r from %s locked out for %d s after %d failures within %d s",
                service,
                login,
                ip,
                self.lockout,
                self.limit,
                self.window,
            )
        await self.sleep(delay)
        return Attempt(None)


    async def _begin_waiting(self, ip: str, login: str) -> Ticket:
        """:meth:`begin`, waiting up to ``BUSY_WAIT`` seconds while the refusal
        is only for attempts in flight (each one that ends wakes us)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_WAIT
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            if self.store is not None:
                ticket = await asyncio.to_thread(self.begin_shared, ip, login, waiter)
            else:
                ticket = self.begin(ip, login, waiter)
            left = deadline - loop.time()
            if ticket.allowed or not ticket.busy or left <= 0:
                return ticket
            poll = min(left, SHARED_POLL) if self.store is not None else left
            try:
                await asyncio.wait_for(waiter, poll)
            except TimeoutError:
                if poll >= left:
                    return ticket


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


_shared: LoginGuard | None = None


def shared_guard() -> LoginGuard:
    """The process's guard, so all protocols count failures together."""
    global _shared
    if _shared is None:
        _shared = LoginGuard()
    return _shared
