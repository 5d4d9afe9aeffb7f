"""Digest nonces for SIP (RFC 7616 §3.3, §3.4): stateless to issue, never reused.

* **Stateless to issue**: a nonce is its issue time, 9 random octets and
  an HMAC-SHA256 of both and the realm under a secret made at process
  start, so it names its realm and cannot be forged; nonces die with the
  process (a phone simply answers the next 401). One older than the
  lifetime the caller gives (``SIPNonceLifetime``) is *stale*.
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


_LAYOUT = struct.Struct(">Q9s")  # issue time in ms, random


class NonceBook:
    """Issues and checks nonces; remembers the highest ``nc`` of each.
    Thread-safe. ``clock`` (seconds, monotonic) is injectable for tests."""

    def __init__(self, secret: bytes | None = None, *, max_tracked: int = MAX_NONCES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._secret = secret or os.urandom(32)
        self._clock = clock
        self._max = max_tracked
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}  # nonce -> (highest nc, issued)
        self._forgotten = float("-inf")  # nonces issued up to here count as stale

    def issue(self, realm: str) -> str:
        payload = _LAYOUT.pack(int(self._clock() * 1000), os.urandom(9))
        return base64.urlsafe_b64encode(payload + self._mac(payload, realm)).decode("ascii")

    def _mac(self, payload: bytes, realm: str) -> bytes:
        return hmac.new(self._secret, payload + realm.lower().encode("utf-8"),
                        "sha256").digest()[:16]

    def check(self, nonce: str, realm: str, lifetime: float) -> tuple[NonceState, float]:
        """Is ``nonce`` ours, for ``realm``, and young enough? With its issue time."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return NonceState.FORGED, 0.0
        if len(raw) != _LAYOUT.size + 16:
            return NonceState.FORGED, 0.0
        payload, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
        if not hmac.compare_digest(mac, self._mac(payload, realm)):
            return NonceState.FORGED, 0.0
        issued = _LAYOUT.unpack(payload)[0] / 1000
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


