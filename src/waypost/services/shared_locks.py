"""POP3 maildrop locks that hold across processes (RFC 1939 §8, issue 15).

RFC 1939 §8 wants exclusive access to a maildrop for a POP3 session; with
several ``waypost serve`` processes on one store (and later several nodes on
one PostgreSQL) a lock in one process's memory is not enough. A maildrop
lock is a named lock in the store (``Store.shared_lock_*``) held by this
process (``holder``: host, pid and a random part) with a lease of
``POP3LockLease`` seconds, renewed every third of that while the session
lives (:meth:`MaildropLeases.renew`, called by the POP3 listener). So:

* a maildrop opened through one process is refused in every other (the
  protocol answers ``-ERR [IN-USE]``, RFC 2449 §8.1.1);
* QUIT or a closed connection drops the lock at once;
* a process killed with the lock held (``kill -9``, a lost node) frees it
  after at most one lease: nothing renews it any more.

Within the process a set of held names refuses a second session at once
(the store would let the same holder take its own lock again). A lease lost
to a process that stalled longer than the lease is logged; the session goes
on (RFC 1939 cannot take a maildrop back from a client).

A full disk (:class:`StorageFull`: the store cannot write the lock) must
not stop users reading their mail (issue 13: reading keeps working): the
lock is then held in this process only, with a warning, and exclusivity
across processes is lost until the disk has room again. Dropping or
renewing a lock on a full disk is skipped the same way (an unrenewed lease
simply expires).

These methods block on the store: call them in a worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from waypost.services import holders
from waypost.services.mailaccess.maildrop import MaildropLocks
from waypost.storage.interface import StorageFull, Store

log = logging.getLogger("waypost.pop3")

PREFIX = "pop3:"
"""Names of maildrop locks in the store (other lock kinds may follow)."""


def process_holder() -> str:
    """This process's name as a lock holder (``holders.py``)."""
    return holders.holder_id()


class MaildropLeases(MaildropLocks):
    """:class:`MaildropLocks` kept in the store, with a lease (see module docs)."""

    def __init__(self, store: Store, *, lease: float = 60.0, holder: str | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.store = store
        self.lease = lease
        self.holder = holder or process_holder()
        self.wall = wall
        self._mutex = threading.Lock()

    @staticmethod
    def _name(account: str) -> str:
        return PREFIX + account.lower()

    def acquire(self, account: str) -> bool:
        key = account.lower()
        with self._mutex:
            if key in self._held:
                return False
            self._held.add(key)  # claimed here first: a second session waits on nothing
        taken = False
        try:
            taken = self._take(self._name(key))
        except StorageFull:
            log.warning("POP3 maildrop lock %s held in this process only: the disk is full",
                        key)
            taken = True
        finally:
            if not taken:
                with self._mutex:
                    self._held.discard(key)
        return taken

    def _take(self, name: str) -> bool:
        """Take the lock; one held by a process of this host that no longer
        runs (a ``kill -9`` and restart) is taken over at once instead of
        after its lease (``holders.gone``)."""
        if self.store.shared_lock_take(name, self.holder, now=self.wall(), ttl=self.lease):
            return True
        holder = self.store.shared_lock_holder(name)
        if holder is None or not holders.gone(holder, frozenset({self.holder})):
            return False
        log.info("POP3 maildrop lock %s taken over from %s, which no longer runs", name, holder)
        self.store.shared_lock_drop(name, holder)
        return self.store.shared_lock_take(name, self.holder, now=self.wall(), ttl=self.lease)

    def release(self, account: str) -> None:
        key = account.lower()
        try:
            self.store.shared_lock_drop(self._name(key), self.holder)
        except StorageFull:
            pass  # its lease runs out by itself
        finally:
            with self._mutex:
                self._held.discard(key)

    def held(self) -> list[str]:
        with self._mutex:
            return sorted(self._held)

    def renew(self) -> list[str]:
        """Extend the leases of every maildrop this process holds; returns
        those lost (taken over after a stall longer than the lease)."""
        held = self.held()
        if not held:
            return []
        try:
            lost = self.store.shared_lock_renew([self._name(k) for k in held], self.holder,
                                                now=self.wall(), ttl=self.lease)
        except StorageFull:
            return []  # not renewed: tried again at the next renewal

        for name in lost:
            log.warning("POP3 maildrop lock %s lost: its lease ran out before renewal", name)
        return [name.removeprefix(PREFIX) for name in lost]
