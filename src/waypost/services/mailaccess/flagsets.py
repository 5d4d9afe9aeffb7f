"""Flag searches answered from the index: one bitmap per flag (issue 12 point 5).

A :class:`FlagSets` belongs to one :class:`~waypost.services.mailaccess.index.MailboxIndex`
and holds, for every flag in the mailbox (lower case: flags compare
case-insensitively, RFC 3501 §2.3.2), a Python ``int`` whose bit *i* is set
when the message at index position *i* carries the flag. Python's big
integers do AND, OR and NOT of 50,000 bits in C in microseconds, so
``UNSEEN``, ``FLAGGED KEYWORD $x`` or ``OR DELETED NOT SEEN`` cost a few set
operations instead of a Python loop over every message.

Kept current incrementally by the index: a flag change toggles the message's
bits, an arrival sets bits past the end, a few expunges cut their bits out
(many: the bitmaps are rebuilt on next use, one pass over the flags). The
first use after a load builds them in one pass.

:func:`evaluate` answers a SEARCH program from the bitmaps when every key in
it is one they can answer (flags, keywords, RECENT/NEW/OLD, ALL, message
and UID sets, ``$``, and NOT/AND/OR of those), else None and the caller
takes the per-message path; :func:`members` turns a bitmap into UIDs or
message numbers with ``itertools.compress`` (C, no Python loop per message).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Sequence
from itertools import compress

from waypost.services.mailaccess.criteria import SearchKey, SequenceSet

KEEP_ANSWERS = 8
"""Answers kept per mailbox while it does not change."""
REBUILD_AFTER = 32
"""Expunged messages at once beyond which the bitmaps are rebuilt instead of cut."""

_FLAG_KEYS = {
    "ANSWERED": ("\\answered", True), "UNANSWERED": ("\\answered", False),
    "DELETED": ("\\deleted", True), "UNDELETED": ("\\deleted", False),
    "DRAFT": ("\\draft", True), "UNDRAFT": ("\\draft", False),
    "FLAGGED": ("\\flagged", True), "UNFLAGGED": ("\\flagged", False),
    "SEEN": ("\\seen", True), "UNSEEN": ("\\seen", False),
}  # fmt: skip
_BITS = bytes.maketrans(b"01", b"\x00\x01")
_ONE = re.compile("1")


class FlagSets:
    """Per-flag bitmaps over index positions (see the module doc). ``bits``
    is None until built; a flag no message carries has no entry.

    ``answers`` keeps the last few answers (keyed by the program and the
    view's recent and saved sets) until the mailbox changes at all: clients
    repeat ``UID SEARCH UNSEEN`` after every poll, and an unchanged mailbox
    then costs a dictionary lookup instead of a walk over 50,000 bits."""

    __slots__ = ("answers", "bits")

    def __init__(self) -> None:
        self.bits: dict[str, int] | None = None
        self.answers: dict[tuple[object, ...], list[int]] = {}

    def reset(self) -> None:
        self.bits = None
        self.answers.clear()

    def remember(self, question: tuple[object, ...], answer: list[int]) -> None:
        if len(self.answers) >= KEEP_ANSWERS:
            del self.answers[next(iter(self.answers))]
        self.answers[question] = answer

    def current(self, flags: Sequence[tuple[str, ...]]) -> dict[str, int]:
        """The bitmaps, built from ``flags`` (the index's, by position) if needed."""
        if self.bits is None:
            positions: dict[tuple[str, ...], list[int]] = {}
            for i, combo in enumerate(flags):  # one pass, only when (re)built
                positions.setdefault(combo, []).append(i)
            columns: dict[str, bytearray] = {}
            for combo, where in positions.items():
                for flag in {f.lower() for f in combo}:
                    column = columns.get(flag)
                    if column is None:
                        column = columns[flag] = bytearray(b"0" * len(flags))
                    for i in where:
                        column[i] = 0x31
            self.bits = {flag: int(column[::-1], 2) for flag, column in columns.items()}
        return self.bits

    def changed(self, i: int, old: Collection[str], new: Collection[str]) -> None:
        """The message at position ``i`` went from flags ``old`` to ``new``."""
        self.answers.clear()
        if self.bits is None:
            return
        before, after = {f.lower() for f in old}, {f.lower() for f in new}
        bit = 1 << i
        for flag in before - after:
            self.bits[flag] &= ~bit
        for flag in after - before:
            self.bits[flag] = self.bits.get(flag, 0) | bit

    def removed(self, positions: Sequence[int]) -> None:
        """The messages at ``positions`` (ascending) left the index."""
        self.answers.clear()
        if self.bits is None:
            return
        if len(positions) > REBUILD_AFTER:
            self.bits = None
            return
        for flag, value in self.bits.items():
            for i in reversed(positions):  # highest first: lower positions stay put
                value = (value & ((1 << i) - 1)) | ((value >> (i + 1)) << i)
            self.bits[flag] = value


def members(bits: int, values: Sequence[int]) -> list[int]:
    """The ``values`` (by position) whose bit is set in ``bits``. Few hits
    (under one in 8): the positions of the ``1`` digits found by a regular
    expression, costing per hit; many: ``compress`` over every value. Both
    iterate in C."""
    if bits <= 0:
        return []
    digits = bin(bits)[:1:-1]
    if bits.bit_count() * 8 < len(values):
        return list(map(values.__getitem__, map(re.Match.start, _ONE.finditer(digits))))
    return list(compress(values, digits.encode().translate(_BITS)))


def span(low: int, high: int) -> int:
    """Positions ``low`` to ``high - 1``."""
    return ((1 << (high - low)) - 1) << low if high > low else 0


def _uid_bits(uids: Sequence[int], ranges: Sequence[tuple[int, int]]) -> int:
    out = 0
    for low, high in ranges:
        out |= span(bisect_left(uids, low), bisect_right(uids, high))
    return out


class View:
    """What :func:`evaluate` needs of the client's view, which is the index's
    own UIDs: ``recent`` as UID ranges ``[low, high)``, ``saved`` the UIDs of
    ``$`` (RFC 5182)."""

    __slots__ = ("recent", "saved", "uids")

    def __init__(
        self,
        uids: Sequence[int],
        recent: Sequence[tuple[int, int]] = (),
        saved: Collection[int] = (),
    ) -> None:
        self.uids = uids
        self.recent = recent
        self.saved = saved


def evaluate(key: SearchKey, bits: dict[str, int], view: View) -> int | None:
    """The bitmap of the messages matching ``key``, None if a key in it is not
    one the bitmaps answer. ``bits``: :meth:`FlagSets.current` for the view's UIDs."""
    uids = view.uids
    everything = (1 << len(uids)) - 1
    op = key.op
    if op == "ALL":
        return everything
    if op in _FLAG_KEYS:
        flag, want = _FLAG_KEYS[op]
        value = bits.get(flag, 0)
        return value if want else everything ^ value
    if op in ("KEYWORD", "UNKEYWORD"):
        value = bits.get(key.args[0].lower(), 0)
        return value if op == "KEYWORD" else everything ^ value
    if op in ("RECENT", "NEW", "OLD"):
        recent = _uid_bits(uids, [(low, high - 1) for low, high in view.recent])
        if op == "NEW":
            return recent & ~bits.get("\\seen", 0)
        return recent if op == "RECENT" else everything ^ recent
    if op in ("SEQ", "UID"):
        seqset: SequenceSet = key.args[0]
        if seqset.saved:
            return _uid_bits(uids, [(u, u) for u in sorted(view.saved)])
        if op == "UID":
            return _uid_bits(uids, seqset.resolve(uids[-1] if uids else 0))
        out = 0
        for low, high in seqset.resolve(len(uids)):
            out |= span(max(low, 1) - 1, min(high, len(uids)))
        return out
    if op in ("NOT", "AND", "OR"):
        parts = [evaluate(k, bits, view) for k in key.args]
        if any(p is None for p in parts):
            return None
        values = [p for p in parts if p is not None]
        if op == "NOT":
            return everything ^ values[0]
        out = values[0]
        for value in values[1:]:
            out = out & value if op == "AND" else out | value
        return out
    return None
