"""SORT (RFC 5256 §3) and the base subject (§2.1), pure.

The service reads, for each message a SEARCH program found, what the sort
keys need into a :class:`SortData` (from the message head: Date, Subject,
From, To, Cc, plus Message-ID, References and In-Reply-To for THREAD);
this module orders them. Choices where the RFC leaves one, as Dovecot does:

* strings compare with ``i;ascii-casemap`` (RFC 4790 §9.2: ASCII letters
  folded to upper case, then code point order, which is UTF-8 octet order);
* FROM, TO, CC sort on the mailbox (local part) of the first address, empty
  when there is none; DISPLAYFROM and DISPLAYTO (RFC 5957 §3) on its
  decoded display name, else its ``local@domain``;
* DATE is the Date header in UTC, the internal date when it is missing or
  unreadable (RFC 5256 §3); ARRIVAL the internal date;
* messages equal under every key keep mailbox order (§3, "sequence number").
"""

from __future__ import annotations

import bisect
import email.utils
import functools
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from waypost import mime
from waypost.services.mailaccess.search import mailboxes

_CASEMAP = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def casemap(text: str) -> str:
    """``i;ascii-casemap``: only ASCII letters fold (RFC 4790 §9.2). On ASCII
    text that is ``str.upper`` (in C, no table lookup per character)."""
    return text.upper() if text.isascii() else text.translate(_CASEMAP)


@dataclass(frozen=True, slots=True)
class SortData:
    """One message as SORT and THREAD see it. ``number`` is what the answer
    lists (message number or UID); ``seq`` its place in the mailbox."""

    number: int
    seq: int
    arrival: float
    size: int
    date: float  # sent date in UTC, or ``arrival``
    subject: str  # decoded
    sender: tuple[str, str]  # first From: (mailbox, display form)
    to: tuple[str, str]
    cc: tuple[str, str]
    message_id: str = ""
    references: tuple[str, ...] = ()


def first_address(value: str | None) -> tuple[str, str]:
    """(mailbox, display form) of the first address of a header value."""
    for name, local, spec in mailboxes(value)[:1]:
        return local, name or spec
    return "", ""


def sent_date(value: str | None, arrival: float) -> float:
    """The Date header as a UTC timestamp, ``arrival`` if there is none."""
    if value:
        try:
            parts = email.utils.parsedate_tz(value)
            if parts is not None:
                return float(email.utils.mktime_tz(parts))
        except (ValueError, TypeError, OverflowError, IndexError):
            pass
    return arrival


_MSG_ID = re.compile(r"<([^<>\s]+)>")


def message_ids(value: str | None) -> list[str]:
    """The ``<msg-id>`` values of a header, without brackets."""
    return _MSG_ID.findall(value or "")


_FIELDS = ("date", "subject", "from", "to", "cc", "message-id", "references", "in-reply-to")


SUMMARY_KEYS = frozenset({"ARRIVAL", "SIZE", "DATE", "SUBJECT", "FROM", "DISPLAYFROM"})
"""Sort keys the stored summary (From, Subject, Date, Message-ID) answers
without reading the message head."""


THREAD = "THREAD"
"""In ``needs``: what THREAD reads (the sent date, Message-ID, References)."""
Needs = frozenset[str] | set[str] | None


def from_header(
    number: int, seq: int, arrival: float, size: int, head: bytes, needs: Needs = None
) -> SortData:
    """A message's :class:`SortData` from its header bytes (b"" when no
    key needs them); see :func:`from_values` for ``needs``."""
    values: dict[str, str] = {}
    for f in mime.find_fields(head, 0, len(head), _FIELDS) if head else ():
        values.setdefault(f.name.decode(), mime.decode_header(mime.field_value(head, f)))
    return from_values(number, seq, arrival, size, values, needs)


def from_summary(
    number: int, seq: int, arrival: float, size: int, summary: dict[str, str], needs: Needs = None
) -> SortData:
    """The same from the summary the store keeps (enough for :data:`SUMMARY_KEYS`)."""
    values = {key.replace("_", "-"): value for key, value in summary.items()}
    return from_values(number, seq, arrival, size, values, needs)


def from_values(
    number: int, seq: int, arrival: float, size: int, values: dict[str, str], needs: Needs = None
) -> SortData:
    """:class:`SortData` from decoded header values by lower-case field name.
    ``needs`` (sort keys and :data:`THREAD`; None: all) limits the parsing to
    what will be compared: the rest is left empty."""
    want = (lambda *names: True) if needs is None else (lambda *names: not needs.isdisjoint(names))
    ids: list[str] = []
    refs: list[str] = []
    if want(THREAD):
        ids = message_ids(values.get("message-id"))
        refs = message_ids(values.get("references")) or message_ids(values.get("in-reply-to"))[:1]
    date = sent_date(values.get("date"), arrival) if want("DATE", THREAD) else arrival
    sender = first_address(values.get("from")) if want("FROM", "DISPLAYFROM") else ("", "")
    to = first_address(values.get("to")) if want("TO", "DISPLAYTO") else ("", "")
    cc = first_address(values.get("cc")) if want("CC") else ("", "")
    return SortData(
        number, seq, arrival, size, date, values.get("subject", ""), sender, to, cc,
        ids[0] if ids else "", tuple(refs),
    )  # fmt: skip


# -- base subject (RFC 5256 §2.1) -----------------------------------------------------------

_WSP_RUN = re.compile(r"[ \t\r\n]+")
_BLOB = r"\[[^\[\]]*\][ \t]*"
_TRAILER = re.compile(r"(?:[ \t]|\(fwd\))$", re.IGNORECASE)
_REFWD = re.compile(rf"^(?:{_BLOB})*(?:re|fwd?)[ \t]*(?:{_BLOB})?:", re.IGNORECASE)
_LEADING_BLOB = re.compile(rf"^{_BLOB}")
_FWD = re.compile(r"^\[fwd:(.*)\]$", re.IGNORECASE | re.DOTALL)


@functools.lru_cache(maxsize=1 << 16)
def base_subject(subject: str) -> tuple[str, bool]:
    """The base subject (i;ascii-casemap applied) and whether a reply or
    forward marker was taken off (``Re:``, ``Fwd:``, ``(fwd)``, ``[fwd: ]``),
    which THREAD=REFERENCES needs (§2.2 step 5). Remembered for the last
    65,536 subjects: a thread's messages share theirs, and SORT and THREAD
    ask for it in every comparison pass."""
    text = _WSP_RUN.sub(" ", subject)  # (1) tabs, folds and runs of them: one space
    reply = False
    while True:
        while True:  # (2) trailers
            m = _TRAILER.search(text)
            if m is None:
                break
            reply |= m.group() != " "
            text = text[: m.start()]
        while True:  # (5) = (3) leaders and (4) blobs, until none is left
            before = text
            if text[:1] == " ":
                text = text[1:]
            elif m := _REFWD.match(text):
                text, reply = text[m.end() :], True
            elif (m := _LEADING_BLOB.match(text)) and text[m.end() :].strip(" \t"):
                text = text[m.end() :]
            if text == before:
                break
        m = _FWD.match(text)  # (6) [fwd: ...]
        if m is None:
            return casemap(text), reply
        text, reply = m.group(1), True


# -- SORT -------------------------------------------------------------------------------------


def _subject_key(m: SortData) -> str:
    return base_subject(m.subject)[0]


KEYS: dict[str, Callable[[SortData], object]] = {
    "ARRIVAL": lambda m: m.arrival,
    "CC": lambda m: casemap(m.cc[0]),
    "DATE": lambda m: m.date,
    "FROM": lambda m: casemap(m.sender[0]),
    "SIZE": lambda m: m.size,
    "SUBJECT": _subject_key,
    "TO": lambda m: casemap(m.to[0]),
    "DISPLAYFROM": lambda m: casemap(m.sender[1]),
    "DISPLAYTO": lambda m: casemap(m.to[1]),
}
"""Each sort key of RFC 5256 §3 and RFC 5957 §3 as a Python sort key."""


def sort(messages: Sequence[SortData], criteria: Sequence[tuple[str, bool]]) -> list[int]:
    """The ``number`` of each message in SORT order: by the criteria
    (``(key, reverse)``, first decides), ties in mailbox order."""
    return [m.number for m in ordered(messages, criteria)]


def ordered(messages: Sequence[SortData], criteria: Sequence[tuple[str, bool]]) -> list[SortData]:
    """The messages in SORT order (see :func:`sort`)."""
    order = sorted(messages, key=lambda m: m.seq)
    for name, reverse in reversed(criteria):  # stable sorts, last criterion first
        order.sort(key=KEYS[name], reverse=reverse)  # type: ignore[arg-type]
    return order


def merged(order: Sequence[SortData], gone: Collection[int], added: Sequence[SortData],
           criteria: Sequence[tuple[str, bool]]) -> list[SortData]:  # fmt: skip
    """``order`` (in SORT order by ``criteria``) without the messages whose
    ``number`` is in ``gone`` and with ``added`` where :func:`ordered` would
    put them: what a busy mailbox needs after one new message, at the cost
    of a binary search per new message instead of sorting everything again."""
    out = [m for m in order if m.number not in gone] if gone else list(order)
    key = functools.cmp_to_key(_comparer(criteria))
    for m in sorted(added, key=lambda m: m.seq):
        bisect.insort_right(out, m, key=key)
    return out


def _comparer(criteria: Sequence[tuple[str, bool]]) -> Callable[[SortData, SortData], int]:
    """The order :func:`ordered` gives as one comparison: the criteria in
    turn (a reversed one descending), then mailbox order, which a stable
    sort keeps for ties even when reversed."""
    keys = [(KEYS[name], reverse) for name, reverse in criteria]

    def compare(a: SortData, b: SortData) -> int:
        for key, reverse in keys:
            x, y = key(a), key(b)
            if x != y:
                less = x < y  # type: ignore[operator]
                return (1 if less else -1) if reverse else (-1 if less else 1)
        return (a.seq > b.seq) - (a.seq < b.seq)

    return compare
