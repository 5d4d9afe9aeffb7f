"""A per-mailbox cache of SORT and THREAD keys and answers (issue 12 point 7).

What SORT and THREAD compare of a message (sent date, subject, first
From/To/Cc, Message-ID, References; RFC 5256 §2.2, §3) comes from its head,
which never changes once stored, and its internal date and size, which do
not either. So the keys of a message are read and parsed once (one blob read
for the head, or the stored summary when the sort keys need nothing more)
and kept here as a :class:`~waypost.services.mailaccess.sort.SortData`
numbered by UID (``number`` and ``seq`` both the UID: mailbox order is UID
order). Built lazily, only for the messages a SORT or THREAD touches.

Answers are kept too: in UIDs, the answer of a SORT or THREAD is a function
of the set of UIDs found alone (the keys never change), so repeating a
command over the same messages costs a dictionary lookup; the session's
message numbers are put in afterwards. This is what Dovecot does with its
cache file (keys) and its thread index (answers).

Kept current with the index it hangs on (``MailboxIndex.sortkeys``): a new
UIDVALIDITY drops everything (UIDs may be reused), expunged messages are
dropped once the cache holds a quarter more messages than the mailbox, and
the cache goes with the index when the index cache evicts it. Bounded by
the server setting ``SortCacheMessages`` (default :data:`SORT_CACHE_MESSAGES`)
per mailbox, about :data:`BYTES_PER_MESSAGE` bytes each: beyond it the cache
starts again empty.

Thread-safe: its own lock guards it; the head reads happen outside it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Sequence
from typing import Any

from waypost.services.mailaccess import sort as sorting

SORT_CACHE_MESSAGES = 100_000
"""Messages per mailbox whose keys are kept: the default of the server
setting ``SortCacheMessages``. The index cache bounds how many mailboxes
are held (their caches go with their indexes)."""
BYTES_PER_MESSAGE = 950
"""Measured with tracemalloc on ``bench/imap.py``'s generated mail: the
SortData, its strings and tuples, the dictionary and set slots (so about
95 MB for a full 100,000-message cache)."""
KEEP_ANSWERS = 8
"""Answers kept per mailbox (each up to one UID per message); as many SORT
orders (one reference per message each) are kept for :func:`difference`."""
MERGE_LIMIT = 64
"""Changed messages (new plus gone) up to which a SORT order is updated in
place rather than sorted again (also up to an eighth of the mailbox)."""
COMPLETE = None
"""``needs`` for a cache entry: every key parsed."""


class SortKeys:
    """The keys and answers of one mailbox (see the module doc)."""

    __slots__ = ("answers", "complete", "entries", "limit", "lock", "orders", "uidvalidity")

    def __init__(self, uidvalidity: int, limit: int = SORT_CACHE_MESSAGES) -> None:
        self.lock = threading.Lock()
        self.uidvalidity = uidvalidity
        self.limit = limit
        self.entries: dict[int, sorting.SortData] = {}
        self.complete: set[int] = set()  # entries parsed from the head, not the summary
        self.answers: OrderedDict[Hashable, Any] = OrderedDict()
        # SORT criteria -> (the UIDs sorted, their keys in SORT order); never changed in place
        self.orders: OrderedDict[Hashable, tuple[tuple[int, ...], list[sorting.SortData]]] = (
            OrderedDict())

    def known(self, question: Hashable) -> Any:
        """A remembered answer, None if there is none."""
        with self.lock:
            if (answer := self.answers.get(question)) is not None:
                self.answers.move_to_end(question)
            return answer

    def remember(self, question: Hashable, answer: Any) -> Any:
        with self.lock:
            self.answers[question] = answer
            while len(self.answers) > KEEP_ANSWERS:
                self.answers.popitem(last=False)
        return answer

    def last_order(
        self, criteria: Hashable
    ) -> tuple[tuple[int, ...], list[sorting.SortData]] | None:
        """The last SORT order computed for ``criteria``: (the UIDs it sorted,
        their keys in order). The caller must not change the list."""
        with self.lock:
            if (kept := self.orders.get(criteria)) is not None:
                self.orders.move_to_end(criteria)
            return kept

    def keep_order(self, criteria: Hashable, found: tuple[int, ...],
                   order: list[sorting.SortData]) -> None:  # fmt: skip
        with self.lock:
            self.orders[criteria] = (found, order)
            self.orders.move_to_end(criteria)
            while len(self.orders) > KEEP_ANSWERS:
                self.orders.popitem(last=False)

    def lookup(
        self, uids: Sequence[int], summary_will_do: bool
    ) -> tuple[list[sorting.SortData], list[int]]:
        """The cached keys of ``uids`` and the UIDs whose keys must be read
        (also those read only from the summary unless ``summary_will_do``)."""
        have: list[sorting.SortData] = []
        missing: list[int] = []
        with self.lock:
            usable = self.entries if summary_will_do else self.complete
            entries = self.entries
            for uid in uids:
                if uid in usable:
                    have.append(entries[uid])
                else:
                    missing.append(uid)
        return have, missing

    def add(self, data: Sequence[tuple[sorting.SortData, bool]], live: Collection[int]) -> None:
        """Keep ``(keys, complete)`` per message; drop expunged ones (not in
        ``live``, the index's UIDs) when they weigh, everything beyond the limit."""
        with self.lock:
            if len(self.entries) + len(data) > self.limit:
                self.entries.clear()
                self.complete.clear()
            elif len(self.entries) > len(live) * 5 // 4 + 64:
                alive = set(live)
                self.entries = {u: d for u, d in self.entries.items() if u in alive}
                self.complete &= alive
            for keys, complete in data:
                if len(self.entries) >= self.limit:
                    break
                self.entries[keys.number] = keys
                if complete:
                    self.complete.add(keys.number)


def of(index: Any, limit: int = SORT_CACHE_MESSAGES) -> SortKeys:
    """The index's cache, new when there is none or the mailbox was replaced
    (another UIDVALIDITY), held to ``limit`` messages. Call under the index's lock."""
    cache = index.sortkeys
    if cache is None or cache.uidvalidity != index.uidvalidity:
        cache = index.sortkeys = SortKeys(index.uidvalidity, limit)
    cache.limit = limit
    return cache


def entry(
    uid: int, arrival: float, size: int, summary: dict[str, str] | None, head: bytes | None
) -> tuple[sorting.SortData, bool]:
    """A message's keys from its head (complete) or else its summary."""
    if head is not None:
        return sorting.from_header(uid, uid, arrival, size, head, COMPLETE), True
    return sorting.from_summary(uid, uid, arrival, size, summary or {}, COMPLETE), False


def difference(before: tuple[int, ...], after: tuple[int, ...]
               ) -> tuple[set[int], list[int]] | None:  # fmt: skip
    """(the UIDs gone, the UIDs new) from ``before`` to ``after`` (both in
    UID order), None when so much changed that sorting again is cheaper.
    New mail only (the usual change) is found with one tuple comparison."""
    count = len(before)
    if len(after) >= count and after[:count] == before:
        gone: set[int] = set()
        added = list(after[count:])
    else:
        was, now = set(before), set(after)
        gone = was - now
        added = [uid for uid in after if uid not in was]
    if len(gone) + len(added) > max(MERGE_LIMIT, len(after) // 8):
        return None
    return gone, added


def renumber(tree: list[Any], number: Callable[[int], int]) -> list[Any]:
    """A THREAD forest in UIDs with ``number`` applied to every message
    (dummies stay None), built without recursion."""
    out: list[Any] = []
    stack: list[tuple[list[Any], list[Any]]] = [(tree, out)]
    while stack:
        source, target = stack.pop()
        for uid, children in source:
            sub: list[Any] = []
            target.append((None if uid is None else number(uid), sub))
            if children:
                stack.append((children, sub))
    return out
