"""The process-wide copy of mailbox message indexes (one per recently used mailbox).

Invariants: a :class:`MailboxIndex` holds, for one mailbox, its UIDs in
ascending order and, at the same positions, flags, sizes, internal dates and
MODSEQs, in compact arrays (about 40 bytes a message), together with the UIDVALIDITY,
UIDNEXT and MODSEQ it is current as of. It is only read or changed under its
own lock, and :meth:`IndexCache.current` brings it up to date with
``mail_changes_since`` before handing it out, so a reader never sees an
index older than the store was when it asked. Only the first use of a
mailbox reads the whole index from the store. The cache drops the least
recently used indexes when together they hold more than its limit.

Everything here blocks on the store: call it from a worker thread.
"""

from __future__ import annotations

import contextlib
import threading
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from waypost.services.mailaccess.errors import NotFound
from waypost.services.mailaccess.flagsets import FlagSets

SEEN = "\\Seen"
INDEX_CACHE_MESSAGES = 500_000
"""Messages whose index the process keeps in memory (about 40 bytes each)."""

MailboxKey = tuple[str, str, str]
"""A mailbox as the process compares them: owner's domain and name in lower case, box name."""


def mailbox_key_of(ref: tuple[str, str, str]) -> MailboxKey:
    """Mailboxes are compared with the owner's domain and name in lower case."""
    return (ref[0].lower(), ref[1].lower(), ref[2])


class MailboxIndex:
    """The process's copy of one mailbox's message index, kept current with
    ``mail_changes_since``: UIDs, flags, sizes, internal dates and MODSEQs in
    compact arrays (about 40 bytes a message), shared by every session. SELECT copies
    the UIDs from here, and metadata FETCH and SEARCH read it, instead of
    loading the whole index from the store each time.

    Use it only under :attr:`lock` (see :meth:`IndexCache.current`)."""

    __slots__ = (
        "dates", "flags", "flagsets", "keywords", "lock", "modseq", "modseqs", "sizes", "sortkeys",
        "uidnext",
        "uids",
        "uidvalidity", "unseen",
    )  # fmt: skip

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.uidvalidity = -1
        self.uidnext = 0
        self.modseq = 0
        self.uids: array[int] = array("I")
        self.flags: list[tuple[str, ...]] = []
        self.sizes: array[int] = array("q")
        self.dates: array[float] = array("d")
        self.unseen: int | None = None  # index of the first message without \Seen; -1: none
        self.keywords: frozenset[str] | None = None
        self.flagsets = FlagSets()  # per-flag bitmaps for SEARCH (flagsets.py)
        # CONDSTORE (RFC 7162): each message's MODSEQ, at the positions of ``uids``,
        # so FETCH MODSEQ, CHANGEDSINCE and SEARCH MODSEQ need no store read
        self.modseqs: array[int] = array("Q")
        self.sortkeys: Any = None  # SORT/THREAD keys and answers (sortkeys.py)

    def __len__(self) -> int:
        return len(self.uids)

    def position(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else None

    def load(self, store: Any, ref: tuple[str, str, str], interned: dict) -> None:
        """Read the whole index (as of the mailbox's counters read first)."""
        head = store.mail_changes_since(*ref, _FAR_FUTURE, uidnext=_FAR_FUTURE)
        rows = store.mail_index(*ref)
        uids: array[int] = array("I")
        flags: list[tuple[str, ...]] = []
        sizes: array[int] = array("q")
        dates: array[float] = array("d")
        modseqs: array[int] = array("Q")
        for row in rows:
            if row.uid >= head.uidnext:
                break  # arrived after the counters were read: comes as "new"
            modseqs.append(row.modseq)
            uids.append(row.uid)
            flags.append(interned.setdefault(row.flags, row.flags))
            sizes.append(row.size)
            dates.append(row.internal_date)
        self.uids, self.flags, self.sizes, self.dates = uids, flags, sizes, dates
        self.modseqs = modseqs
        self.uidvalidity, self.uidnext, self.modseq = (
            head.uidvalidity,
            head.uidnext,
            (head.highestmodseq),
        )
        self.unseen = self.keywords = None
        self.flagsets.reset()

    def set_flags(self, i: int, flags: tuple[str, ...]) -> None:
        """The message at position ``i`` now has ``flags`` (the bitmaps follow)."""
        self.flagsets.changed(i, self.flags[i], flags)
        self.flags[i] = flags

    def refresh(self, store: Any, ref: tuple[str, str, str], interned: dict) -> None:
        if self.uidvalidity < 0:
            self.load(store, ref, interned)
            return
        changes = store.mail_changes_since(*ref, self.modseq, uidnext=self.uidnext)
        if changes.uidvalidity != self.uidvalidity:
            self.load(store, ref, interned)
            return
        if changes.expunged:
            gone = {uid for uid in changes.expunged if self.position(uid) is not None}
            if gone:
                self.flagsets.removed(
                    sorted(p for u in gone if (p := self.position(u)) is not None)
                )
                keep = [i for i, uid in enumerate(self.uids) if uid not in gone]
                self.uids = array("I", (self.uids[i] for i in keep))
                self.flags = [self.flags[i] for i in keep]
                self.sizes = array("q", (self.sizes[i] for i in keep))
                self.dates = array("d", (self.dates[i] for i in keep))
                self.modseqs = array("Q", (self.modseqs[i] for i in keep))
                self.unseen = None
        for meta in changes.changed:
            i = self.position(meta.uid)
            if i is not None:
                self.set_flags(i, interned.setdefault(meta.flags, meta.flags))
                self.modseqs[i] = meta.modseq
                self.unseen = self.keywords = None
        for meta in changes.new:
            if meta.uid >= self.uidnext or not self.uids or meta.uid > self.uids[-1]:
                self.uids.append(meta.uid)
                self.flags.append(interned.setdefault(meta.flags, meta.flags))
                self.flagsets.changed(len(self.flags) - 1, (), meta.flags)
                self.sizes.append(meta.size)
                self.dates.append(meta.internal_date)
                self.modseqs.append(meta.modseq)
                self.unseen = self.keywords = None
        self.uidnext = max(self.uidnext, changes.uidnext)
        self.modseq = max(self.modseq, changes.highestmodseq)

    def first_unseen(self) -> int:
        """The index of the first message without \\Seen, -1 if none."""
        if self.unseen is None:
            self.unseen = next((i for i, f in enumerate(self.flags) if SEEN not in f), -1)
        return self.unseen

    def keyword_set(self) -> frozenset[str]:
        if self.keywords is None:
            self.keywords = frozenset(
                flag for flags in set(self.flags) for flag in flags if flag[:1] != "\\"
            )
        return self.keywords


_FAR_FUTURE = 2**62


class IndexCache:
    """The :class:`MailboxIndex` of recently used mailboxes, least recently
    used dropped first when they hold more than ``limit`` messages together."""

    def __init__(self, store: Any, limit: int = INDEX_CACHE_MESSAGES) -> None:
        self.store = store
        self.limit = limit
        self._lock = threading.Lock()
        self._entries: OrderedDict[MailboxKey, MailboxIndex] = OrderedDict()
        self._interned: dict[tuple[str, ...], tuple[str, ...]] = {}

    @contextlib.contextmanager
    def current(self, key: MailboxKey, ref: tuple[str, str, str]) -> Iterator[MailboxIndex]:
        """The mailbox's index, brought up to date, locked while in use."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = MailboxIndex()
            self._entries.move_to_end(key)
            if len(self._interned) > 10000:
                self._interned = {}
        with entry.lock:
            try:
                entry.refresh(self.store, ref, self._interned)
            except NotFound:
                self.drop(key)
                raise
            yield entry
        self._trim()

    def drop(self, key: MailboxKey) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def _trim(self) -> None:
        with self._lock:
            total = sum(len(e) for e in self._entries.values())
            while total > self.limit and len(self._entries) > 1:
                _, old = self._entries.popitem(last=False)
                total -= len(old)
