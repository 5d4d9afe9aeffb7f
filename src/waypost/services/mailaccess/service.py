"""The mail-access service: what a client does to mailboxes, as data.

See the package docstring (``__init__.py``) for the API. Invariants kept here:

* every method blocks on the store (and the blob files, the MIME parser):
  call it from a worker thread, never on the event loop;
* the rights rules (spec/mailboxes.md §2-§3, RFC 4314) are checked here before
  the store is touched, and a refusal is a service error with its RFC 5530
  code (``errors.py``); the store below checks nothing;
* what the service returns is data (rows, bytes, parsed structures, entries
  with attributes); it writes no protocol syntax;
* the index cache (``index.py``) is updated in place by this process's own
  flag changes only when nothing else happened in between, so it never
  claims a MODSEQ it has not seen.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from array import array
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import waypost.services.mailaccess.errors as errors
from waypost import mime
from waypost.services import gcpause
from waypost.services.container import Services
from waypost.services.mailaccess import flagsets, sortkeys
from waypost.services.mailaccess import sort as sorting
from waypost.services.mailaccess import thread as threads
from waypost.services.mailaccess.condstore import CondstoreAccess
from waypost.services.mailaccess.criteria import SearchKey
from waypost.services.mailaccess.index import (
    INDEX_CACHE_MESSAGES,
    IndexCache,
    MailboxIndex,
    MailboxKey,
    mailbox_key_of,
)
from waypost.services.mailaccess.listing import Listed, Lister, ListRequest
from waypost.services.mailaccess.quota import Quota, Quotas
from waypost.services.mailaccess.rights import (
    RIGHT_NAMES,
    MailboxAccess,
    Opened,
    Target,
    to_wire,
)
from waypost.services.mailaccess.search import (
    HEADER,
    META,
    LazyMessage,
    SearchContext,
    compile_search,
    uses,
)
from waypost.services.mailaccess.search import (
    cost as search_cost,
)
from waypost.services.mailstore import Mailstore, split_account, summarize
from waypost.storage.interface import (
    INBOX,
    FlagUpdates,
    MailboxChanges,
    MailboxState,
    MailMessage,
    NewAppend,
    normalize_flags,
)

log = logging.getLogger("waypost.mailaccess")

SEEN = "\\Seen"
DELETED = "\\Deleted"
RECENT = "\\Recent"
FETCH_BATCH_BYTES = 4 * 1024 * 1024
"""A fetch that reads message bytes returns batches of about this much."""
SEARCH_BATCH = 250
STATUS_FROM_STATE: dict[str, Callable[[MailboxState], int]] = {
    "MESSAGES": lambda s: s.messages,
    "RECENT": lambda s: s.recent,
    "UIDNEXT": lambda s: s.uidnext,
    "UIDVALIDITY": lambda s: s.uidvalidity,
    "UNSEEN": lambda s: s.unseen,
    "SIZE": lambda s: s.size,  # RFC 8438: octets, the RFC822.SIZE sum
    "HIGHESTMODSEQ": lambda s: max(s.highestmodseq, 1),  # RFC 7162 §3.1.8: never 0
}
"""STATUS items read from the mailbox counters (RFC 3501 §6.3.10, RFC 8438);
a new counter item is one more entry here and in ``wire.STATUS_ITEMS``."""
STATUS_FROM_DELETED = ("DELETED", "DELETED-STORAGE")
"""RFC 9051 §6.3.11 DELETED (how many \\Deleted messages) and RFC 9208 §4.2
DELETED-STORAGE (octets an EXPUNGE would free: their RFC822.SIZE sum)."""
STATUS_ITEMS = (*STATUS_FROM_STATE, *STATUS_FROM_DELETED)

Changes = MailboxChanges
"""What changed in a mailbox since a MODSEQ (``new``, ``changed``, ``expunged``)."""


def mailbox_key(opened: Opened) -> MailboxKey:
    return mailbox_key_of(opened.target.ref)


# -- results ------------------------------------------------------------------------


@dataclass(slots=True)
class Selection:
    """An opened mailbox and the view a session starts from: the counters and
    the UIDs (message number n is ``uids[n - 1]``); ``first_unseen`` is a
    message number (0: none); UIDs from ``recent_first`` on are \\Recent for
    this session (claimed, unless examined)."""

    opened: Opened
    key: MailboxKey
    uidvalidity: int
    uidnext: int
    modseq: int
    uids: array[int]
    keywords: set[str]
    first_unseen: int
    recent_first: int


@dataclass(frozen=True, slots=True)
class FetchNeeds:
    """What a fetch must load besides the metadata: the message bytes
    (``raw``; only the header with ``header_only``) and the parsed MIME
    structure (``parsed``, from the cache, parsed and cached when missing)."""

    raw: bool = False
    header_only: bool = False
    parsed: bool = False


@dataclass(slots=True)
class MessageData:
    """One message of a fetch: the stored flags (without \\Recent), and the
    bytes and structure the :class:`FetchNeeds` asked for."""

    seq: int
    uid: int
    modseq: int
    flags: tuple[str, ...]
    internal_date: float
    size: int
    raw: bytes | None = None
    parsed: mime.ParsedMessage | None = None


@dataclass(slots=True)
class FetchedBatch:
    messages: list[MessageData]
    done: int  # pairs handled (the rest needs another call)
    missing: int  # messages no longer there


@dataclass(slots=True)
class Copied:
    pairs: list[tuple[int, int]]  # (source UID, new UID)
    uidvalidity: int  # of the target
    target: MailboxKey


@dataclass(frozen=True, slots=True)
class Appended:
    uidvalidity: int
    uid: int
    target: MailboxKey


@dataclass(frozen=True, slots=True)
class AppendedMany:
    uidvalidity: int
    uids: list[int]  # in the order of the messages
    target: MailboxKey


# -- helpers ------------------------------------------------------------------------


def parsed_from_cache(text: str | None) -> mime.ParsedMessage | None:
    if not text:
        return None
    try:
        return mime.ParsedMessage.from_json(text)
    except (ValueError, KeyError, TypeError):
        return None  # another version of the cache: parse again


def parse(data: bytes) -> mime.ParsedMessage:
    try:
        return mime.parse(data)
    except Exception:  # the parser promises not to raise; never fail a fetch on it
        log.exception("MIME parse failed; serving the message as one text part")
        end = len(data)
        body = mime.header_end(data) if data else 0
        return mime.ParsedMessage(mime.Part(0, body, end, lines=data.count(b"\n")), end)


def _flag_class(flag: str) -> str:
    lower = flag.lower()
    return "s" if lower == "\\seen" else "d" if lower == "\\deleted" else "w"


def _in_ranges(ranges: Sequence[tuple[int, int]], uid: int) -> bool:
    return any(low <= uid < high for low, high in ranges)


class _Meta:
    """A message for SEARCH keys that need only metadata."""

    __slots__ = ("flags", "internal_date", "modseq", "seq", "size", "uid")

    flags: Collection[str]
    internal_date: float | datetime

    def __init__(
        self, seq: int, uid: int, flags: Sequence[str], date: float, size: int, modseq: int
    ) -> None:
        self.modseq = modseq
        self.seq = seq
        self.uid = uid
        self.flags = flags
        self.internal_date = date
        self.size = size

    def header(self, name: str) -> list[str]:  # pragma: no cover - cost() says never
        raise AssertionError("metadata search asked for a header")

    def header_text(self) -> str:  # pragma: no cover
        raise AssertionError("metadata search asked for the header")

    def body_text(self) -> str:  # pragma: no cover
        raise AssertionError("metadata search asked for the body")


# -- the service --------------------------------------------------------------------


class MailAccess(CondstoreAccess):
    """One per process (per protocol family): the rights, the index cache,
    the stored copies. Blocking: call from a worker thread."""

    def __init__(self, services: Services, *, index_limit: int = INDEX_CACHE_MESSAGES) -> None:
        self.services = services
        self._store = services.store
        self.access = MailboxAccess(services)
        self.mailstore = Mailstore(services.store)
        self.indexes = IndexCache(services.store, index_limit)
        self.quotas = Quotas(services)

    def version(self) -> int:
        """The store's change counter: a cheap test whether settings changed."""
        return self._store.version()

    # -- opening and the change index ------------------------------------------------

    def ensure_inbox(self, account: str) -> None:
        """Every account has INBOX (mailboxes.md §1), even before its first mail."""
        domain, name = split_account(account)
        try:
            self._store.mail_folder(domain, name, INBOX)
        except errors.NotFound:
            with contextlib.suppress(errors.MailboxExists):
                self._store.mail_create_mailbox(domain, name, INBOX)

    def open(self, user: str, name: str, need: str = "r") -> Opened:
        return self.access.open(user, name, need)

    def select(self, user: str, name: str, examine: bool) -> Selection:
        """Open a mailbox (needs ``r``): the rights, the counters, and the
        UIDs from the process's copy of the index. SELECT claims the
        \\Recent messages; EXAMINE only shows them."""
        opened = self.access.open(user, name, "r")
        ref = opened.target.ref
        key = mailbox_key(opened)
        state = self._store.mail_mailbox_state(*ref)
        with self.indexes.current(key, ref) as index:
            uids = array("I", index.uids)
            keywords = set(index.keyword_set())
            first_unseen = index.first_unseen() + 1
            uidvalidity, uidnext, modseq = index.uidvalidity, index.uidnext, index.modseq
        opened = replace(opened, uidvalidity=uidvalidity)  # this incarnation only
        recent_first = uidnext
        if state.recent:
            shown = uids[max(0, len(uids) - state.recent)] if uids else uidnext
            claimed = None if examine else self._claim_recent(ref, uidnext)
            recent_first = shown if claimed is None else claimed
        return Selection(
            opened, key, uidvalidity, uidnext, modseq, uids, keywords, first_unseen, recent_first
        )

    def poll(
        self, opened: Opened, modseq: int, uidnext: int, claim: bool
    ) -> tuple[Changes, int | None]:
        """What changed since ``modseq``; with new messages and ``claim``, also
        claim the \\Recent ones (the first UID that is recent for this view).
        :class:`NotFound` when the mailbox is gone."""
        ref = opened.target.ref
        changes = self._store.mail_changes_since(*ref, modseq, uidnext=uidnext)
        first = None
        if claim and changes.new:
            # Claim only what these changes report, and never past their UIDNEXT:
            # another session may have claimed newer messages meanwhile, and a
            # first UID beyond the view made the session announce "* -1 RECENT".
            claimed = self._claim_recent(ref, changes.uidnext)
            first = None if claimed is None else min(claimed, changes.uidnext)
        return changes, first

    def _claim_recent(self, ref: tuple[str, str, str], upto: int) -> int | None:
        """Claim \\Recent up to ``upto``: the first UID claimed, or None when
        the disk is full -- reading goes on, the messages only stay \\Recent
        for the next session too (storage_full.py: reading keeps working)."""
        try:
            return self._store.mail_claim_recent(*ref, upto=upto)
        except errors.StorageFull:
            return None

    @contextlib.contextmanager
    def index(self, opened: Opened) -> Iterator[MailboxIndex]:
        """The process's copy of the mailbox's index, current and locked while
        in use: read it (metadata FETCH formats straight from its arrays), do
        not change it, and do not block inside."""
        with self._current(opened) as index:
            yield index

    @contextlib.contextmanager
    def _current(self, opened: Opened) -> Iterator[MailboxIndex]:
        """The index of the selected mailbox, refused (NoSuchMailbox) when the
        name now holds another incarnation than the one selected."""
        with self.indexes.current(mailbox_key(opened), opened.target.ref) as index:
            if opened.uidvalidity is not None and index.uidvalidity != opened.uidvalidity:
                raise errors.NoSuchMailbox(
                    f"{opened.name!r} was deleted or replaced since it was selected"
                )
            yield index

    # -- fetch -------------------------------------------------------------------------

    def fetch(
        self, opened: Opened, pairs: Sequence[tuple[int, int]], needs: FetchNeeds
    ) -> FetchedBatch:
        """The messages of (message number, UID) ``pairs`` with what ``needs``
        asks for, until about :data:`FETCH_BATCH_BYTES` of message bytes are
        read (``done`` says how many pairs were handled). A message that is
        gone (or whose body is missing) counts in ``missing``."""
        store = self._store
        ref = opened.target.ref
        uids = [uid for _, uid in pairs]
        by_uid = {
            row.uid: row for row in store.mail_fetch(*ref, uids, uidvalidity=opened.uidvalidity)
        }
        cached = store.mail_structures(*ref, uids) if needs.parsed else {}
        messages: list[MessageData] = []
        parsed_now: list[tuple[int, str]] = []
        size = missing = done = 0
        for seq, uid in pairs:
            done += 1
            row = by_uid.get(uid)
            if row is None:
                missing += 1
                continue
            raw: bytes | None = None
            parsed: mime.ParsedMessage | None = None
            try:
                if needs.parsed:
                    parsed = parsed_from_cache(cached.get(uid))
                if needs.raw:
                    if needs.header_only:
                        raw = store.mail_header_bytes(row)
                    else:
                        raw = self.mailstore.message_bytes(row)
                if needs.parsed and parsed is None:
                    if raw is None or needs.header_only:
                        raw = self.mailstore.message_bytes(row)
                    parsed = parse(raw)
                    parsed_now.append((uid, parsed.to_json()))
            except errors.NotFound:
                log.error("message UID %d of %s: its body is missing", uid, "/".join(ref))
                missing += 1
                continue
            messages.append(
                MessageData(
                    seq, uid, row.modseq, row.flags, row.internal_date, row.size, raw, parsed
                )
            )
            size += 256 + (len(raw) if raw is not None else 0)
            if size >= FETCH_BATCH_BYTES:
                break
        if parsed_now:
            try:
                store.mail_structures_put(*ref, parsed_now)
            except errors.StoreError:
                log.warning("could not cache the MIME structure of %d messages", len(parsed_now))
        return FetchedBatch(messages, done, missing)

    def mark_seen(self, opened: Opened, seen: Sequence[MessageData]) -> int | None:
        """Set \\Seen on messages a fetch read (RFC 3501 §6.4.5), when the user
        holds ``s``; the MODSEQ of this change (None if nothing changed)."""
        before = {m.uid: m.modseq for m in seen}
        updates = self.set_seen(opened, seen)
        return max((m for uid, m, _ in updates if m != before.get(uid)), default=None)

    # -- search ------------------------------------------------------------------------

    def search(
        self,
        opened: Opened,
        uids: Sequence[int],
        key: SearchKey,
        recent: Callable[[int], bool] | Sequence[tuple[int, int]],
        uid_command: bool,
        *,
        saved: Collection[int] = (),
        now: float = 0.0,
    ) -> list[int]:
        """Message numbers (or with ``uid_command`` UIDs) of the view's
        ``uids`` that match ``key``; ``recent`` tells which are \\Recent for
        the view (a test, or UID ranges ``[low, high)``), ``saved`` the UIDs of
        ``$`` (RFC 5182), ``now`` the time OLDER/YOUNGER count from. Flag and
        set keys are answered from the index's bitmaps when the view is the
        index (``flagsets.py``); other metadata keys read only the index;
        header keys only the heads of the messages; BODY and TEXT the messages."""
        store = self._store
        ref = opened.target.ref
        ranges = None if callable(recent) else tuple(recent)
        is_recent = recent if callable(recent) else functools.partial(_in_ranges, ranges or ())
        context = SearchContext(len(uids), uids[-1] if uids else 0, frozenset(saved), now)
        test = compile_search(key, context)
        found: list[int] = []
        cost = search_cost(key)
        if cost == META:
            with self._current(opened) as index:
                hits = self._search_bitmaps(index, uids, key, ranges, saved, uid_command)
                if hits is not None:
                    return hits
                for seq, uid in enumerate(uids, 1):
                    i = index.position(uid)
                    if i is None:
                        continue
                    flags = index.flags[i]
                    if is_recent(uid):
                        flags = (*flags, RECENT)
                    meta = _Meta(seq, uid, flags, index.dates[i], index.sizes[i], index.modseqs[i])
                    if test(meta):
                        found.append(uid if uid_command else seq)
            return found
        if not uids:  # nothing to read, but never an answer for a replaced mailbox
            with self._current(opened):
                return found
        header_only = cost == HEADER
        for start in range(0, len(uids), SEARCH_BATCH):
            chunk = list(uids[start : start + SEARCH_BATCH])
            rows = {
                row.uid: row
                for row in store.mail_fetch(*ref, chunk, uidvalidity=opened.uidvalidity)
            }
            cached = {} if header_only else store.mail_structures(*ref, chunk)
            parsed_now: list[tuple[int, str]] = []
            for offset, uid in enumerate(chunk):
                row = rows.get(uid)
                if row is None:
                    continue
                seq = start + offset + 1
                message = self._lazy(
                    row, seq, is_recent(uid), cached.get(uid), parsed_now, header_only
                )
                try:
                    hit = test(message)
                except errors.NotFound:
                    log.error("message UID %d of %s: its body is missing", uid, "/".join(ref))
                    continue
                if hit:
                    found.append(uid if uid_command else seq)
            if parsed_now:
                with contextlib.suppress(errors.StoreError):
                    store.mail_structures_put(*ref, parsed_now)
        return found

    def sort(
        self,
        opened: Opened,
        uids: Sequence[int],
        key: SearchKey,
        criteria: Sequence[tuple[str, bool]],
        recent: Sequence[tuple[int, int]],
        uid_command: bool,
        *,
        saved: Collection[int] = (),
        now: float = 0.0,
    ) -> list[int]:
        """SORT (RFC 5256 §3): the messages ``key`` finds (as :meth:`search`),
        ordered by ``criteria`` (``sort.py``), with the mailbox's cached keys
        and answers (``sortkeys.py``)."""
        cache, found = self._sort_found(opened, uids, key, recent, saved, now)
        question = ("SORT", tuple(criteria), tuple(found))
        answer: list[int] | None = cache.known(question)
        if answer is None:
            order = self._sort_order(opened, cache, question[2], tuple(criteria))
            answer = cache.remember(question, [m.number for m in order])
        if uid_command:
            return list(answer)
        return [bisect_left(uids, uid) + 1 for uid in answer]

    def _sort_order(self, opened: Opened, cache: sortkeys.SortKeys, found: tuple[int, ...],
                    criteria: tuple[tuple[str, bool], ...]) -> list[sorting.SortData]:  # fmt: skip
        """The keys of ``found`` in SORT order: the last order for the same
        criteria with the few messages that came and went since merged in
        (``sorting.merged``), else every message sorted."""
        needs = {name for name, _ in criteria}
        last = cache.last_order(criteria)
        change = sortkeys.difference(last[0], found) if last is not None else None
        if last is not None and change is not None:
            gone, added = change
            new = self._sort_data(opened, cache, added, needs) if added else []
            order = sorting.merged(last[1], gone, new, criteria)
        else:
            data = self._sort_data(opened, cache, found, needs)
            with gcpause.paused():
                order = sorting.ordered(data, criteria)
        cache.keep_order(criteria, found, order)
        return order

    def thread(
        self,
        opened: Opened,
        uids: Sequence[int],
        key: SearchKey,
        algorithm: str,
        recent: Sequence[tuple[int, int]],
        uid_command: bool,
        *,
        saved: Collection[int] = (),
        now: float = 0.0,
    ) -> list[threads.Tree]:
        """THREAD (RFC 5256 §3) with ``ORDEREDSUBJECT`` or ``REFERENCES``
        over the messages ``key`` finds (``thread.py``), cached as SORT is."""
        cache, found = self._sort_found(opened, uids, key, recent, saved, now)
        question = ("THREAD", algorithm, tuple(found))
        forest: list[threads.Tree] | None = cache.known(question)
        if forest is None:
            data = self._sort_data(opened, cache, found, {sorting.THREAD})
            build = threads.ordered_subject if algorithm == "ORDEREDSUBJECT" else threads.references
            with gcpause.paused():  # see gcpause.py: full collections tripled its time
                forest = cache.remember(question, build(data))
        if uid_command:  # the cached forest itself: wire.thread_line only reads it
            return forest
        seqs = {uid: seq for seq, uid in enumerate(uids, 1)}
        return sortkeys.renumber(forest, seqs.__getitem__)

    def _sort_found(
        self,
        opened: Opened,
        uids: Sequence[int],
        key: SearchKey,
        recent: Sequence[tuple[int, int]],
        saved: Collection[int],
        now: float,
    ) -> tuple[sortkeys.SortKeys, list[int]]:
        """The UIDs ``key`` finds and the mailbox's key cache."""
        found = self.search(opened, uids, key, recent, True, saved=saved, now=now)
        with self._current(opened) as index:
            return sortkeys.of(index, self._sort_cache_limit), found

    @functools.cached_property
    def _sort_cache_limit(self) -> int:
        """The server setting ``SortCacheMessages``, read once per MailAccess."""
        return max(0, self.services.settings().number("SortCacheMessages"))

    def _sort_data(
        self, opened: Opened, cache: sortkeys.SortKeys, found: Sequence[int], needs: set[str]
    ) -> list[sorting.SortData]:
        """The keys of the messages ``found`` (``needs``: the sort keys, or
        THREAD), numbered by UID: from the cache, else read (and cached) from
        the stored summary, or from the head (one blob read each) when the
        summary lacks a key (TO, CC, THREAD's References) or the message has none."""
        heads = not needs <= sorting.SUMMARY_KEYS
        ref = opened.target.ref
        data: list[sorting.SortData] = []
        for start in range(0, len(found), SEARCH_BATCH):
            have, missing = cache.lookup(found[start : start + SEARCH_BATCH], not heads)
            data += have
            if not missing:
                continue
            read: list[tuple[sorting.SortData, bool]] = []
            for row in self._store.mail_fetch(*ref, missing):
                head = None
                if heads or not row.summary:
                    head = b""
                    try:
                        head = self._store.mail_header_bytes(row)
                    except errors.NotFound:
                        log.error("message UID %d of %s: its body is missing", row.uid, ref)
                read.append(sortkeys.entry(row.uid, row.internal_date, row.size, row.summary, head))
            data += [keys for keys, _ in read]
            with self._current(opened) as index:
                cache.add(read, index.uids)
        return data

    @staticmethod
    def _search_bitmaps(
        index: MailboxIndex,
        uids: Sequence[int],
        key: SearchKey,
        recent: Sequence[tuple[int, int]] | None,
        saved: Collection[int],
        uid_command: bool,
    ) -> list[int] | None:
        """The answer from the flag bitmaps, None when they cannot give it: a
        key they do not know, RECENT without the view's ranges, or a view
        that is not the index (messages it has not been told of, or gone)."""
        view = uids if isinstance(uids, array) else array("I", uids)
        if view != index.uids or (recent is None and uses(key, ("RECENT", "NEW", "OLD"))):
            return None
        sets = index.flagsets
        question = (key, tuple(recent or ()), frozenset(saved), uid_command)
        if (answer := sets.answers.get(question)) is not None:
            return list(answer)
        bits = flagsets.evaluate(
            key, sets.current(index.flags), flagsets.View(view, recent or (), saved)
        )
        if bits is None:
            return None
        answer = flagsets.members(bits, view if uid_command else range(1, len(view) + 1))
        sets.remember(question, answer)
        return list(answer)

    def _lazy(
        self,
        row: MailMessage,
        seq: int,
        recent: bool,
        cached: str | None,
        parsed_now: list[tuple[int, str]],
        header_only: bool,
    ) -> LazyMessage:
        """A message for SEARCH; with ``header_only`` (no BODY or TEXT key) only
        the head of its blob is ever read."""
        flags = (*row.flags, RECENT) if recent else row.flags
        if header_only:
            load = functools.partial(self._store.mail_header_bytes, row)
            lazy = LazyMessage(seq, row.uid, flags, row.internal_date, row.size, load)
            lazy.modseq = row.modseq
            return lazy
        holder: list[LazyMessage] = []

        def parsed() -> mime.ParsedMessage:
            found = parsed_from_cache(cached)
            if found is None:
                found = parse(holder[0].raw)
                parsed_now.append((row.uid, found.to_json()))
            return found

        message = LazyMessage(
            seq,
            row.uid,
            flags,
            row.internal_date,
            row.size,
            load=functools.partial(self.mailstore.message_bytes, row),
            parsed=parsed,
        )
        holder.append(message)
        message.modseq = row.modseq
        return message

    # -- flags -------------------------------------------------------------------------

    def check_flags(self, opened: Opened, flags: Sequence[str], mode: str) -> tuple[str, ...]:
        """The flags of a STORE as stored (normalised), after the rights check:
        ``\\Seen`` needs ``s``, ``\\Deleted`` ``d``, the others ``w``; a
        replacing STORE needs at least one of them (:class:`NoPermission`)."""
        wanted = normalize_flags(flags)
        missing = opened.flag_right_missing(wanted)
        if missing is not None:
            raise errors.NoPermission(
                missing,
                f"No {RIGHT_NAMES[missing]} right ({to_wire(missing)}) on "
                f"{opened.name!r}: cannot change these flags",
            )
        if mode in ("set", "replace") and not any(r in opened.rights for r in "swd"):
            raise errors.NoPermission("w", f"No right to change flags on {opened.name!r}")
        return wanted

    def store_flags(
        self,
        opened: Opened,
        uids: Sequence[int],
        flags: Sequence[str],
        mode: str,
        unchanged_since: int | None = None,
    ) -> tuple[FlagUpdates, int | None]:
        """STORE (``mode``: ``add``, ``remove``, ``set``/``replace``), after
        :meth:`check_flags`: ``(uid, modseq, flags now)`` of each message
        (``.modified``: the UIDs that failed ``unchanged_since``, RFC 7162
        §3.1.3, left as they were), and the MODSEQ of this change (None if
        nothing changed). One store transaction, whatever the number of
        messages. A replacing STORE by a user who may change only some kinds
        of flags keeps the others, message by message.

        The process's copy of the index tells which messages really changed (a
        message left as it was keeps an older MODSEQ, possibly another
        session's), and is updated in place."""
        store = self._store
        ref = opened.target.ref
        rights = opened.rights
        mode = "replace" if mode == "set" else mode
        pinned = opened.uidvalidity
        with self._current(opened) as index:
            if mode != "replace" or all(r in rights for r in "swd"):
                updates = store.mail_set_flags(
                    *ref, uids, flags, mode, unchanged_since=unchanged_since, uidvalidity=pinned
                )
            else:
                groups: dict[tuple[str, ...], list[int]] = {}
                for uid in uids:
                    i = index.position(uid)
                    if i is not None:
                        kept = [f for f in index.flags[i] if _flag_class(f) not in rights]
                        groups.setdefault(tuple(normalize_flags([*flags, *kept])), []).append(uid)
                updates = FlagUpdates()
                with store.transaction():  # one transaction for the whole STORE
                    for new, group in groups.items():
                        done = store.mail_set_flags(
                            *ref, group, new, "replace", unchanged_since=unchanged_since,
                            uidvalidity=pinned,
                        )  # fmt: skip
                        updates += done
                        updates.modified += done.modified
                updates.sort()
                updates.modified.sort()
            changed: list[tuple[int | None, int, tuple[str, ...]]] = []
            for uid, modseq, now in updates:
                i = index.position(uid)
                if i is None or index.flags[i] != now:
                    changed.append((i, modseq, now))
            own = max((modseq for _, modseq, _ in changed), default=None)
            if own is not None and own == index.modseq + 1:
                positions = [i for i, _, _ in changed]
                if all(i is not None for i in positions):
                    for i, modseq, now in changed:
                        assert i is not None
                        index.set_flags(i, now)
                        index.modseqs[i] = modseq
                    index.modseq = own
                    index.unseen = index.keywords = None
        return updates, own

    def _strip_flags(self, opened: Opened, uids: Sequence[int]) -> None:
        """After COPY/MOVE into a mailbox where the user may not set every flag:
        drop those the copies must not carry (APPEND never sets them). Only in
        the incarnation that received them (``opened.uidvalidity``): the
        target replaced meanwhile, the new one's messages are not touched."""
        rights = opened.rights
        if all(r in rights for r in "swd") or not uids:
            return
        ref, pin = opened.target.ref, opened.uidvalidity
        groups: dict[tuple[str, ...], list[int]] = {}
        with contextlib.suppress(errors.NoSuchMailbox):
            for row in self._store.mail_fetch(*ref, uids, uidvalidity=pin):
                allowed = tuple(f for f in row.flags if _flag_class(f) in rights)
                if allowed != row.flags:
                    groups.setdefault(allowed, []).append(row.uid)
            for flags, group in groups.items():
                self._store.mail_set_flags(*ref, group, flags, "replace", uidvalidity=pin)

    # -- expunge, copy, move, append -------------------------------------------------------

    def expunge(self, opened: Opened, uids: Sequence[int], *, quiet: bool = False) -> list[int]:
        """Remove the messages among ``uids`` that carry \\Deleted; the UIDs
        removed. Needs ``d`` (:class:`NoPermission`; with ``quiet``, as CLOSE
        does, nothing happens without it, nor when the selected mailbox was
        deleted or replaced meanwhile: CLOSE still leaves it, RFC 3501 §6.4.2)."""
        if not opened.can("d"):
            if quiet:
                return []
            raise errors.NoPermission(
                "d", f"No Delete right (te) on {opened.name!r}: cannot expunge"
            )
        if not uids:
            return []
        try:
            gone = self._store.mail_expunge(
                *opened.target.ref, list(uids), uidvalidity=opened.uidvalidity
            )
        except errors.NoSuchMailbox:
            if quiet:
                return []
            raise
        return list(gone)

    def copy(
        self, user: str, source: Opened, uids: Sequence[int], name: str, *, move: bool = False
    ) -> Copied:
        """COPY or MOVE (RFC 3501 §6.4.7, RFC 6851): needs ``i`` on the target
        (:class:`TryCreate` if it does not exist, also when it is deleted
        while the command runs), MOVE also ``d`` on the
        source; the copies lose the flags the user may not set there."""
        if move and not source.can("d"):
            raise errors.NoPermission(
                "d",
                f"No Delete right (te) on {source.name!r}: cannot move messages out of it",
            )
        dest = self._open_target(user, name)
        limit = self._check_copy_quota(source, uids, dest, move=move)
        op = self._store.mail_move if move else self._store.mail_copy
        if not uids:  # nothing to copy: no COPYUID will name the target
            uidvalidity = self._store.mail_mailbox_state(*dest.target.ref).uidvalidity
            return Copied([], uidvalidity, mailbox_key(dest))
        try:
            copied = op(
                *source.target.ref, uids, *dest.target.ref, max_usage=limit,
                uidvalidity=source.uidvalidity,
            )  # fmt: skip
        except errors.NoSuchMailbox:
            self._open_target(user, name)  # the target was deleted meanwhile: TRYCREATE
            if self._is_current(source):  # it was, and is back already (RENAME): the same
                raise errors.TryCreate(f"no mailbox {name!r}; create it first") from None
            raise  # the source is gone (the selected mailbox was replaced)
        # the target's UIDVALIDITY as the copy's transaction saw it: the name
        # may hold another incarnation by now (RFC 4315 §3, see CopiedUids)
        self._strip_flags(replace(dest, uidvalidity=copied.uidvalidity), [n for _, n in copied])
        return Copied(list(copied), copied.uidvalidity, mailbox_key(dest))

    def append(
        self,
        user: str,
        name: str,
        data: bytes,
        flags: Sequence[str] = (),
        date: datetime | None = None,
    ) -> Appended:
        """APPEND (RFC 3501 §6.3.11, RFC 4315 APPENDUID), durable on return:
        needs ``i`` (:class:`TryCreate` if the mailbox does not exist); the
        flags the user may not set are dropped."""
        done = self.append_many(user, name, [(data, flags, date)])
        return Appended(done.uidvalidity, done.uids[0], done.target)

    def append_many(
        self, user: str, name: str, messages: Sequence[tuple[bytes, Sequence[str], datetime | None]]
    ) -> AppendedMany:
        """MULTIAPPEND (RFC 3502 §3): ``(data, flags, date)`` messages into one
        mailbox in one transaction, all or none, durable on return; the same
        rights rule as :meth:`append` for each (``i``; flags the user may not
        set are dropped)."""
        opened = self._open_target(user, name)
        limit = self.quotas.check(*_owner(opened), sum(len(m[0]) for m in messages))
        items = [
            NewAppend(
                data,
                opened.permitted_flags(normalize_flags(flags)),
                date.timestamp() if date is not None else None,
                summarize(data),
            )
            for data, flags, date in messages
        ]
        try:
            uidvalidity, uids = self.mailstore.append_many(
                *opened.target.ref, items, max_usage=limit
            )
        except errors.TryCreate:
            raise
        except errors.NoSuchMailbox:  # deleted since the rights check: TRYCREATE all the same
            raise errors.TryCreate(f"no mailbox {name!r}; create it first") from None
        return AppendedMany(uidvalidity, uids, mailbox_key(opened))

    def _check_copy_quota(
        self, source: Opened, uids: Sequence[int], dest: Opened, *, move: bool
    ) -> int | None:
        """COPY, and MOVE into another account, must fit the target's quota
        (RFC 9208 §4.3); the limit for the store, None when there is none to
        hold to (a MOVE inside one account changes no usage)."""
        owner = _owner(dest)
        if not uids or (move and _owner(source) == owner) or self.quotas.limit(*owner) is None:
            return None
        wanted = set(uids)
        adding = sum(m.size for m in self._store.mail_index(*source.target.ref) if m.uid in wanted)
        return self.quotas.check(*owner, adding)

    def _is_current(self, opened: Opened) -> bool:
        """The incarnation ``opened`` pinned is still at its name."""
        try:
            state = self._store.mail_mailbox_state(*opened.target.ref)
        except errors.NotFound:
            return False
        return opened.uidvalidity is None or state.uidvalidity == opened.uidvalidity

    def _open_target(self, user: str, name: str) -> Opened:
        try:
            return self.access.open(user, name, "i")
        except errors.TryCreate:
            raise
        except errors.NoSuchMailbox as exc:
            raise errors.TryCreate(f"{exc}; create it first") from None

    # -- status and list ----------------------------------------------------------------

    def status(self, user: str, name: str, items: Sequence[str]) -> list[tuple[str, int | None]]:
        """STATUS (RFC 3501 §6.3.10; ``SIZE``, ``DELETED`` of RFC 8438/9051):
        ``(item, value)`` in the order asked; needs ``r``."""
        return self._status_of(self.access.open(user, name, "r"), items)

    def _status_of(self, opened: Opened, items: Sequence[str]) -> list[tuple[str, int | None]]:
        """Counter items come from :data:`STATUS_FROM_STATE` (one O(1) read);
        the ``\\Deleted`` ones from one pass over the index."""
        ref = opened.target.ref
        state = self._store.mail_mailbox_state(*ref)
        values: dict[str, int | None] = {
            item: get(state) for item, get in STATUS_FROM_STATE.items() if item in items
        }
        values["APPENDLIMIT"] = None  # RFC 7889 §3.2: no limit of its own (CAPABILITY has it)
        if any(item in STATUS_FROM_DELETED for item in items):
            deleted = [m.size for m in self._store.mail_index(*ref) if DELETED in m.flags]
            values["DELETED"] = len(deleted)
            values["DELETED-STORAGE"] = sum(deleted)
        return [(item, values[item]) for item in items]

    # -- quota (RFC 9208) ----------------------------------------------------------------

    def quota_root(self, user: str, name: str) -> tuple[list[str], list[Quota]]:
        """GETQUOTAROOT: the roots of a mailbox the user may look up, and the
        quotas among them he may read (his own; any, for an administrator
        of the owner's domain). No root when the owner is unlimited."""
        opened = self.access.open(user, name, "l")
        root = self._root_name(user, opened.target)
        quota = self.quotas.quota(*_owner(opened), root)
        if quota is None:
            return [], []
        readable = self.access.privileged(user, opened.target)
        return [root], [quota] if readable else []

    def get_quota(self, user: str, root: str) -> Quota:
        """GETQUOTA: ``""`` is the user's own root, ``~account@domain`` another's
        (for the owner's administrators only); else :class:`NoSuchMailbox`."""
        if root and not root.startswith("~"):
            raise errors.NoSuchMailbox(f"no quota root {root!r}")
        if root:
            target = self.access.resolve(user, root)
            if target.mailbox_name or not self.access.privileged(user, target):
                raise errors.NoPermission("a", f"no access to the quota root {root!r}")
            domain, account = target.owner_domain, target.owner_account
        else:
            domain, account = split_account(user)
        quota = self.quotas.quota(domain, account, root)
        if quota is None:
            raise errors.NoSuchMailbox(f"no quota root {root!r}: the account is unlimited")
        return quota

    def _root_name(self, user: str, target: Target) -> str:
        domain, account = split_account(user)
        if (domain.lower(), account.lower()) == (
            target.owner_domain.lower(),
            target.owner_account.lower(),
        ):
            return ""
        return f"~{target.owner_account}@{target.owner_domain}"

    def list_mailboxes(
        self,
        user: str,
        reference: str,
        patterns: Sequence[str],
        *,
        lsub: bool = False,
        select: Collection[str] = (),
        returns: Collection[str] = (),
        status: Sequence[str] = (),
        extended: bool = False,
        rev2: bool = False,
    ) -> list[Listed]:
        """LIST / LSUB (RFC 3501 §6.3.8-9), LIST-EXTENDED (RFC 5258), LIST-STATUS
        (RFC 5819): ``listing.py`` decides the entries (:class:`ListRequest`)."""
        request = ListRequest(
            reference, tuple(patterns), lsub, frozenset(select), frozenset(returns),
            tuple(status), extended, rev2,
        )  # fmt: skip
        return Lister(self.access, self._status_of).answer(user, request)

    # -- the mailbox tree, subscriptions, ACL ---------------------------------------------

    def create(self, user: str, name: str, *, special_use: str | None = None) -> MailboxKey:
        return mailbox_key_of(self.access.create(user, name, special_use=special_use).ref)

    def delete(self, user: str, name: str) -> MailboxKey:
        """DELETE; the key of the mailbox that is gone (sessions on it close)."""
        target = self.access.resolve(user, name)
        self.access.delete(user, name)
        return mailbox_key_of(target.ref)

    def rename(self, user: str, old: str, new: str) -> MailboxKey:
        """RENAME; the key of the mailbox that moved away (sessions on it close)."""
        source = self.access.resolve(user, old)
        self.access.rename(user, old, new)
        return mailbox_key_of(source.ref)

    def subscribe(self, user: str, name: str) -> None:
        self.access.subscribe(user, name)

    def unsubscribe(self, user: str, name: str) -> bool:
        return self.access.unsubscribe(user, name)

    def subscriptions(self, user: str) -> list[str]:
        return self.access.subscriptions(user)

    def get_acl(self, user: str, name: str) -> list[tuple[str, str]]:
        return self.access.get_acl(user, name)

    def set_acl(self, user: str, name: str, identifier: str, rights: str) -> str:
        return self.access.set_acl(user, name, identifier, rights)

    def delete_acl(self, user: str, name: str, identifier: str) -> bool:
        return self.access.delete_acl(user, name, identifier)

    def list_rights(self, user: str, name: str, identifier: str) -> tuple[str, tuple[str, ...]]:
        return self.access.list_rights(user, name, identifier)

    def my_rights(self, user: str, name: str) -> str:
        return self.access.my_rights(user, name)

    # -- mailbox aliases (mailboxes.md §5) ------------------------------------------------

    def aliases(self, user: str) -> dict[str, str]:
        """The user's mailbox aliases: alias name -> target name."""
        return self.access.aliases(user)

    def set_alias(self, user: str, alias: str, target: str) -> None:
        """Define or change an alias; refused (:class:`MailboxError`) when it
        loops, is not a valid name or is the name of an existing mailbox."""
        self.access.set_alias(user, alias, target)

    def remove_alias(self, user: str, alias: str) -> None:
        """Remove an alias; :class:`NoSuchMailbox` when there is none."""
        self.access.remove_alias(user, alias)


def _owner(opened: Opened) -> tuple[str, str]:
    """(domain, account) of the mailbox's owner: whose quota it counts against."""
    return opened.target.owner_domain, opened.target.owner_account
