"""Search criteria and sequence sets: protocol-neutral values (RFC 3501 §6.4.4, §9).

The IMAP wire parses a SEARCH program into a :class:`SearchKey` tree and
message sets into :class:`SequenceSet`; the mail-access service evaluates
them (``search.py``) and resolves sets against a view's UIDs. Both are
immutable values with no knowledge of bytes on a wire, so the web
interface can build them as well.

Invariants: a ``SequenceSet`` range bound of ``None`` is ``*`` (resolved
against the largest message number or UID at use time), ``saved`` is the
RFC 5182 ``$``; :meth:`SequenceSet.resolve` returns sorted, merged,
non-overlapping ranges.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A sequence set; ``None`` stands for ``*``. ``saved``: ``$`` (RFC 5182)."""

    ranges: tuple[tuple[int | None, int | None], ...] = ()
    saved: bool = False

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Ordered, merged ``(low, high)`` ranges with ``*`` as ``largest``
        (the message count, or the highest UID in use)."""
        spans = sorted(
            (min(a, b), max(a, b))
            for a, b in (
                (largest if lo is None else lo, largest if hi is None else hi)
                for lo, hi in self.ranges
            )
        )
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                if hi > merged[-1][1]:
                    merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        return merged

    def matcher(self, largest: int) -> Callable[[int], bool]:
        """A fast membership test (bisect over the resolved ranges)."""
        spans = self.resolve(largest)
        lows = [lo for lo, _ in spans]

        def contains(n: int) -> bool:
            i = bisect_right(lows, n) - 1
            return i >= 0 and n <= spans[i][1]

        return contains

    def select(self, values: Sequence[int], largest: int | None = None) -> list[int]:
        """The members of the sorted ``values`` (UIDs in use) in the set;
        ``*`` is the last value unless ``largest`` is given."""
        if largest is None:
            largest = values[-1] if values else 0
        out: list[int] = []
        for lo, hi in self.resolve(largest):
            out.extend(values[bisect_left(values, lo) : bisect_right(values, hi)])
        return out

    def highest(self) -> int:
        """The largest explicit number (0 if only ``*``): for range checks."""
        return max((n for r in self.ranges for n in r if n is not None), default=0)

    def __str__(self) -> str:
        if self.saved:
            return "$"

        def num(n: int | None) -> str:
            return "*" if n is None else str(n)

        return ",".join(num(lo) if lo == hi else f"{num(lo)}:{num(hi)}" for lo, hi in self.ranges)


@dataclass(frozen=True, slots=True)
class SearchKey:
    """A SEARCH program node. ``op`` is the RFC 3501 key (``FROM``, ``OR``,
    ``NOT``, ``UID`` ...), ``SEQ`` for a bare sequence set, ``AND`` for a
    parenthesised list (and the whole program). ``args``: strings (decoded),
    :class:`datetime.date`, ints, :class:`SequenceSet` or child keys."""

    op: str
    args: tuple[Any, ...] = ()
