"""Protection against password guessing, shared by every login service.

Failures are counted per client IP and per login within a sliding window
(``LoginFailureWindow`` seconds). Each failure slows its reply, more with
every failure (``base_delay`` doubling up to ``max_delay``), so one
connection cannot guess fast. After ``LoginFailureLimit`` failures the
login *and* the IP are locked out for ``LoginLockout`` seconds, so many
parallel connections cannot guess either: during a lock-out the password is
not even checked, and a correct one gets the same refusal as a wrong one
(so the lock-out does not become an oracle).

The login key should be the account a name routes to, when it routes to
one, so that ``alice``, ``alice%domain.dom`` and an alias share one counter;
:meth:`LoginGuard.attempt` takes it from the caller for that reason.

One guard per process (:func:`shared_guard`) serves POP3, SMTP AUTH and
IMAP alike: failures on one protocol count for all. State is in memory; a
restart forgets it, which is acceptable for a rate limit. Passwords are
never seen here, let alone logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from waypost.settings import ServerSettings

log = logging.getLogger("waypost.login")

MAX_TRACKED = 100_000
"""Keys tracked at most; spraying random logins cannot grow memory forever."""


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one login: ``account`` on success; ``locked`` when it
    was refused because of a lock-out (the client must not be told)."""

    account: str | None
    locked: bool = False


class LoginGuard:
    """Failure counters and lock-outs per IP and per login.

    ``limit`` 0 disables lock-outs (replies are still slowed). ``clock`` and
    ``sleep`` are injectable so tests need not wait.
    """

    def __init__(
        self,
        limit: int = 5,
        window: float = 300.0,
        lockout: float = 300.0,
        *,
        base_delay: float = 0.5,
        max_delay: float = 8.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self.window = window
        self.lockout = lockout
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.clock = clock
        self.sleep = sleep
        self._records: dict[str, _Record] = {}

    def configure(self, settings: ServerSettings) -> None:
        """Take ``LoginFailureLimit``/``Window``/``LoginLockout`` from the settings
        (called per login, so a changed setting applies at once)."""
        self.limit = settings.number("LoginFailureLimit")
        self.window = float(settings.number("LoginFailureWindow"))
        self.lockout = float(settings.number("LoginLockout"))

    # -- the pure part -------------------------------------------------------

    @staticmethod
    def _keys(ip: str, login: str) -> tuple[str, str]:
        return f"ip:{ip}", f"login:{login.strip().lower()}"

    def locked(self, ip: str, login: str) -> bool:
        """Is this IP or this login locked out now?"""
        now = self.clock()
        return any(
            (rec := self._records.get(key)) is not None and rec.locked_until > now
            for key in self._keys(ip, login)
        )

    def failure(self, ip: str, login: str) -> tuple[float, bool]:
        """Count one failure: (seconds to delay the reply, a lock-out began)."""
        now = self.clock()
        worst, locked_now = 0, False
        for key in self._keys(ip, login):
            rec = self._records.get(key)
            if rec is None:
                self._prune(now)
                rec = self._records[key] = _Record()
            self._expire(rec, now)
            rec.failures.append(now)
            worst = max(worst, len(rec.failures))
            if self.limit and len(rec.failures) >= self.limit and rec.locked_until <= now:
                rec.locked_until = now + self.lockout
                rec.failures.clear()  # a fresh count once the lock-out is over
                locked_now = True
        return self.delay(worst), locked_now

    def success(self, ip: str, login: str) -> None:
        """A correct login clears that login's failures. The IP's stay until
        they expire: one known password must not reset guessing at others."""
        self._records.pop(self._keys(ip, login)[1], None)

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
        if len(self._records) < MAX_TRACKED:
            return
        for key, rec in list(self._records.items()):
            self._expire(rec, now)
            if not rec.failures and rec.locked_until <= now:
                del self._records[key]
        while len(self._records) >= MAX_TRACKED:  # oldest first (insertion order)
            del self._records[next(iter(self._records))]

    # -- the protocol-facing part ---------------------------------------------

    async def attempt(
        self,
        ip: str,
        login: str,
        verify: Callable[[], Awaitable[str | None]],
        *,
        service: str,
    ) -> Attempt:
        """Check a login: refuse during a lock-out, else run ``verify`` (which
        returns the account or None), count a failure and sleep its delay.

        ``login`` is the counter key (the account when the name routes to one).
        """
        if self.locked(ip, login):
            log.warning(
                "%s login as %r from %s refused: locked out after repeated failures",
                service,
                login,
                ip,
            )
            await self.sleep(self.locked_delay)
            return Attempt(None, locked=True)
        account = await verify()
        if account is not None:
            self.success(ip, login)
            return Attempt(account)
        delay, locked_now = self.failure(ip, login)
        log.info("%s login as %r from %s failed (reply delayed %.1f s)", service, login, ip, delay)
        if locked_now:
            log.warning(
                "%s: %r and %s locked out for %d s after %d failures within %d s",
                service,
                login,
                ip,
                self.lockout,
                self.limit,
                self.window,
            )
        await self.sleep(delay)
        return Attempt(None)


_shared: LoginGuard | None = None


def shared_guard() -> LoginGuard:
    """The process's guard, so all protocols count failures together."""
    global _shared
    if _shared is None:
        _shared = LoginGuard()
    return _shared
