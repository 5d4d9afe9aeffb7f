"""POP3's view of a mailbox: the maildrop snapshot, its lock, the deletion at QUIT.

A maildrop is INBOX as it was at login (RFC 1939 §8: message numbers stay
fixed for the session). Messages arriving later appear at the next login;
DELE only marks, and :meth:`Maildrops.delete` removes the marked ones in
one mailstore transaction when the client QUITs, so a connection that
drops deletes nothing.

Invariants: unique ids are ``UIDVALIDITY.UID`` of INBOX: stable across
sessions, never reused (UIDs only grow, and a re-created INBOX gets a new
UIDVALIDITY), and the same ids an IMAP client sees. One session per
maildrop in the process (:class:`MaildropLocks`, RFC 1939 §4). A refused
request is a :class:`MaildropError` (its text is for the client; the
protocol writes it). :class:`Maildrop` is pure; :class:`Maildrops` blocks
on the store: call it from a worker thread.

Speed (issue 12): the snapshot at login is the UIDs and sizes of the
process-wide index (:mod:`~waypost.services.mailaccess.index`, one cheap
change query when it is current) rather than every row of INBOX; message
bytes are read in batches (:meth:`Maildrops.fetch`: one query for the
rows of many messages, which also tells which were removed, then their
blob files), so a client that retrieves one message after the other costs
one worker-thread round trip per batch, not per message. A message larger
than :data:`STREAM_OVER` is not read whole: :meth:`Maildrops.read_range`
reads it piece by piece.

The bytes of small messages are kept in a process-wide :class:`BodyCache`
(``POP3MessageCache`` octets at most, least recently used out first), keyed
by what makes a stored message (blob key, prefix, omitted ranges: a blob
never changes, so an entry can never be stale). A second RETR, a TOP after a
RETR, or another account's copy of the same delivery reads nothing; whether
a message was removed is still asked of the store on every batch, so a
cached body is never served for a message that is gone. Dovecot relies on
the page cache for the same effect; here it also saves the per-message file
open and the dot-stuffing check (:attr:`Stored.plain`, computed once per
cached body).
"""

from __future__ import annotations

import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from waypost.services.container import Services
from waypost.services.mailaccess.errors import NotFound
from waypost.services.mailaccess.index import IndexCache, mailbox_key_of
from waypost.services.mailstore import Mailstore, split_account
from waypost.storage.interface import INBOX, MailMessage

STREAM_OVER = 256 * 1024
"""Messages larger than this are streamed in pieces instead of read whole."""
_DOT_LINE = re.compile(rb"\n\.")  # sre finds it in C with a memchr skip: ~3x ``in``


class MaildropError(Exception):
    """A request on the maildrop that cannot be done (no such message, deleted)."""


class MessageGone(MaildropError):
    """The message was removed (by another client) since the snapshot."""


@dataclass
class Entry:
    uid: int
    size: int
    deleted: bool = False


class Maildrop:
    """The numbered messages of one session (pure; numbers start at 1)."""

    def __init__(self, account: str, uidvalidity: int, entries: Sequence[Entry]) -> None:
        self.account = account
        self.uidvalidity = uidvalidity
        self.entries = list(entries)

    def get(self, number: int) -> Entry:
        if number > len(self.entries):
            raise MaildropError(f"No message {number}: the maildrop has {len(self.entries)}")
        entry = self.entries[number - 1]
        if entry.deleted:
            raise MaildropError(f"Message {number} is deleted")
        return entry

    def live(self) -> list[tuple[int, Entry]]:
        return [(n, e) for n, e in enumerate(self.entries, 1) if not e.deleted]

    def stat(self) -> tuple[int, int]:
        live = self.live()
        return len(live), sum(e.size for _, e in live)

    def unique_id(self, entry: Entry) -> str:
        return f"{self.uidvalidity}.{entry.uid}"

    def listing(self, number: int | None = None) -> bytes:
        """LIST lines (``number size`` CRLF) of one message or of every live one."""
        return b"".join(b"%d %d\r\n" % (n, e.size) for n, e in self._chosen(number))

    def unique_ids(self, number: int | None = None) -> bytes:
        """UIDL lines (``number id`` CRLF, the id as :meth:`unique_id`)."""
        v = self.uidvalidity
        return b"".join(b"%d %d.%d\r\n" % (n, v, e.uid) for n, e in self._chosen(number))

    def _chosen(self, number: int | None) -> list[tuple[int, Entry]]:
        return self.live() if number is None else [(number, self.get(number))]

    def delete(self, number: int) -> None:
        self.get(number).deleted = True

    def reset(self) -> None:
        for entry in self.entries:
            entry.deleted = False

    def deleted_uids(self) -> list[int]:
        return [e.uid for e in self.entries if e.deleted]


class MaildropLocks:
    """Maildrops in use by a POP3 session of this process (RFC 1939 §4: one
    session per maildrop; the second gets ``[IN-USE]``)."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    def acquire(self, account: str) -> bool:
        key = account.lower()
        if key in self._held:
            return False
        self._held.add(key)
        return True

    def release(self, account: str) -> None:
        self._held.discard(account.lower())


@dataclass(frozen=True, slots=True)
class Stored:
    """One message of a :meth:`Maildrops.fetch`: its bytes when it is small
    (``data``), else ``None`` and the ``row`` to stream it from with
    :meth:`Maildrops.read_range`. ``plain``: ``data`` is CRLF lines only,
    none starting with ``.`` (see :func:`is_plain`)."""

    uid: int
    size: int
    data: bytes | None
    row: MailMessage
    plain: bool = False


def is_plain(data: bytes) -> bool:
    """Whether a message goes on the wire as it is, in a POP3 multi-line
    response (RFC 1939 §3) or SMTP DATA (RFC 5321 §4.5.2): every line ends in
    CRLF (the last one too) and none starts with ``.``. Three passes in C."""
    if not data:
        return True
    return (
        data[-1:] == b"\n"
        and data[:1] != b"."
        and data.count(b"\n") == data.count(b"\r\n")
        and _DOT_LINE.search(data) is None
    )


CacheKey = tuple[str, bytes, tuple[tuple[int, int], ...]]


class BodyCache:
    """The bytes of recently read small messages, at most ``budget`` octets
    in all (least recently used out first), with their :func:`is_plain`
    verdict. Shared by the worker threads of every session: one lock."""

    def __init__(self, budget: int | None) -> None:
        self.held = 0
        self._entries: OrderedDict[CacheKey, tuple[bytes, bool]] = OrderedDict()
        self._lock = threading.Lock()
        self.resize(budget)

    def resize(self, budget: int | None) -> None:
        """A new budget (``None``: "unlimited"), applied at once: a changed
        ``POP3MessageCache`` needs no restart."""
        with self._lock:
            self.budget = sys.maxsize if budget is None else max(0, budget)
            self._trim()

    def _trim(self) -> None:
        while self.held > self.budget:
            _, (dropped, _plain) = self._entries.popitem(last=False)
            self.held -= len(dropped)

    @staticmethod
    def key(row: MailMessage) -> CacheKey:
        return (row.blob, row.prefix, row.omit)

    def get(self, key: CacheKey) -> tuple[bytes, bool] | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: CacheKey, data: bytes) -> tuple[bytes, bool]:
        entry = (data, is_plain(data))
        if len(data) > self.budget:
            return entry
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.held -= len(old[0])
            self._entries[key] = entry
            self.held += len(data)
            self._trim()
        return entry


class Maildrops:
    """The maildrops of a process: snapshots, message bytes, the QUIT deletion
    and the locks (shared by every POP3 port)."""

    def __init__(self, services: Services, locks: MaildropLocks | None = None) -> None:
        self._store = services.store
        self.mailstore = Mailstore(services.store)
        self.locks = locks if locks is not None else MaildropLocks()
        self.indexes = IndexCache(services.store)
        self.cache = BodyCache(services.settings().size("POP3MessageCache"))

    def version(self) -> int:
        """The store's change counter: a cheap test whether settings changed."""
        return self._store.version()

    def open(self, account: str) -> Maildrop:
        """INBOX as it is now (empty when there is no INBOX yet: the first
        delivery creates it)."""
        ref = (*split_account(account), INBOX)
        try:
            with self.indexes.current(mailbox_key_of(ref), ref) as index:
                pairs = zip(index.uids, index.sizes, strict=True)
                return Maildrop(account, index.uidvalidity, [Entry(u, n) for u, n in pairs])
        except NotFound:
            return Maildrop(account, 0, [])

    def fetch(self, account: str, uids: Sequence[int]) -> dict[int, Stored]:
        """The messages of ``uids`` that are still there (one query), the
        small ones read whole. A UID missing from the answer was removed
        (by an IMAP client, say) since the snapshot."""
        if not uids:
            return {}
        domain, name = split_account(account)
        try:
            rows = self._store.mail_fetch(domain, name, INBOX, uids)
        except NotFound:  # INBOX went away: every message with it
            return {}
        found = {}
        cache = self.cache
        for row in rows:
            if row.size > STREAM_OVER:
                found[row.uid] = Stored(row.uid, row.size, None, row)
                continue
            key = cache.key(row)
            entry = cache.get(key)
            if entry is None:
                try:
                    entry = cache.put(key, self.read_range(row, 0, row.size))
                except MessageGone:  # removed, and its body collected, since the query
                    continue
            found[row.uid] = Stored(row.uid, row.size, entry[0], row, entry[1])
        return found

    def read_range(self, row: MailMessage, start: int, size: int) -> bytes:
        """Octets ``start`` to ``start + size`` of a stored message (``prefix``
        + blob without the ``omit`` ranges, as :func:`~waypost.services.
        mailstore.assemble` builds it whole), reading only those of the blob."""
        if not row.omit and start == 0 and size >= row.size:  # a whole message: one read
            try:
                return row.prefix + self._store.blob_read(row.blob, 0, size - len(row.prefix))
            except NotFound:
                raise MessageGone("Message was removed by another session") from None
        out = [row.prefix[start : start + size]]
        got = len(out[0])
        offset = max(0, start - len(row.prefix))  # in the message without its prefix
        for begin, end in _kept(row.omit):
            if got >= size:
                break
            if end is not None and offset >= end - begin:
                offset -= end - begin
                continue
            want = size - got if end is None else min(size - got, end - begin - offset)
            try:
                piece = self._store.blob_read(row.blob, begin + offset, want)
            except NotFound:
                raise MessageGone("Message was removed by another session") from None
            out.append(piece)
            got += len(piece)
            offset = 0
            if len(piece) < want:
                break  # the end of the blob
        return b"".join(out)

    def read(self, account: str, uid: int) -> bytes:
        try:
            return self.mailstore.read_message(account, INBOX, uid)
        except NotFound:
            raise MessageGone("Message was removed by another session") from None

    def delete(self, account: str, uids: Sequence[int]) -> int:
        """Remove the messages in one transaction (the UPDATE state)."""
        if not uids:
            return 0
        try:
            return self.mailstore.delete_messages(account, INBOX, uids)
        except NotFound:  # the account or INBOX went away meanwhile: nothing to remove
            return 0


def _kept(omit: Sequence[tuple[int, int]]) -> list[tuple[int, int | None]]:
    """The blob ranges a stored message keeps, in order (the last open-ended)."""
    kept: list[tuple[int, int | None]] = []
    pos = 0
    for start, end in sorted(omit):
        if start > pos:
            kept.append((pos, start))
        pos = max(pos, end)
    kept.append((pos, None))
    return kept
