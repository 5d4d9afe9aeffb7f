"""Digest nonces for SIP (RFC 7616 §3.3, §3.4): stateless to issue, never reused.

* **Stateless to issue**: a nonce is the issuing book's id (4 random
  octets made with it), its issue time, 11 random octets and an
  HMAC-SHA256 of these and the realm under a secret made with the book, so
  it names its realm and cannot be forged. One older than the lifetime the
  caller gives (``SIPNonceLifetime``) is *stale*.
* **Several processes** (worker processes on one data directory, nodes on
  one store): each process has its own book, secret and counts, and a nonce
  is only ever accepted by the book that issued it, so "never reused" needs
  no shared state. A well-formed nonce naming another book (issued by
  another worker, or by this one before a restart) is *stale*, not forged:
  the phone gets a new challenge with ``stale=true`` and answers it without
  asking its user (RFC 7616 §3.3), so a phone whose requests move to
  another worker (a new TCP connection, a new source port) costs one more
  round trip, never a failed call. Sharing the secret instead would need
  the counts shared too (a nonce used at A could be replayed at B), one
  store write per authenticated request. A nonce that names this book but
  does not verify is *forged*.
* **Never reused** (``nc`` increases): the highest ``nc`` accepted per nonce
  is kept; a count not above it is a replay. The table is bounded
  (:data:`MAX_NONCES`): when it is full the oldest entries go and every
  nonce issued up to the newest one dropped counts as stale from then on,
  so forgetting a nonce never lets its old counts be replayed. A count is
  recorded only once the response verified (``digest.py``), under a lock,
  so two copies of one request racing each other get in once, and only a
  client that knows a password can fill the table.
* Times are ``time.monotonic`` (a clock step does not age or revive nonces).
"""

from __future__ import annotations

import base64
import hmac
import os
import struct
import threading
import time
from collections.abc import Callable
from enum import Enum

MAX_NONCES = 100_000
"""Nonces whose count is tracked at most (memory bound of :class:`NonceBook`)."""


class NonceState(Enum):
    FRESH = "fresh"
    STALE = "stale"
    FORGED = "forged"  # not ours, or for another realm


_LAYOUT = struct.Struct(">4sQ11s")  # book id, issue time in ms, random


class NonceBook:
    """Issues and checks nonces; remembers the highest ``nc`` of each.
    Thread-safe. ``clock`` (seconds, monotonic) is injectable for tests."""

    def __init__(self, secret: bytes | None = None, *, max_tracked: int = MAX_NONCES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._secret = secret or os.urandom(32)
        self.book = os.urandom(4)
        """This book's id, the head of every nonce it issues."""
        self._clock = clock
        self._max = max_tracked
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}  # nonce -> (highest nc, issued)
        self._forgotten = float("-inf")  # nonces issued up to here count as stale

    def issue(self, realm: str) -> str:
        payload = _LAYOUT.pack(self.book, int(self._clock() * 1000), os.urandom(11))
        return base64.urlsafe_b64encode(payload + self._mac(payload, realm)).decode("ascii")

    def _mac(self, payload: bytes, realm: str) -> bytes:
        return hmac.new(self._secret, payload + realm.lower().encode("utf-8"),
                        "sha256").digest()[:16]

    def check(self, nonce: str, realm: str, lifetime: float) -> tuple[NonceState, float]:
        """Is ``nonce`` ours, for ``realm``, and young enough? With its issue
        time (0 for a nonce of another book: stale, see the module notes)."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return NonceState.FORGED, 0.0
        if len(raw) != _LAYOUT.size + 16:
            return NonceState.FORGED, 0.0
        payload, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
        if payload[:4] != self.book:
            return NonceState.STALE, 0.0
        if not hmac.compare_digest(mac, self._mac(payload, realm)):
            return NonceState.FORGED, 0.0
        issued = _LAYOUT.unpack(payload)[1] / 1000
        with self._lock:
            forgotten = issued <= self._forgotten and nonce not in self._counts
        if forgotten or self._clock() - issued > lifetime:
            return NonceState.STALE, issued
        return NonceState.FRESH, issued

    def unused(self, nonce: str, nc: int) -> bool:
        """Is ``nc`` above every count accepted for ``nonce`` so far?"""
        with self._lock:
            seen = self._counts.get(nonce)
            return seen is None or nc > seen[0]

    def use(self, nonce: str, nc: int, issued: float) -> bool:
        """Record ``nc`` as accepted; False (nothing recorded) when it is not
        above the highest one already accepted (a replay, or a race lost)."""
        with self._lock:
            seen = self._counts.get(nonce)
            if seen is not None and nc <= seen[0]:
                return False
            if seen is None and issued <= self._forgotten:
                return False
            self._counts.pop(nonce, None)
            self._counts[nonce] = (nc, issued)
            while len(self._counts) > self._max:
                oldest = next(iter(self._counts))
                self._forgotten = max(self._forgotten, self._counts.pop(oldest)[1])
            return True

    def __len__(self) -> int:
        return len(self._counts)


_shared: NonceBook | None = None
_shared_lock = threading.Lock()


def shared_nonces() -> NonceBook:
    """The process's nonce book (its secret lives as long as the process)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = NonceBook()
        return _shared


