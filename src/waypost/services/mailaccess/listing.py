"""LIST and LSUB as data: which names, with which attributes and extended data.

RFC 3501 §6.3.8-9 (LIST, LSUB), RFC 5258 (LIST-EXTENDED), RFC 6154 (the
SPECIAL-USE selection option), RFC 5819 (LIST-STATUS; the values themselves
come from the caller's ``status_of``) and RFC 9051 §6.3.9 (IMAP4rev2).

How a LIST is answered:

* The **selection options** (RFC 5258 §3) pick the *base set*: every visible
  mailbox, or with ``SUBSCRIBED`` the subscription list (names that do not
  exist, or that the user may not look up, are ``\\NonExistent``), or with
  ``SPECIAL-USE`` (RFC 6154 §3) only mailboxes with a special-use attribute
  (both options: both conditions). ``REMOTE`` is accepted and changes
  nothing: this server has no remote mailboxes (RFC 2193).
* The answer is the base names every pattern matches (first pattern wins,
  RFC 5258 §3: several patterns ``("a" "b")``).
* ``RECURSIVEMATCH`` (RFC 5258 §3, §4) adds each name the patterns match
  that has a *descendant* in the base set, whether or not it matches a
  pattern (Note 2), and marks it with ``CHILDINFO`` naming the selection
  criteria its descendants meet (``("SUBSCRIBED")``, ``("SPECIAL-USE")``).
  Such a parent keeps its real attributes; one that does not exist is
  ``\\NonExistent``. The parser refuses ``RECURSIVEMATCH`` without an option
  it can modify (§3 Note 3).
* ``\\Subscribed`` is returned with the ``SUBSCRIBED`` selection or return
  option (§3, §4); ``\\HasChildren``/``\\HasNoChildren`` always (RFC 3348,
  RFC 5258 §4 allows them unasked, as Dovecot sends them; RFC 9051 §7.3.1
  wants them "when known").
* A level that ``%`` matches only because a mailbox lies below it, and that
  is no name itself (RFC 3501 §6.3.8), is ``\\Noselect \\HasChildren`` for a
  plain IMAP4rev1 LIST and ``\\NonExistent \\HasChildren`` for an extended
  LIST or under IMAP4rev2 (RFC 5258 §3 and RFC 9051 §6.3.9: ``\\NonExistent``
  "MUST be accurately computed"; it implies ``\\Noselect``).
* ``RETURN (STATUS ...)`` (RFC 5819 §2): status values only for a mailbox the
  user may read (``r``) that is neither ``\\Noselect`` nor ``\\NonExistent``;
  a mailbox whose STATUS fails is listed without one (the RFC lets the
  server leave it out rather than fail the LIST).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import waypost.services.mailaccess.errors as errors
from waypost.services.mailaccess.rights import (
    ListEntry,
    MailboxAccess,
    Opened,
    compile_pattern,
)
from waypost.storage.interface import SPECIAL_USES

NONEXISTENT = "\\NonExistent"
NOSELECT = "\\Noselect"
SUBSCRIBED = "\\Subscribed"
HAS_CHILDREN = "\\HasChildren"

StatusOf = Callable[[Opened, Sequence[str]], list[tuple[str, int | None]]]


@dataclass(frozen=True, slots=True)
class Listed:
    """One LIST/LSUB entry: the name as the user sees it, its attributes
    (``\\Subscribed`` included when asked for), when asked for and readable
    its status values, and ``childinfo``: the RFC 5258 §4 CHILDINFO
    selection criteria (empty: no CHILDINFO)."""

    name: str
    attributes: tuple[str, ...]
    status: tuple[tuple[str, int | None], ...] | None = None
    childinfo: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ListRequest:
    """What the client asked: ``select`` and ``returns`` are the upper-case
    LIST-EXTENDED options, ``status`` the items of ``RETURN (STATUS (...))``;
    ``extended`` is an RFC 5258 extended LIST; ``rev2`` an IMAP4rev2 session."""

    reference: str
    patterns: tuple[str, ...]
    lsub: bool = False
    select: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    status: tuple[str, ...] = ()
    extended: bool = False
    rev2: bool = False


def _full(reference: str, pattern: str) -> str:
    """The canonical pattern (RFC 3501 §6.3.8): reference + pattern, unless
    the pattern names another user's tree."""
    if not reference or pattern.startswith("~"):
        return pattern
    return reference + pattern


def _wide(full: str) -> str:
    """A pattern that matches every name in the tree ``full`` lies in (own or
    ``~owner``): RECURSIVEMATCH needs descendants the pattern itself misses."""
    if full.startswith("~"):
        return full.partition("/")[0] + "/*"
    return "*"


def _parents(name: str) -> list[str]:
    """The levels above ``name``; never a bare ``~owner`` (another user's
    whole tree is not a mailbox name to list)."""
    parts = name.split("/")
    found = ["/".join(parts[:i]) for i in range(1, len(parts))]
    return [p for p in found if not (p.startswith("~") and "/" not in p)]


def _is_special(attributes: Sequence[str]) -> bool:
    return any(a in SPECIAL_USES for a in attributes)


class Lister:
    """Answers one user's LIST and LSUB commands (see the module docstring)."""

    def __init__(self, access: MailboxAccess, status_of: StatusOf) -> None:
        self.access = access
        self.status_of = status_of

    def answer(self, user: str, request: ListRequest) -> list[Listed]:
        select = request.select
        subscribed = request.lsub or "SUBSCRIBED" in select
        special = "SPECIAL-USE" in select
        recursive = "RECURSIVEMATCH" in select and (subscribed or special)
        if request.lsub:
            return self._lsub(user, request)
        criteria = tuple(
            c for c, on in (("SUBSCRIBED", subscribed), ("SPECIAL-USE", special)) if on
        )
        show_subscribed = subscribed or "SUBSCRIBED" in request.returns
        subscriptions = set(self.access.subscriptions(user)) if show_subscribed else set()
        result: dict[str, Listed] = {}
        for pattern in request.patterns:
            full = _full(request.reference, pattern)
            if not full:  # RFC 3501 §6.3.8: the delimiter and the root name
                result.setdefault("", Listed("", (NOSELECT,)))
                continue
            matcher = compile_pattern(full)
            need = recursive or not subscribed  # SUBSCRIBED alone reads only the subscriptions
            visible = self._visible(user, full, wide=recursive) if need else {}
            base = self._base(
                user, full, visible, subscribed=subscribed, special=special, wide=recursive
            )
            for entry in base:
                if matcher.fullmatch(entry.name) and entry.name not in result:
                    result[entry.name] = self._entry(user, request, entry, subscriptions)
            if recursive:
                self._recurse(
                    user, request, matcher, base, visible, subscriptions, criteria, result
                )
        return sorted(result.values(), key=lambda e: _sort_key(e.name))

    # -- the parts -------------------------------------------------------------------

    def _lsub(self, user: str, request: ListRequest) -> list[Listed]:
        """LSUB (RFC 3501 §6.3.9): its own ``\\Noselect`` conventions, kept as is."""
        seen: dict[str, Listed] = {}
        for pattern in request.patterns:
            for entry in self.access.list_subscribed(user, request.reference, pattern):
                seen.setdefault(entry.name, Listed(entry.name, entry.attributes))
        return list(seen.values())

    def _visible(self, user: str, full: str, *, wide: bool) -> dict[str, ListEntry]:
        """Names the user may look up: those the pattern matches (with the
        levels ``%`` adds, which have no ``target``), or (``wide``) every
        existing name of the tree the pattern lies in."""
        entries = self.access.list_visible(user, "", _wide(full) if wide else full)
        return {e.name: e for e in entries if e.name and (e.target is not None or not wide)}

    def _base(
        self,
        user: str,
        full: str,
        visible: dict[str, ListEntry],
        *,
        subscribed: bool,
        special: bool,
        wide: bool,
    ) -> list[ListEntry]:
        """The names the selection options pick (module docstring)."""
        if subscribed:
            pattern = _wide(full) if wide else full
            entries = self.access.list_subscribed(user, "", pattern, extended=True)
        else:
            entries = list(visible.values())
        if special:
            entries = [e for e in entries if _is_special(e.attributes)]
        return entries

    def _entry(
        self, user: str, request: ListRequest, entry: ListEntry, subscriptions: set[str]
    ) -> Listed:
        attrs = list(entry.attributes)
        if entry.target is None and (request.extended or request.rev2):
            # a level ``%`` matched above a name, no name itself (RFC 3501 §6.3.8)
            attrs = [NONEXISTENT if a == NOSELECT else a for a in attrs]
        if entry.name in subscriptions and SUBSCRIBED not in attrs:
            attrs.append(SUBSCRIBED)
        return Listed(entry.name, tuple(attrs), self._status(user, request, entry.name, attrs))

    def _recurse(
        self,
        user: str,
        request: ListRequest,
        matcher: re.Pattern[str],
        base: list[ListEntry],
        visible: dict[str, ListEntry],
        subscriptions: set[str],
        criteria: tuple[str, ...],
        result: dict[str, Listed],
    ) -> None:
        """RECURSIVEMATCH: each matching ancestor of a base name, with CHILDINFO."""
        for entry in base:
            for parent in _parents(entry.name):
                if not matcher.fullmatch(parent):
                    continue
                found = result.get(parent)
                if found is None:
                    known = visible.get(parent)
                    if known is not None and known.target is not None:
                        found = self._entry(user, request, known, subscriptions)
                    else:
                        below = parent + "/"
                        attrs = [NONEXISTENT]
                        if any(name.startswith(below) for name in visible):
                            attrs.append(HAS_CHILDREN)
                        if parent in subscriptions:
                            attrs.append(SUBSCRIBED)
                        found = Listed(parent, tuple(attrs))
                if not found.childinfo:
                    found = Listed(found.name, found.attributes, found.status, criteria)
                result[parent] = found

    def _status(
        self, user: str, request: ListRequest, name: str, attrs: Collection[str]
    ) -> tuple[tuple[str, int | None], ...] | None:
        if not request.status or not name or NOSELECT in attrs or NONEXISTENT in attrs:
            return None
        try:
            opened = self.access.open(user, name, "r")
            return tuple(self.status_of(opened, request.status))
        except errors.MailboxError:
            return None  # listed (l) but not readable (r), or gone meanwhile


def _sort_key(name: str) -> tuple[int, str]:
    return (0 if name == "INBOX" or name.startswith("INBOX/") else 1, name)
