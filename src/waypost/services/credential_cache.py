"""Verified credentials, remembered for a while (issue 12 point 4), so a
client that logs in again and again (IMAP clients open several connections,
webmail, mobile devices polling POP3) costs one argon2 verification per
``LoginCacheTime`` seconds instead of one per login, as Dovecot's auth cache.

Invariants:

* only a keyed hash is kept: HMAC-SHA256 under a random per-process key of
  (account, the account's stored password hash, the password); never the
  password, and a dump of the cache cannot be tested against guesses
  without the key;
* the stored password hash is part of the key, and the caller reads it from
  the Directory on every login: a password change (a new hash) or a removed
  account takes effect at once, with no invalidation to forget;
* only successes are remembered; a failed login always runs argon2 (through
  the caller) and the login guard still runs before any check, so a
  lock-out takes effect at once too;
* bounded (:data:`MAX_ENTRIES`, the oldest go first) and thread-safe.

Several processes (issue 15): each process has its own cache and key, and
nothing in it needs invalidating from outside: a password changed through
another process or the CLI is a new stored hash, which every process reads
from its Directory snapshot, rebuilt when the store's change counter moves
(seen within ``VERSION_TTL``); ``test_xproc_processes.py`` checks it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_ENTRIES = 100_000


class CredentialCache:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = MAX_ENTRIES) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, float] = OrderedDict()

    def _digest(self, account: str, stored_hash: str, password: str) -> bytes:
        message = "\0".join((account.lower(), stored_hash, password)).encode("utf-8",
                                                                            "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def hit(self, account: str, stored_hash: str, password: str) -> bool:
        """Was this password verified for this account and hash recently?"""
        digest = self._digest(account, stored_hash, password)
        now = self.clock()
        with self._lock:
            expires = self._entries.get(digest)
            if expires is None:
                return False
            if expires <= now:
                del self._entries[digest]
                return False
            return True

    def remember(self, account: str, stored_hash: str, password: str, ttl: float) -> None:
        """Record a successful verification for ``ttl`` seconds (0: nothing)."""
        if ttl <= 0:
            return
        digest = self._digest(account, stored_hash, password)
        with self._lock:
            self._entries[digest] = self.clock() + ttl
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


CACHE = CredentialCache()
"""The process's cache, shared by every protocol's logins."""
