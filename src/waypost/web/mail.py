"""The datasets of the webmail pages (issue 10 point 6): the message list and
the message view, built from :class:`MailAccess` results only.

Invariants:

* every function blocks on the store: call it in the web module's worker
  pool, never on the event loop;
* every value taken from a message or a mailbox name that goes into a
  dataset is HTML-escaped here (web.md §4.3 pitfall: skins print plain
  ``%%x%%`` raw), with a URL-encoded twin (``...URL``) where a link needs it;
  the only markup from a message is the HTML part after
  :func:`waypost.web.sanitize.sanitize`;
* rights are the service's: listing or viewing needs ``r`` (a mailbox the
  user may not read raises the service's :class:`MailboxError`, never shows
  data); viewing sets ``\\Seen`` only with ``s`` (``MailAccess.mark_seen``);
* part numbers are IMAP section numbers (``1``, ``1.2``), so a download URL
  names the same part an IMAP ``BODY[1.2]`` fetch does.

Choices [waypost]: a page lists the account's ``MessagesPerPage``
preference (:data:`PAGE_SIZE` by default) unless ``Limit`` says otherwise (at
most :data:`MAX_PAGE`); the default order is the internal (arrival) date,
newest first. A page costs about the same in a mailbox of 1,000 or 10,000
messages: the mailbox is opened, not selected (the web never claims
\\Recent), the UIDs in date or size order come from the index arrays, sorted
once per change of the mailbox's set of messages (:class:`ListCache`), and
only the page's messages are fetched. Sorting by sender or subject reads the
cached MIME parse of every message once, then keeps the sort texts.
``Search`` matches the subject or the sender (``Scope=headers``, IMAP ``OR
SUBJECT x FROM x``: headers only) or the whole message (``Scope=text``, IMAP
``TEXT``).
"""

from __future__ import annotations

import contextlib
import html
import re
import threading
import urllib.parse
import weakref
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

from waypost import mime
from waypost.services.mailaccess.criteria import SearchKey
from waypost.services.mailaccess.errors import (
    MailboxError,
    MailboxExists,
    NotFound,
    TryCreate,
)
from waypost.services.mailaccess.index import MailboxKey, mailbox_key_of
from waypost.services.mailaccess.rights import Opened
from waypost.services.mailaccess.service import (
    FetchNeeds,
    MailAccess,
    MessageData,
    mailbox_key,
)
from waypost.web.sanitize import sanitize

PAGE_SIZE = 50
MAX_PAGE = 500
SORTS = ("date", "from", "subject", "size")
SCOPES = ("headers", "text")
MAX_SEARCH = 200
MAX_UIDS = 1000
"""UIDs one action may name (a page shows at most :data:`MAX_PAGE`)."""
ORDER_CACHE_MAILBOXES = 32
TEXT_CACHE_MAILBOXES = 8
TRASH = "Trash"
FLAG_ACTIONS: dict[str, tuple[str, str]] = {
    "flag": ("\\Flagged", "add"), "unflag": ("\\Flagged", "remove"),
    "read": ("\\Seen", "add"), "unread": ("\\Seen", "remove"),
}
ACTIONS = ("move", "copy", "delete", *FLAG_ACTIONS)
DONE_CODES = frozenset({"moved", "copied", "deleted", "expunged", "flagged", "unflagged",
                        "read", "unread"})
ERROR_CODES = frozenset({"noneSelected", "noTarget"})
_PART = re.compile(r"[1-9][0-9]{0,4}(\.[1-9][0-9]{0,4}){0,20}")


class BadRequest(ValueError):
    """A parameter the pages cannot use (answered with 400)."""


@dataclass(frozen=True, slots=True)
class ListQuery:
    mailbox: str
    skip: int = 0
    limit: int = PAGE_SIZE
    sort: str = "date"
    descending: bool = True
    search: str = ""
    scope: str = "headers"


@dataclass(frozen=True, slots=True)
class Download:
    """A part to send as an attachment."""

    content_type: str
    filename: str
    data: bytes


def quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def _int(value: str | None, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or len(value) > 9:
        raise BadRequest(f"not a number: {value[:20]!r}")
    return max(low, min(high, int(value)))


def list_query(params: Any, page_size: int = PAGE_SIZE) -> ListQuery:
    """The message list's query parameters (also carried by the message view
    and the action forms), checked (:class:`BadRequest`); ``page_size`` when
    ``Limit`` is not given."""
    mailbox = params.get("Mailbox") or "INBOX"
    sort = (params.get("Sort") or "date").lower()
    order = (params.get("Order") or "desc").lower()
    search = params.get("Search") or ""
    scope = (params.get("Scope") or "headers").lower()
    if (sort not in SORTS or order not in ("asc", "desc") or scope not in SCOPES
            or not isinstance(search, str) or len(search) > MAX_SEARCH
            or any(ord(c) < 32 or c == "\x7f" for c in search)):
        raise BadRequest("bad Sort, Order, Scope or Search")
    return ListQuery(check_mailbox(mailbox), _int(params.get("Skip"), 0, 0, 10**9),
                     _int(params.get("Limit"), page_size, 1, MAX_PAGE), sort,
                     order == "desc", search.strip(), scope)


def check_mailbox(name: str) -> str:
    """Refuse what no mailbox name is (control characters, over-long names);
    the service checks the rest (``names.py``, traversal included)."""
    if not name or len(name) > 1024 or any(ord(c) < 32 or c == "\x7f" for c in name):
        raise BadRequest("bad mailbox name")
    return name


def check_uid(value: str | None) -> int:
    if not value or not value.isdigit() or len(value) > 10 or int(value) == 0:
        raise BadRequest("bad UID")
    return int(value)


def check_part(value: str) -> tuple[int, ...]:
    if not _PART.fullmatch(value):
        raise BadRequest("bad part number")
    return tuple(int(n) for n in value.split("."))


# -- presentation helpers -----------------------------------------------------------


def address_text(addresses: Sequence[mime.Address] | None) -> str:
    """Addresses as a person reads them (``Name <a@b>``), not escaped."""
    out = []
    for name, _adl, mailbox, host in addresses or ():
        if mailbox is None or host is None:
            continue  # group markers
        addr = f"{mailbox}@{host}" if host != mime.MISSING_DOMAIN else mailbox
        label = mime.decode_header(name) if name else ""
        out.append(f"{label} <{addr}>" if label else addr)
    return ", ".join(out)


def date_text(value: str | None, fallback: float) -> str:
    """``YYYY-MM-DD HH:MM`` (UTC) of the Date header, else of the arrival.

    A Date header anyone can write must not fail the page: a year past
    9999 or an offset that moves the time past 9999 or before year 1 raises
    OverflowError (found by tests/fuzz/test_fuzz_misc.py)."""
    when: datetime | None = None
    if value:
        try:
            when = parsedate_to_datetime(mime.decode_header(value))
            if when.tzinfo is not None:
                when = when.astimezone(UTC)
        except (TypeError, ValueError, IndexError, OverflowError):
            when = None
    if when is None:
        when = datetime.fromtimestamp(fallback, UTC)
    return when.strftime("%Y-%m-%d %H:%M")


def size_text(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def _envelope(message: MessageData) -> mime.Envelope:
    return message.parsed.envelope if message.parsed is not None else mime.Envelope()


def _fetch_all(mail: MailAccess, opened: Opened, uids: Sequence[int], needs: FetchNeeds
               ) -> list[MessageData]:
    pairs = [(0, uid) for uid in uids]
    out: list[MessageData] = []
    while pairs:
        batch = mail.fetch(opened, pairs, needs)
        out += batch.messages
        pairs = pairs[batch.done:]
        if batch.done == 0:
            break
    return out


# -- the order of a mailbox's messages ----------------------------------------------------


Stamp = tuple[int, int, int]
"""``(UIDVALIDITY, UIDNEXT, messages)`` of an index: appends raise UIDNEXT and
expunges lower the count, so an equal stamp means the same set of UIDs (flag
changes do not move a message in any order the list offers)."""


class ListCache:
    """Per :class:`MailAccess` (so per process): for recently listed
    mailboxes, the UIDs in each sort order and the sender and subject sort
    texts, so a page of a large mailbox does not sort or parse it again.

    An order is reused only while the index's :data:`Stamp` is unchanged;
    the texts of a message (:class:`Texts`: what its row shows and its sort
    keys) belong to a UID of one UIDVALIDITY and never change (a message's
    header is immutable), so they survive new mail and only messages not
    seen before are read. Threads of the pool share it under :attr:`lock`;
    it holds the texts of at most :data:`TEXT_CACHE_MAILBOXES` mailboxes
    (about 0.5 KB a message)."""

    def __init__(self, mailboxes: int = ORDER_CACHE_MAILBOXES) -> None:
        self.lock = threading.Lock()
        self.limit = mailboxes
        self.orders: OrderedDict[tuple[MailboxKey, str], tuple[Stamp, array[int]]] = \
            OrderedDict()
        self.texts: OrderedDict[MailboxKey, tuple[int, dict[int, Texts]]] = OrderedDict()
        self.places: dict[tuple[MailboxKey, str], tuple[array[int], dict[int, int]]] = {}

    def order(self, key: MailboxKey, sort: str, stamp: Stamp) -> array[int] | None:
        with self.lock:
            found = self.orders.get((key, sort))
            if found is None or found[0] != stamp:
                return None
            self.orders.move_to_end((key, sort))
            return found[1]

    def keep_order(self, key: MailboxKey, sort: str, stamp: Stamp, uids: array[int]) -> None:
        with self.lock:
            self.orders[(key, sort)] = (stamp, uids)
            self.orders.move_to_end((key, sort))
            while len(self.orders) > self.limit * len(SORTS):
                self.orders.popitem(last=False)

    def place(self, key: MailboxKey, sort: str, order: array[int], uid: int) -> int | None:
        """The position of ``uid`` in ``order`` (an order this cache handed
        out), from a map built once per order: a view's previous/next links
        do not scan the mailbox."""
        with self.lock:
            found = self.places.get((key, sort))
            if found is None or found[0] is not order:
                if len(self.places) >= self.limit * len(SORTS):
                    self.places.clear()
                found = self.places[(key, sort)] = (order, {u: i for i, u in enumerate(order)})
            return found[1].get(uid)

    def texts_of(self, key: MailboxKey, uidvalidity: int) -> dict[int, Texts]:
        """The mailbox's :class:`Texts` by UID (a fresh dict after UIDVALIDITY changed)."""
        with self.lock:
            found = self.texts.get(key)
            if found is None or found[0] != uidvalidity:
                found = self.texts[key] = (uidvalidity, {})
            self.texts.move_to_end(key)
            while len(self.texts) > TEXT_CACHE_MAILBOXES:
                self.texts.popitem(last=False)
            return found[1]


_CACHES: weakref.WeakKeyDictionary[MailAccess, ListCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def list_cache(mail: MailAccess) -> ListCache:
    with _CACHES_LOCK:
        cache = _CACHES.get(mail)
        if cache is None:
            cache = _CACHES[mail] = ListCache()
        return cache


class Texts(NamedTuple):
    """What a message's row shows (escaped) and its sort keys: fixed for a
    UID of one UIDVALIDITY."""

    sender_key: str
    subject_key: str
    sender: str
    subject: str
    date: str


def _texts(message: MessageData) -> Texts:
    env = _envelope(message)
    sender = address_text(env.from_)
    subject = mime.decode_header(env.subject or "").strip()
    return Texts(sender.casefold(), subject.casefold(), esc(sender),
                 esc(subject) if subject else "(no subject)",
                 date_text(env.date, message.internal_date))


def _fill_texts(mail: MailAccess, opened: Opened, uids: Sequence[int],
                texts: dict[int, Texts]) -> None:
    """Add the :class:`Texts` of ``uids`` missing from ``texts``, from the
    cached MIME structures (a message gone meanwhile stays missing)."""
    missing = [uid for uid in uids if uid not in texts]
    for start in range(0, len(missing), 500):
        chunk = missing[start:start + 500]
        for message in _fetch_all(mail, opened, chunk, FetchNeeds(parsed=True)):
            texts[message.uid] = _texts(message)


def sorted_uids(mail: MailAccess, opened: Opened, sort: str) -> array[int]:
    """Every UID of the mailbox, ascending by ``sort`` then UID (a copy the
    caller must not change). Date and size orders come from the index
    arrays; sender and subject from :class:`ListCache` sort texts. Reused
    while the mailbox's :data:`Stamp` holds."""
    cache = list_cache(mail)
    key = mailbox_key(opened)
    with mail.index(opened) as index:
        stamp: Stamp = (index.uidvalidity, index.uidnext, len(index))
        found = cache.order(key, sort, stamp)
        if found is not None:
            return found
        if sort in ("date", "size"):
            column: Sequence[float] = index.dates if sort == "date" else index.sizes
            # sorted() is stable and positions ascend with UIDs: ties stay in UID order
            positions = sorted(range(len(index)), key=column.__getitem__)
            uids = array("I", [index.uids[i] for i in positions])
            cache.keep_order(key, sort, stamp, uids)
            return uids
        everything = array("I", index.uids)
    texts = cache.texts_of(key, stamp[0])
    _fill_texts(mail, opened, everything, texts)
    column_of = 0 if sort == "from" else 1
    uids = array("I", sorted(everything, key=lambda uid: texts[uid][column_of]
                             if uid in texts else ""))
    _prune(texts, everything)
    cache.keep_order(key, sort, stamp, uids)
    return uids


def _prune(texts: dict[int, Texts], alive: Sequence[int]) -> None:
    """Forget the texts of expunged messages once they could outnumber the
    mailbox's (a mailbox that keeps receiving and expunging)."""
    if len(texts) > len(alive) * 2 + 1000:
        keep = set(alive)
        for uid in [u for u in list(texts) if u not in keep]:
            texts.pop(uid, None)


def listed_uids(mail: MailAccess, opened: Opened, query: ListQuery) -> list[int] | array[int]:
    """The UIDs the list shows, in its order (ascending: the caller reverses
    for ``desc``); with a search only the matches."""
    order = sorted_uids(mail, opened, query.sort)
    if not query.search:
        return order
    if query.scope == "text":
        key = SearchKey("TEXT", (query.search,))
    else:
        key = SearchKey("OR", (SearchKey("SUBJECT", (query.search,)),
                               SearchKey("FROM", (query.search,))))
    with mail.index(opened) as index:
        everything = array("I", index.uids)
    hits = set(mail.search(opened, everything, key, lambda uid: False, True))
    return [uid for uid in order if uid in hits]


def page_of(order: Sequence[int], query: ListQuery) -> list[int]:
    """The page's UIDs in display order: a slice of ``order`` (ascending),
    taken from its end for ``desc``."""
    n = len(order)
    if not query.descending:
        return list(order[query.skip:query.skip + query.limit])
    high = max(0, n - query.skip)
    return list(reversed(order[max(0, high - query.limit):high]))


# -- the message list ------------------------------------------------------------------


def mailbox_choices(mail: MailAccess, user: str, current: str) -> list[dict[str, str]]:
    """The user's mailboxes a message can go to (the Move/Copy ``<select>``):
    every listed one that can hold messages, except ``current``."""
    out = []
    for entry in mail.list_mailboxes(user, "", ["*"]):
        if entry.name == current or any(a.lower() in ("\\noselect", "\\nonexistent")
                                         for a in entry.attributes):
            continue
        out.append({"name": esc(entry.name)})
    return out


def context_params(query: ListQuery) -> dict[str, str]:
    """The list's state that links and forms carry (``Skip`` included)."""
    out = {"Sort": query.sort, "Order": "desc" if query.descending else "asc",
           "Skip": str(query.skip), "Limit": str(query.limit)}
    if query.search:
        out["Search"] = query.search
        out["Scope"] = query.scope
    return out


def context_fields(query: ListQuery) -> list[dict[str, str]]:
    """:func:`context_params` as hidden form fields (escaped)."""
    return [{"name": name, "value": esc(value)} for name, value in context_params(query).items()]


def list_url(query: ListQuery, **extra: str) -> str:
    """The message list of ``query`` (not escaped)."""
    return "Mailbox.wssp?" + urllib.parse.urlencode(
        {"Mailbox": query.mailbox, **context_params(query), **extra})


def state_query(query: ListQuery) -> str:
    """:func:`context_params` URL-encoded (not escaped), to build many links from."""
    return urllib.parse.urlencode(context_params(query))


def view_url(query: ListQuery, uid: int, *, state: str | None = None, **extra: str) -> str:
    """The view of ``uid`` that keeps the list's state (not escaped);
    ``state``: :func:`state_query` of ``query``, when already at hand."""
    url = (f"Message.wssp?Mailbox={urllib.parse.quote_plus(query.mailbox)}&UID={uid}&"
           f"{state_query(query) if state is None else state}")
    return url + "&" + urllib.parse.urlencode(extra) if extra else url


def result_codes(params: Any) -> dict[str, Any]:
    """``Done``/``Error`` of a redirect after an action, only from the fixed
    sets (the skin maps them to text; free text is never reflected)."""
    out: dict[str, Any] = {}
    done, error = params.get("Done"), params.get("Error")
    if done in DONE_CODES:
        out["done"] = done
        out[f"done_{done}"] = True
    if error in ERROR_CODES:
        out["error"] = error
        out[f"error_{error}"] = True
    return out


def message_list(mail: MailAccess, user: str, query: ListQuery) -> dict[str, Any]:
    """The dataset of ``Mailbox.wssp``: the page of messages and the links.

    Cost: for date and size orders, the (cached) order, then the page's
    rows: flags and sizes from the index, texts from :class:`ListCache`
    (parsed once per message); the mailbox is opened, not selected (no
    \\Recent claim)."""
    opened = mail.open(user, query.mailbox, "r")
    order = listed_uids(mail, opened, query)
    page_uids = page_of(order, query)
    state = state_query(query)
    metadata: dict[int, tuple[tuple[str, ...], int]] = {}
    with mail.index(opened) as index:
        uidvalidity = index.uidvalidity
        for uid in page_uids:
            i = index.position(uid)
            if i is not None:  # else expunged meanwhile
                metadata[uid] = (index.flags[i], index.sizes[i])
        texts = list_cache(mail).texts_of(mailbox_key(opened), uidvalidity)
        if len(texts) > len(index) * 2 + 1000:
            _prune(texts, index.uids)
    _fill_texts(mail, opened, [uid for uid in page_uids if uid in metadata], texts)
    rows = []
    for uid in page_uids:
        shown = texts.get(uid)
        if shown is None or uid not in metadata:
            continue
        flags, size = metadata[uid]
        lower = {f.lower() for f in flags}
        row: dict[str, Any] = {
            "uid": uid,
            "from": shown.sender,
            "subject": shown.subject,
            "date": shown.date,
            "size": size_text(size),
            "sizeBytes": size,
            "viewURL": esc(view_url(query, uid, state=state)),
        }
        for flag, name in (("\\seen", "seen"), ("\\flagged", "flagged"),
                           ("\\answered", "answered"), ("\\deleted", "deleted")):
            if flag in lower:
                row[name] = True
        if "seen" not in row:
            row["unread"] = True
        rows.append(row)
    total = len(order)
    base = {"Mailbox": query.mailbox, "Sort": query.sort,
            "Order": "desc" if query.descending else "asc", "Limit": str(query.limit)}
    if query.search:
        base["Search"] = query.search
        base["Scope"] = query.scope

    def link(**changes: str) -> str:
        return esc("Mailbox.wssp?" + urllib.parse.urlencode({**base, **changes}))

    dataset: dict[str, Any] = {
        "mailbox": esc(query.mailbox),
        "mailboxURL": quote(query.mailbox),
        "messages": rows,
        "total": total,
        "first": query.skip + 1 if rows else 0,
        "last": query.skip + len(rows),
        "search": esc(query.search),
        "sort": query.sort,
        "order": "desc" if query.descending else "asc",
        "canDelete": opened.can("d") or None,
        "targets": mailbox_choices(mail, user, query.mailbox),
        "context": context_fields(query),
    }
    if query.scope == "text":
        dataset["scopeText"] = True
    if query.skip > 0:
        dataset["prevURL"] = link(Skip=str(max(0, query.skip - query.limit)))
    if query.skip + query.limit < total:
        dataset["nextURL"] = link(Skip=str(query.skip + query.limit))
    for name in SORTS:
        flip = "asc" if (query.sort == name and query.descending) else "desc"
        dataset[f"sort_{name}URL"] = link(Sort=name, Order=flip, Skip="0")
    return dataset


def neighbours(mail: MailAccess, opened: Opened, uid: int, query: ListQuery
               ) -> tuple[int | None, int | None]:
    """The messages shown before and after ``uid`` in the list's order.
    [waypost] The whole mailbox's order: a search is not run again for every
    view, so next/previous walk the mailbox, not only the matches."""
    order = sorted_uids(mail, opened, query.sort)
    i = list_cache(mail).place(mailbox_key(opened), query.sort, order, uid)
    if i is None:
        return None, None
    before = order[i - 1] if i > 0 else None
    after = order[i + 1] if i + 1 < len(order) else None
    return (after, before) if query.descending else (before, after)


# -- actions on messages -------------------------------------------------------------------


def trash_name(mail: MailAccess, user: str) -> str:
    """The user's mailbox with special use ``\\Trash``, else ``Trash``."""
    for entry in mail.list_mailboxes(user, "", ["*"], select=("SPECIAL-USE",)):
        if any(a.lower() == "\\trash" for a in entry.attributes):
            return entry.name
    return TRASH


def _is_mailbox(mail: MailAccess, user: str, name: str, opened: Opened) -> bool:
    try:
        target = mail.access.resolve(user, name)
    except MailboxError:
        return False
    return mailbox_key_of(target.ref) == mailbox_key(opened)


def _require_present(mail: MailAccess, opened: Opened, uids: Sequence[int]) -> None:
    with mail.index(opened) as index:
        gone = next((uid for uid in uids if index.position(uid) is None), None)
    if gone is not None:
        raise NotFound(f"The message with UID {gone} is no longer in {opened.name}.")


def act(mail: MailAccess, user: str, name: str, uids: Sequence[int], action: str,
        target: str = "") -> str:
    """Do ``action`` (:data:`ACTIONS`) to ``uids`` of mailbox ``name``; the
    ``Done`` code. Rights are the service's (:class:`NoPermission` before
    anything changes); a UID that is not there is :class:`NotFound` and
    nothing changes; :class:`BadRequest` for a move into the same mailbox.

    Delete [waypost, CGP's "Delete: move to Trash" mode]: the messages move
    to the user's ``\\Trash`` mailbox (``Trash`` created with that special
    use when missing), which needs ``d`` here; deleting inside Trash marks
    them ``\\Deleted`` and expunges them (only them) for good."""
    opened = mail.open(user, name, "r")
    _require_present(mail, opened, uids)
    if action in FLAG_ACTIONS:
        flag, mode = FLAG_ACTIONS[action]
        flags = mail.check_flags(opened, [flag], mode)
        mail.store_flags(opened, uids, flags, mode)
        return {"flag": "flagged", "unflag": "unflagged", "read": "read",
                "unread": "unread"}[action]
    if action in ("move", "copy"):
        if action == "move" and _is_mailbox(mail, user, target, opened):
            raise BadRequest("The messages are already in that mailbox.")
        mail.copy(user, opened, uids, target, move=action == "move")
        return "moved" if action == "move" else "copied"
    if action != "delete":
        raise BadRequest("unknown action")
    trash = trash_name(mail, user)
    if _is_mailbox(mail, user, trash, opened):
        flags = mail.check_flags(opened, ["\\Deleted"], "add")
        mail.store_flags(opened, uids, flags, "add")
        mail.expunge(opened, uids)
        return "expunged"
    try:
        mail.copy(user, opened, uids, trash, move=True)
    except TryCreate:
        with contextlib.suppress(MailboxExists):
            mail.create(user, trash, special_use="\\Trash")
        mail.copy(user, opened, uids, trash, move=True)
    return "deleted"


# -- the message view ------------------------------------------------------------------


def numbered_parts(root: mime.Part) -> Iterator[tuple[str, mime.Part]]:
    """The leaf parts of a message with their IMAP section numbers; an
    attached message is one leaf (it downloads as a whole)."""
    if not root.is_multipart:
        yield "1", root
        return

    def walk(part: mime.Part, prefix: str) -> Iterator[tuple[str, mime.Part]]:
        for n, child in enumerate(part.parts, 1):
            number = f"{prefix}{n}"
            if child.is_multipart:
                yield from walk(child, number + ".")
            else:
                yield number, child

    yield from walk(root, "")


def part_filename(data: bytes, part: mime.Part) -> str:
    name = None
    if part.disposition is not None:
        name = dict((k.lower(), v) for k, v in part.disposition[1]).get("filename")
    name = name or part.param("name")
    return mime.decode_header(name).strip() if name else ""


def _is_attachment(data: bytes, part: mime.Part) -> bool:
    disposition = part.disposition[0].lower() if part.disposition else ""
    if disposition == "attachment" or part.is_message:
        return True
    if part.type == "text" and part.subtype in ("plain", "html") and not part_filename(data, part):
        return False
    return not (part.type == "image" and part.id and disposition != "attachment")


def _content_id(part: mime.Part) -> str:
    return (part.id or "").strip().strip("<>").strip()


def _one_message(
    mail: MailAccess, user: str, name: str, uid: int
) -> tuple[Opened, MessageData, bytes, mime.ParsedMessage]:
    """A message the user may read, with its bytes and MIME parse;
    :class:`NotFound` when it is not there."""
    opened = mail.open(user, name, "r")
    batch = mail.fetch(opened, [(0, uid)], FetchNeeds(raw=True, parsed=True))
    if not batch.messages:
        raise NotFound(f"no message with UID {uid}")
    message = batch.messages[0]
    data = message.raw or b""
    return opened, message, data, message.parsed or mime.parse(data)


def message_view(mail: MailAccess, user: str, name: str, uid: int, *,
                 show_images: bool = False, plain: bool = False,
                 query: ListQuery | None = None) -> dict[str, Any]:
    """The dataset of ``Message.wssp``; sets \\Seen (with the ``s`` right).
    :class:`NotFound` when the message is not there. ``query`` is the state
    of the list the message was opened from (its order gives the previous
    and next links; the back link and the action form keep it)."""
    query = query or ListQuery(name)
    opened, message, data, parsed = _one_message(mail, user, name, uid)
    env = parsed.envelope
    mailbox_url = quote(name)
    parts = list(numbered_parts(parsed.root))
    cids = {_content_id(p): n for n, p in parts if p.id and p.type == "image"}

    def cid_url(cid: str) -> str | None:
        number = cids.get(urllib.parse.unquote(cid).strip().strip("<>"))
        return f"Part/{mailbox_url}/{uid}/{number}?Inline=1" if number else None

    text_part = next((p for _, p in parts if p.type == "text" and p.subtype == "plain"
                      and not _is_attachment(data, p)), None)
    html_part = next((p for _, p in parts if p.type == "text" and p.subtype == "html"
                      and not _is_attachment(data, p)), None)
    dataset: dict[str, Any] = {
        "mailbox": esc(name),
        "mailboxURL": mailbox_url,
        "uid": uid,
        "from": esc(address_text(env.from_)),
        "to": esc(address_text(env.to)),
        "cc": esc(address_text(env.cc)),
        "subject": esc(mime.decode_header(env.subject or "").strip()) or "(no subject)",
        "date": date_text(env.date, message.internal_date),
        "plainURL": esc(f"Message.wssp?Mailbox={mailbox_url}&UID={uid}&Plain=1"),
        "htmlURL": esc(f"Message.wssp?Mailbox={mailbox_url}&UID={uid}"),
    }
    if html_part is not None and not plain:
        body, blocked = sanitize(mime.part_text(data, html_part), show_images=show_images,
                                 cid_url=cid_url)
        dataset["htmlBody"] = body
        if blocked:
            dataset["imagesBlocked"] = blocked
            dataset["showImagesURL"] = esc(
                f"Message.wssp?Mailbox={mailbox_url}&UID={uid}&ShowImages=1")
    else:
        source = text_part or html_part
        dataset["textBody"] = esc(mime.part_text(data, source)) if source is not None else ""
        if plain and html_part is not None:
            dataset["hasHTML"] = True
    attachments = []
    for number, part in parts:
        if part in (text_part, html_part) or not _is_attachment(data, part):
            continue
        filename = part_filename(data, part) or f"part-{number}"
        attachments.append({
            "name": esc(filename),
            "type": esc(f"{part.type}/{part.subtype}"),
            "size": size_text(len(mime.part_content(data, part))),
            "url": esc(f"Part/{mailbox_url}/{uid}/{number}"),
        })
    dataset["attachments"] = attachments
    dataset.update(_view_controls(mail, user, opened, message, query))
    if "\\Seen" not in message.flags:
        mail.mark_seen(opened, [message])
    return dataset


def _view_controls(mail: MailAccess, user: str, opened: Opened, message: MessageData,
                   query: ListQuery) -> dict[str, Any]:
    """The view's links and action form: back to the list, previous/next in
    the list's order, reply/forward (``Compose.wssp``), the flags' state and
    the Move/Copy targets."""
    uid = message.uid
    compose = "Compose.wssp?" + urllib.parse.urlencode({"Mailbox": query.mailbox,
                                                        "UID": str(uid)})
    out: dict[str, Any] = {
        "listURL": esc(list_url(query)),
        "replyURL": esc(compose + "&Mode=reply"),
        "replyAllURL": esc(compose + "&Mode=replyall"),
        "forwardURL": esc(compose + "&Mode=forward"),
        "targets": mailbox_choices(mail, user, query.mailbox),
        "context": context_fields(query),
        "canDelete": opened.can("d") or None,
    }
    lower = {f.lower() for f in message.flags}
    if "\\flagged" in lower:
        out["flagged"] = True
    before, after = neighbours(mail, opened, uid, query)
    state = state_query(query)
    if before is not None:
        out["prevMessageURL"] = esc(view_url(query, before, state=state))
    if after is not None:
        out["nextMessageURL"] = esc(view_url(query, after, state=state))
    return out


def download(mail: MailAccess, user: str, name: str, uid: int, number: tuple[int, ...]
             ) -> Download:
    """A part's decoded content. :class:`NotFound` for a missing message or part."""
    _, _, data, parsed = _one_message(mail, user, name, uid)
    part = parsed.find(number)
    if part is None or part.is_multipart:
        raise NotFound("no such part")
    content = data[part.body_start:part.end] if part.is_message else mime.part_content(data, part)
    filename = part_filename(data, part) or "part-" + ".".join(map(str, number))
    return Download(f"{part.type}/{part.subtype}", filename, content)
