"""SEARCH results as IMAP writes them: ESEARCH, the saved result ``$``, rev2.

* ESEARCH (RFC 4731 §3.1): ``RETURN (MIN MAX ALL COUNT)`` answers
  ``* ESEARCH (TAG "t") [UID] MIN a MAX b ALL set COUNT n``; ``RETURN ()``
  is ALL (the parser reads it so); ALL is a compact sequence set; when
  nothing matched, MIN, MAX and ALL are left out and COUNT is 0.
* SEARCHRES (RFC 5182 §2.1): ``RETURN (SAVE)`` keeps the result as ``$`` on
  the selected mailbox (as UIDs, so renumbering never moves it). SAVE with
  only MIN and/or MAX saves just those messages; with ALL or COUNT (or
  alone) all of them. SAVE alone sends no ESEARCH. A SEARCH that fails
  with NO empties ``$``; a BAD (syntax) leaves it as it was, as Dovecot
  does, since the command was never understood. ``$`` is empty after
  SELECT/EXAMINE (a new view) and gone with CLOSE/UNSELECT; expunged
  messages drop out because ``$`` is resolved against the view's UIDs.
* IMAP4rev2 (RFC 9051 §6.4.4, §7.3.4): SEARCH answers only with ESEARCH
  (no RETURN means ALL), and the RECENT, NEW and OLD keys, gone from its
  grammar with ``\\Recent``, are BAD; IMAP4rev1 sessions keep them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Sequence

from waypost.protocols.imap import wire
from waypost.services.mailaccess.criteria import SearchKey
from waypost.services.mailaccess.search import uses

REV1_ONLY_KEYS = ("RECENT", "NEW", "OLD")


def check_key(key: SearchKey, rev2: bool) -> None:
    """BAD for RECENT/NEW/OLD under IMAP4rev2 (RFC 9051 §6.4.4 grammar)."""
    if rev2 and uses(key, REV1_ONLY_KEYS):
        raise wire.ParseError(None, "RECENT, NEW and OLD are not IMAP4rev2 search keys")


def esearch_items(found: Sequence[int], returns: Collection[str]) -> list[tuple[str, int | str]]:
    """The result items of ``returns`` for ``found`` (ascending)."""
    items: list[tuple[str, int | str]] = []
    if found:
        if "MIN" in returns:
            items.append(("MIN", found[0]))
        if "MAX" in returns:
            items.append(("MAX", found[-1]))
        if "ALL" in returns:
            items.append(("ALL", wire.compact_set(found)))
    if "COUNT" in returns:
        items.append(("COUNT", len(found)))
    return items


def saved_result(uids: Sequence[int], returns: Collection[str]) -> frozenset[int]:
    """What SAVE keeps of the found ``uids`` (ascending), RFC 5182 §2.1."""
    others = set(returns) - {"SAVE"}
    if uids and others and others <= {"MIN", "MAX"}:
        return frozenset(
            [*(uids[:1] if "MIN" in others else ()), *(uids[-1:] if "MAX" in others else ())]
        )
    return frozenset(uids)


def saved_pairs(view: Sequence[int], saved: Collection[int]) -> list[tuple[int, int]]:
    """(message number, UID) of the saved messages still in the view."""
    out: list[tuple[int, int]] = []
    for uid in sorted(saved):
        i = bisect_left(view, uid)
        if i < len(view) and view[i] == uid:
            out.append((i + 1, uid))
    return out
