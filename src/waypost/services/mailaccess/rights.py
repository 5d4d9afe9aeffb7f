"""Mailbox names and access rights: the one place that decides them.

IMAP, POP3, the web interface, rules and the CLI ask :class:`MailboxAccess`
which mailbox a name means for a user and what the user may do with it
(spec/mailboxes.md, domains-accounts.md §6.2). The storage below checks no
rights; the protocols above decide nothing about names.

Names a user writes (mailboxes.md §3, §5):

* ``box`` - one of the user's own mailboxes (INBOX case-insensitive), or a
  **mailbox alias** of the user (``Team`` -> ``~john/Team``), also as a
  prefix (``Team/sub``); an alias pointing at another own name is resolved
  again, loops are refused;
* ``~owner/box``  - a mailbox of ``owner`` in the user's domain;
* ``~owner@domain/box`` - a mailbox of ``owner@domain``;
* ``~owner`` - the owner's mailbox tree as a whole (LIST only).

The owner part is routed like a login name (``auth.login_account``: account
aliases, domain aliases and Router ``Access`` records apply).

Rights (§2): the owner has all of them. Anybody else gets the union of the
ACL entries matching him (``name`` = an account of the owner's domain,
``name@domain``, ``anyone``, ``anyone@`` = the owner's domain,
``anyone@domain``, ``#group`` / ``#group@domain``), minus every matching
negative ``-identifier`` entry (applied last). Administrators get all rights
on the mailboxes in their scope: ``Master``; ``AllDomains`` +
``CanAccessMailboxes`` (every domain); ``Domain`` + ``CanAccessMailboxes``
(their own domain).

Rights are kept as CGP letters (``lrswipcda``). On the IMAP wire (RFC 4314)
``k``/``x`` stand for ``c`` and ``t``/``e`` for ``d``: :func:`to_stored`,
:func:`to_wire`.

Refusals are :class:`~waypost.services.mailaccess.errors.MailboxError` subclasses
carrying the RFC 5530 response ``code``; a mailbox on which the user lacks
``l`` is always reported as missing (:class:`NoSuchMailbox`), never as
forbidden, so its existence is not revealed.

Everything here blocks on the store: call it from a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import waypost.services.mailaccess.errors as errors
from waypost.services import auth
from waypost.services.container import Services
from waypost.services.mailaccess.names import (
    canonical_any,
    check_alias,
    check_name,
    check_rename,
)
from waypost.services.mailstore import split_account
from waypost.services.names import DirectoryError
from waypost.storage.interface import ACL_RIGHTS, MailboxEntry, canonical_mailbox

__all__ = [
    "ALL_RIGHTS", "LISTRIGHTS_OPTIONAL", "WIRE_ALL", "ListEntry", "MailboxAccess", "Opened",
    "Target", "compile_pattern", "parse_rights", "to_stored", "to_wire",
]

ALL_RIGHTS = ACL_RIGHTS  # "lrswipcda"
WIRE_ALL = "lrswipkxcteda"
"""All rights as RFC 4314 writes them (the owner's MYRIGHTS)."""
LISTRIGHTS_OPTIONAL = ("l", "r", "s", "w", "i", "p", "kxc", "ted", "a")
"""LISTRIGHTS for a non-owner: nothing required, these groups optional."""

_TO_STORED = {"l": "l", "r": "r", "s": "s", "w": "w", "i": "i", "p": "p", "a": "a",
              "k": "c", "x": "c", "c": "c", "t": "d", "e": "d", "d": "d"}
_TO_WIRE = {"c": "kxc", "d": "ted"}
RIGHT_NAMES = {"l": "Lookup", "r": "Read", "s": "Seen", "w": "Write", "i": "Insert",
               "p": "Post", "c": "Create", "d": "Delete", "a": "Administer"}
_GROUP_DEPTH = 5


class AliasLoop(errors.NoSuchMailbox):
    pass


# -- rights letters --------------------------------------------------------------


def to_stored(wire: str) -> str:
    """RFC 4314 (or CGP) letters -> CGP letters in canonical order."""
    bad = [ch for ch in wire if ch not in _TO_STORED]
    if bad:
        raise errors.InvalidRights(f"{''.join(bad)!r} is not a right; rights are {WIRE_ALL}")
    letters = {_TO_STORED[ch] for ch in wire}
    return "".join(r for r in ALL_RIGHTS if r in letters)


def to_wire(stored: str) -> str:
    """CGP letters -> RFC 4314 letters (``c`` -> ``kxc``, ``d`` -> ``ted``)."""
    return "".join(_TO_WIRE.get(r, r) for r in ALL_RIGHTS if r in stored)


def parse_rights(text: str) -> tuple[str, str]:
    """A SETACL value -> (mode, CGP letters): ``+lr`` adds, ``-w`` removes, a
    bare value replaces; ``none`` or ``""`` means no rights."""
    text = text.strip()
    mode = "replace"
    if text[:1] in "+-" and text:
        mode = "add" if text[0] == "+" else "remove"
        text = text[1:]
    if text.lower() == "none":
        text = ""
    return mode, to_stored(text)


def _ordered(letters: Iterable[str]) -> str:
    wanted = set(letters)
    return "".join(r for r in ALL_RIGHTS if r in wanted)


# -- LIST patterns -----------------------------------------------------------------


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """An IMAP LIST pattern: ``*`` matches anything, ``%`` anything but ``/``;
    a literal INBOX head matches case-insensitively."""
    if pattern.startswith("~"):
        owner, sep, box = pattern[1:].partition("/")
        pattern = "~" + owner + sep + canonical_mailbox(box)
    else:
        pattern = canonical_mailbox(pattern)
    parts = [".*" if ch == "*" else "[^/]*" if ch == "%" else re.escape(ch) for ch in pattern]
    return re.compile("".join(parts), re.DOTALL)


def _join(reference: str, pattern: str) -> str:
    if not reference or pattern.startswith("~"):
        return pattern
    return reference + pattern


def _parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


# -- results -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """The real mailbox a name means. ``mailbox_name`` ``""``: the owner's
    whole tree (``~owner``). ``is_alias_of``: when the name went through a
    mailbox alias of the user, what that alias stands for (e.g.
    ``~marketing/announce``), else None."""

    owner_domain: str
    owner_account: str
    mailbox_name: str
    is_alias_of: str | None = None

    @property
    def owner(self) -> str:
        return f"{self.owner_account}@{self.owner_domain}"

    @property
    def is_root(self) -> bool:
        return not self.mailbox_name

    @property
    def ref(self) -> tuple[str, str, str]:
        """``(domain, account, mailbox)`` as the ``Store.mail_*`` methods take them."""
        return self.owner_domain, self.owner_account, self.mailbox_name


@dataclass(frozen=True, slots=True)
class Opened:
    """A mailbox a user may open, with his rights (CGP letters). Once
    selected, ``uidvalidity`` pins the incarnation: the service then refuses
    (NoSuchMailbox) to act on a mailbox created or renamed under the same name."""

    name: str  # as the user wrote it
    target: Target
    rights: str
    entry: MailboxEntry
    uidvalidity: int | None = None

    def can(self, right: str) -> bool:
        """``right``: a CGP letter or an RFC 4314 one (``t``, ``e``, ``k``, ``x``)."""
        return _TO_STORED.get(right, right) in self.rights

    @property
    def read_only(self) -> bool:
        """SELECT answers ``[READ-ONLY]`` without any flag-changing right."""
        return not any(r in self.rights for r in "swd")

    @property
    def wire_rights(self) -> str:
        return to_wire(self.rights)

    def flag_right_missing(self, flags: Iterable[str]) -> str | None:
        """The right (CGP letter) missing to change ``flags``, or None:
        ``\\Seen`` needs ``s``, ``\\Deleted`` ``d`` (wire ``t``), others ``w``."""
        for flag in flags:
            need = _flag_right(flag)
            if need not in self.rights:
                return need
        return None

    def permanent_flags(self, keywords: Iterable[str]) -> list[str]:
        """The flags this user may change for good here (RFC 3501 §7.1
        PERMANENTFLAGS): system flags by their rights, and with ``w`` the
        mailbox's ``keywords`` and new ones (``\\*``)."""
        flags = []
        if "w" in self.rights:
            flags += ["\\Answered", "\\Flagged", "\\Draft"]
        if "d" in self.rights:
            flags.append("\\Deleted")
        if "s" in self.rights:
            flags.append("\\Seen")
        if "w" in self.rights:
            flags += [*sorted(keywords), "\\*"]
        return flags

    def permitted_flags(self, flags: Iterable[str]) -> tuple[str, ...]:
        """The flags this user may set (APPEND and COPY drop the others silently)."""
        return tuple(f for f in flags if _flag_right(f) in self.rights)

    def require(self, right: str) -> None:
        _require(self.rights, _TO_STORED.get(right, right), self.name)


def _flag_right(flag: str) -> str:
    lower = flag.lower()
    return "s" if lower == "\\seen" else "d" if lower == "\\deleted" else "w"


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One LIST/LSUB answer line: ``name`` as the user sees it."""

    name: str
    attributes: tuple[str, ...]
    target: Target | None = None


def _require(rights: str, need: str, name: str) -> None:
    """``need``: CGP letters, all required; without ``l`` the mailbox "does not exist"."""
    for right in need:
        if right not in rights:
            if "l" not in rights:
                raise errors.NoSuchMailbox(f"no mailbox {name!r}")
            raise errors.NoPermission(
                right, f"no {RIGHT_NAMES[right]} right ({to_wire(right)}) on {name!r}")


# -- the service ---------------------------------------------------------------------


class MailboxAccess:
    """Names -> mailboxes and rights for authenticated users (``name@domain``)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = services.store
        self.directory = services.directory

    # -- names ---------------------------------------------------------------

    def resolve(self, user: str, name: str) -> Target:
        """The mailbox ``name`` means for ``user``; :class:`NoSuchMailbox` when
        the owner does not exist or mailbox aliases loop. The mailbox itself
        need not exist."""
        domain, account = self._user(user)
        aliases = None if name.startswith("~") else self.store.mail_aliases(domain, account)
        return self._resolve(domain, account, name, aliases or {}, ())

    def _resolve(self, domain: str, account: str, name: str, aliases: Mapping[str, str],
                 seen: tuple[str, ...]) -> Target:
        if not name:
            raise errors.NoSuchMailbox("a mailbox name must not be empty")
        if name.startswith("~"):
            owner, _, box = name[1:].partition("/")
            found = self._account(owner if "@" in owner else f"{owner}@{domain}") if owner else None
            if found is None:
                raise errors.NoSuchMailbox(f"no mailbox {name!r}: no account {owner!r}")
            odomain, oaccount = found
            return Target(odomain, oaccount, canonical_mailbox(box) if box else "")
        name = canonical_mailbox(name)
        for alias in sorted(aliases, key=len, reverse=True):  # the longest alias first
            target = aliases[alias]
            if name == alias or name.startswith(alias + "/"):
                if alias in seen:
                    raise AliasLoop(f"mailbox aliases loop: {' -> '.join((*seen, alias))}")
                real = target + name[len(alias):]
                resolved = self._resolve(domain, account, real, aliases, (*seen, alias))
                return resolved if seen else replace(resolved, is_alias_of=real)
        return Target(domain, account, name)

    # -- rights ---------------------------------------------------------------

    def rights(self, user: str, target: Target, acl: Mapping[str, str] | None = None) -> str:
        """The user's rights (CGP letters) on the target; ``acl`` as read
        already, else read from the store (:class:`NoSuchMailbox` if missing)."""
        if self.privileged(user, target):
            return ALL_RIGHTS
        if target.is_root:
            return ""
        if acl is None:
            acl = self.store.mail_get_acl(*target.ref)
        return self.acl_rights(user, target.owner_domain, acl)

    def privileged(self, user: str, target: Target) -> bool:
        """The owner, or an administrator whose scope covers the owner's domain."""
        domain, account = self._user(user)
        if (domain.lower(), account.lower()) == (target.owner_domain.lower(),
                                                 target.owner_account.lower()):
            return True
        return self.is_admin_for(user, target.owner_domain)

    def is_admin_for(self, user: str, domain: str) -> bool:
        """Master, AllDomains + CanAccessMailboxes, or Domain + CanAccessMailboxes
        of ``domain`` itself (domains-accounts.md §6.2, mailboxes.md §7)."""
        return self.directory.can_access_mailboxes(user, domain)

    def admin_everywhere(self, user: str) -> bool:
        """Master, or AllDomains + CanAccessMailboxes."""
        try:
            rights = set(self.directory.get_rights(user))
        except (errors.NotFound, DirectoryError):
            return False
        return "Master" in rights or {"AllDomains", "CanAccessMailboxes"} <= rights

    def acl_rights(self, user: str, owner_domain: str, acl: Mapping[str, str]) -> str:
        """Union of the matching positive entries minus the matching negative ones."""
        granted: set[str] = set()
        denied: set[str] = set()
        for identifier, letters in acl.items():
            negative = identifier.startswith("-")
            if self.matches(user, owner_domain, identifier[1:] if negative else identifier):
                (denied if negative else granted).update(letters)
        return _ordered(granted - denied)

    def matches(self, user: str, owner_domain: str, identifier: str) -> bool:
        """Does an ACL identifier (without ``-``) name ``user``?"""
        domain, account = self._user(user)
        ident = identifier.strip().lower()
        if ident == "anyone":
            return True
        if ident.startswith("anyone@"):
            other = ident[len("anyone@"):]
            return domain.lower() == (self._domain(other) if other else owner_domain.lower())
        if ident.startswith("#"):
            group = ident[1:] if "@" in ident else f"{ident[1:]}@{owner_domain}"
            return self._in_group(group, (domain.lower(), account.lower()), _GROUP_DEPTH)
        found = self._account(ident if "@" in ident else f"{ident}@{owner_domain}")
        return found is not None and found == (domain.lower(), account.lower())

    def is_owner_identifier(self, identifier: str, target: Target) -> bool:
        ident = identifier.strip()
        if not ident or ident[0] in "-#" or ident.lower().startswith("anyone"):
            return False
        found = self._account(ident if "@" in ident else f"{ident}@{target.owner_domain}")
        return found == (target.owner_domain.lower(), target.owner_account.lower())

    # -- opening -----------------------------------------------------------------

    def open(self, user: str, name: str, need: str = "r") -> Opened:
        """The mailbox ``name`` if the user holds every right in ``need`` (CGP
        or RFC 4314 letters): ``r`` for SELECT/EXAMINE/FETCH, ``i`` for
        APPEND and the COPY/MOVE destination. It must be selectable."""
        target, entry, rights = self._entry(user, name)
        _require(rights, to_stored(need), name)
        if not entry.selectable:
            raise errors.NoSuchMailbox(f"{name!r} only holds other mailboxes (\\Noselect)")
        return Opened(name=name, target=target, rights=rights, entry=entry)

    def my_rights(self, user: str, name: str) -> str:
        """MYRIGHTS (RFC 4314 letters); any right at all is needed to ask."""
        _, _, rights = self._entry(user, name)
        if not rights:
            raise errors.NoSuchMailbox(f"no mailbox {name!r}")
        return to_wire(rights)

    def _entry(self, user: str, name: str) -> tuple[Target, MailboxEntry, str]:
        target = self.resolve(user, name)
        if target.is_root:
            raise errors.NoSuchMailbox(f"{name!r} is a user's mailbox tree, not a mailbox")
        try:
            entry = self.store.mail_folder(*target.ref)
        except errors.NotFound:
            raise errors.NoSuchMailbox(f"no mailbox {name!r}") from None
        rights = self.rights(user, target, entry.acl)
        if not rights:
            raise errors.NoSuchMailbox(f"no mailbox {name!r}")
        return target, entry, rights

    # -- ACL commands (RFC 4314) ----------------------------------------------------

    def get_acl(self, user: str, name: str) -> list[tuple[str, str]]:
        """GETACL: ``(identifier, RFC 4314 rights)``; needs ``a``."""
        _, entry, rights = self._entry(user, name)
        _require(rights, "a", name)
        return [(ident, to_wire(letters)) for ident, letters in entry.acl.items()]

    def set_acl(self, user: str, name: str, identifier: str, rights_text: str) -> str:
        """SETACL (``+``/``-`` modify, bare replace, empty removes); returns the
        identifier's rights now (RFC 4314 letters); needs ``a``."""
        mode, letters = parse_rights(rights_text)
        target, _, rights = self._entry(user, name)
        _require(rights, "a", name)
        return to_wire(self.store.mail_set_acl(*target.ref, identifier, letters, mode))

    def delete_acl(self, user: str, name: str, identifier: str) -> bool:
        target, _, rights = self._entry(user, name)
        _require(rights, "a", name)
        return self.store.mail_delete_acl(*target.ref, identifier)

    def list_rights(self, user: str, name: str, identifier: str) -> tuple[str, tuple[str, ...]]:
        """LISTRIGHTS: (required, optional groups) for ``identifier``; needs ``a``."""
        target, _, rights = self._entry(user, name)
        _require(rights, "a", name)
        if self.is_owner_identifier(identifier, target):
            return WIRE_ALL, ()
        return "", LISTRIGHTS_OPTIONAL

    # -- the mailbox tree ----------------------------------------------------------

    def create(self, user: str, name: str, *, special_use: str | None = None) -> Target:
        """CREATE; in another account it needs ``c`` (``k``) on the parent.
        ``name/`` creates only the directory entity."""
        directory_only = name.endswith("/") and len(name) > 1
        target = self.resolve(user, name[:-1] if directory_only else name)
        if target.is_root:
            raise errors.InvalidMailboxName(f"{name!r} names a user, not a mailbox")
        if not self.privileged(user, target):
            self._parent_needs(user, target, name)
        box = check_name(target.mailbox_name) + ("/" if directory_only else "")
        self.store.mail_create_mailbox(target.owner_domain, target.owner_account, box,
                                       special_use=special_use)
        return target

    def delete(self, user: str, name: str) -> None:
        """DELETE; in another account: ``d`` or ``a`` on the mailbox and ``c`` on
        its parent (mailboxes.md §2.1)."""
        target = self.resolve(user, name)
        if target.is_root:
            raise errors.CannotDelete(f"{name!r} is a user's mailbox tree, not a mailbox")
        if not self.privileged(user, target):
            self._may_remove(user, target, name)
        self.store.mail_delete_mailbox(*target.ref)

    def rename(self, user: str, old: str, new: str) -> Target:
        """RENAME within one account; elsewhere: delete rights on ``old``, ``c``
        on the new parent."""
        source = self.resolve(user, old)
        dest = self.resolve(user, new)
        if source.is_root or dest.is_root:
            raise errors.InvalidMailboxName("a user's mailbox tree cannot be renamed")
        if source.owner.lower() != dest.owner.lower():
            raise errors.MailboxError(f"cannot move {old!r} to another account ({new!r})")
        if not self.privileged(user, source):
            self._may_remove(user, source, old)
            self._parent_needs(user, dest, new)
        new_name = check_rename(source.mailbox_name, dest.mailbox_name)
        self.store.mail_rename_mailbox(source.owner_domain, source.owner_account,
                                       source.mailbox_name, new_name)
        return dest

    def _may_remove(self, user: str, target: Target, name: str) -> None:
        _, _, rights = self._entry(user, name)
        if "d" not in rights and "a" not in rights:
            _require(rights, "d", name)
        self._parent_needs(user, target, name)

    def _parent_needs(self, user: str, target: Target, name: str) -> None:
        parent = target.mailbox_name.rpartition("/")[0]
        if not parent:
            raise errors.NoPermission("c", f"only the owner creates and removes top-level mailboxes"
                                    f" of {target.owner}")
        try:
            acl = self.store.mail_get_acl(target.owner_domain, target.owner_account, parent)
        except errors.NotFound:
            raise errors.NoSuchMailbox(f"the parent of {name!r} does not exist") from None
        rights = self.acl_rights(user, target.owner_domain, acl)
        _require(rights, "c", name.rstrip("/").rpartition("/")[0] or name)

    # -- LIST ----------------------------------------------------------------------

    def list_visible(self, user: str, reference: str, pattern: str) -> list[ListEntry]:
        """LIST: the user's own mailboxes and mailbox aliases for plain
        patterns; other users' mailboxes he may look up (``l``) for ``~``
        patterns (everything, for administrators in scope). A level the
        pattern matches that only leads to visible mailboxes comes as
        ``\\Noselect``."""
        full = _join(reference, pattern)
        if not full:  # the hierarchy delimiter and root
            return [ListEntry("", ("\\Noselect",))]
        matcher = compile_pattern(full)
        candidates = self._foreign(user, full) if full.startswith("~") else self._own(user)
        return _matching(candidates, matcher, synthesize="%" in full)

    def _own(self, user: str) -> list[ListEntry]:
        domain, account = self._user(user)
        entries = [ListEntry(e.name, e.attributes(), Target(domain, account, e.name))
                   for e in self.store.mail_folders(domain, account)]
        aliases = self.store.mail_aliases(domain, account)
        trees: dict[tuple[str, str], list[MailboxEntry]] = {}
        for alias in aliases:
            try:
                target = self._resolve(domain, account, alias, aliases, ())
            except errors.NoSuchMailbox:
                continue
            key = (target.owner_domain, target.owner_account)
            if key not in trees:
                try:
                    trees[key] = self.store.mail_folders(*key)
                except errors.NotFound:
                    trees[key] = []
            visible = self._visible(user, target, trees[key])
            for entry in visible:
                if entry.name == target.mailbox_name:
                    shown = alias
                elif entry.name.startswith(target.mailbox_name + "/"):
                    shown = alias + entry.name[len(target.mailbox_name):]
                else:
                    continue
                entries.append(ListEntry(shown, entry.attributes(),
                                         replace(target, mailbox_name=entry.name)))
        return entries

    def _foreign(self, user: str, pattern: str) -> list[ListEntry]:
        domain, account = self._user(user)
        owner_pattern = pattern[1:].partition("/")[0]
        if not any(ch in owner_pattern for ch in "*%"):
            try:
                target = self.resolve(user, "~" + owner_pattern)
                tree = self.store.mail_folders(target.owner_domain, target.owner_account)
            except errors.NotFound:
                return []
            return [ListEntry(f"~{owner_pattern}/{e.name}", e.attributes(),
                              replace(target, mailbox_name=e.name))
                    for e in self._visible(user, target, tree)]
        # a wildcard in the owner part: every account (of the user's domain unless
        # the pattern names domains) that shares something with the user
        _, at, domain_part = owner_pattern.partition("@")
        if not at:
            domains: list[str | None] = [domain]
        elif any(ch in domain_part for ch in "*%"):
            domains = [None]
        else:
            real = self._domain(domain_part)
            domains = [real] if real else []
        batches = []
        for wanted in domains:
            if wanted is None:
                everywhere = self.admin_everywhere(user)
                batches.append(self.store.mail_domain_folders(None, shared_only=not everywhere))
                if not everywhere and self.is_admin_for(user, domain):
                    batches.append(self.store.mail_domain_folders(domain, shared_only=False))
            else:
                batches.append(self.store.mail_domain_folders(
                    wanted, shared_only=not self.is_admin_for(user, wanted)))
        trees: dict[tuple[str, str], dict[str, MailboxEntry]] = {}
        for batch in batches:
            for odomain, oaccount, entry in batch:
                if (odomain.lower(), oaccount.lower()) == (domain.lower(), account.lower()):
                    continue  # one's own mailboxes are not "other users'"
                trees.setdefault((odomain.lower(), oaccount.lower()), {})[entry.name] = entry
        result = []
        for (odomain, oaccount), folders in trees.items():
            target = Target(odomain, oaccount, "")
            shown = f"~{oaccount}@{odomain}" if at else f"~{oaccount}"
            result += [ListEntry(f"{shown}/{e.name}", e.attributes(),
                                 replace(target, mailbox_name=e.name))
                       for e in self._visible(user, target, list(folders.values()))]
        return result

    def _visible(self, user: str, target: Target, tree: list[MailboxEntry]) -> list[MailboxEntry]:
        """The entries the user may look up, \\HasChildren counting only those."""
        if self.privileged(user, target):
            return tree
        shown = [e for e in tree if "l" in self.acl_rights(user, target.owner_domain, e.acl)]
        parents = {p for e in shown for p in _parents(e.name)}
        return [replace(e, has_children=e.name in parents) for e in shown]

    # -- subscriptions -----------------------------------------------------------------

    def subscriptions(self, user: str) -> list[str]:
        return self.store.mail_subscriptions(*self._user(user))

    def subscribe(self, user: str, name: str) -> None:
        """SUBSCRIBE: any name, foreign ones too; the mailbox need not exist."""
        self.store.mail_subscribe(*self._user(user), canonical_any(name))

    def unsubscribe(self, user: str, name: str) -> bool:
        return self.store.mail_unsubscribe(*self._user(user), name)

    def list_subscribed(self, user: str, reference: str, pattern: str, *,
                        extended: bool = False) -> list[ListEntry]:
        """LSUB, or with ``extended`` LIST (SUBSCRIBED): the subscribed names the
        pattern matches, with the attributes of the mailbox now; a name that is
        gone (or not visible to the user) is ``\\Noselect`` (LSUB) or
        ``\\NonExistent`` (LIST-EXTENDED); extended entries carry ``\\Subscribed``."""
        full = _join(reference, pattern)
        if not full:
            return [ListEntry("", ("\\Noselect",))]
        matcher = compile_pattern(full)
        domain, account = self._user(user)
        aliases = self.store.mail_aliases(domain, account)
        trees: dict[str, dict[str, MailboxEntry]] = {}  # owner -> names he lets the user see
        entries = []
        for name in self.subscriptions(user):
            entry: MailboxEntry | None = None
            target: Target | None = None
            try:
                target = self._resolve(domain, account, name, aliases, ())
                if target.owner.lower() not in trees:
                    tree = self.store.mail_folders(target.owner_domain, target.owner_account)
                    trees[target.owner.lower()] = {e.name: e for e in self._visible(
                        user, replace(target, mailbox_name=""), tree)}
                entry = trees[target.owner.lower()].get(target.mailbox_name)
            except (errors.NotFound, errors.StoreError):
                entry = None
            if entry is not None:
                attrs = entry.attributes()
            else:
                attrs = ("\\NonExistent",) if extended else ("\\Noselect",)
            if extended:
                attrs = (*attrs, "\\Subscribed")
            entries.append(ListEntry(name, attrs, target if entry is not None else None))
        return _matching(entries, matcher, synthesize="%" in full and not extended)

    # -- mailbox aliases -----------------------------------------------------------

    def aliases(self, user: str) -> dict[str, str]:
        return self.store.mail_aliases(*self._user(user))

    def set_alias(self, user: str, alias: str, target: str) -> None:
        """Define (or change) a mailbox alias; refused when it would loop."""
        domain, account = self._user(user)
        aliases = {**self.store.mail_aliases(domain, account), canonical_mailbox(alias): target}
        try:
            self._resolve(domain, account, alias, aliases, ())
        except AliasLoop as exc:
            raise errors.InvalidMailboxName(str(exc)) from None
        except errors.NoSuchMailbox:
            pass  # the target may be created later
        alias, target = check_alias(alias, target)
        self.store.mail_set_alias(domain, account, alias, target)

    def remove_alias(self, user: str, alias: str) -> None:
        self.store.mail_set_alias(*self._user(user), alias, None)

    # -- helpers -----------------------------------------------------------------------

    def _user(self, user: str) -> tuple[str, str]:
        return split_account(user)

    def _account(self, login: str) -> tuple[str, str] | None:
        """(domain, account) lower-case of a login-like name, or None."""
        try:
            found = auth.login_account(self.services, login)
        except (ValueError, errors.StoreError, DirectoryError):
            return None
        if found is None:
            return None
        domain, account = split_account(found)
        return domain.lower(), account.lower()

    def _domain(self, name: str) -> str | None:
        try:
            return self.directory.get_domain(name).name.lower()
        except (errors.NotFound, DirectoryError):
            return None

    def _in_group(self, group: str, who: tuple[str, str], depth: int) -> bool:
        try:
            members = self.directory.group_members(group)
        except (errors.NotFound, DirectoryError):
            return False
        group_domain = group.rpartition("@")[2]
        for member in members:
            address = member if "@" in member else f"{member}@{group_domain}"
            if self._account(address) == who:
                return True
            if depth > 0 and self._in_group(address, who, depth - 1):
                return True
        return False


def _matching(entries: list[ListEntry], matcher: re.Pattern[str], *,
              synthesize: bool) -> list[ListEntry]:
    """The entries the pattern matches, plus the levels above visible names that
    it matches but that are not names themselves (RFC 3501 ``%`` rule), as
    ``\\Noselect \\HasChildren``."""
    by_name: dict[str, ListEntry] = {}
    for entry in entries:
        if matcher.fullmatch(entry.name) and entry.name not in by_name:
            by_name[entry.name] = entry
    if synthesize:
        known = {e.name for e in entries}
        for entry in entries:
            for parent in _parents(entry.name):
                if parent not in known and parent not in by_name and matcher.fullmatch(parent):
                    by_name[parent] = ListEntry(parent, ("\\Noselect", "\\HasChildren"))
    return sorted(by_name.values(), key=lambda e: _sort_key(e.name))


def _sort_key(name: str) -> tuple[int, str]:
    return (0 if name == "INBOX" or name.startswith("INBOX/") else 1, name)
