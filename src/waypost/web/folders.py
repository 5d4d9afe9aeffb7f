"""The datasets and mailbox operations of the Mailboxes pages (issue 10
points 6 and 7): the mailbox list, one mailbox's settings (rename, delete,
subscribe, the user's own rights) and its access rights editor, built from
:class:`MailAccess` results only.

Invariants:

* every function blocks on the store: call it in the web module's worker
  pool, never on the event loop;
* every mailbox name and ACL identifier put into a dataset is HTML-escaped
  here (web.md §4.3 pitfall: skins print plain ``%%x%%`` raw), with a
  URL-encoded twin (``...URL``) where a link or query needs it;
* rights are the service's (mailboxes.md §2, ``rights.py``): nothing here
  decides who may do what; the ACL is read and written only through
  ``get_acl``/``set_acl``/``delete_acl``, which need ``a`` (or ownership);
* ACL rights are shown as CGP letters (``lrswipcda``, mailboxes.md §2.1);
  the service speaks RFC 4314 (``k``/``x`` stand for ``c``, ``t``/``e``
  for ``d``, §2.3), so letters are mapped back with ``to_stored``.

Choices [waypost]:

* the list follows the preferences (``services/preferences.py``):
  ``MailboxList`` ``all`` lists the account's own mailboxes and its mailbox
  aliases, ``subscribed`` the subscription list only; with ``all``,
  ``ShowSubscribed`` ``yes`` appends every subscribed mailbox not listed
  yet (foreign ones such as ``~marketing/announce``);
* order: the INBOX tree, then the other own names (and aliases), then
  foreign names, each by hierarchy level (``A``, ``A/B``, ``A B``); a name
  is indented below its parent when the parent is listed, and shown whole
  when it is not;
* deleting a mailbox that has sub-mailboxes keeps them (RFC 3501: its
  messages go and the name stays as ``\\Noselect``) unless the user asked
  for them too; then they go one by one, deepest first, each through the
  service with its own rights check, and the mailbox last (not atomic: a
  refusal half-way leaves what was not deleted yet);
* a new mailbox is ``Parent/Name`` when a parent is chosen, else ``Name``
  (which may itself hold ``/`` levels); surrounding blanks are dropped.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

from waypost.services.mailaccess.errors import CannotDelete, MailboxError
from waypost.services.mailaccess.rights import ALL_RIGHTS, RIGHT_NAMES, to_stored
from waypost.services.mailaccess.service import Listed, MailAccess
from waypost.services.preferences import WebPrefs, web_prefs
from waypost.storage.interface import INBOX, canonical_mailbox

STATUS = ("MESSAGES", "UNSEEN")
MAX_NAME = 1000
"""Characters of a mailbox name a form may carry (the service limits bytes)."""
MAX_IDENTIFIER = 256
DONE = ("created", "renamed", "deleted", "subscribed", "unsubscribed", "rightsSaved",
        "rightsRemoved")
"""The result codes a page shows after a successful action (never free text)."""


class BadRequest(ValueError):
    """A parameter the pages cannot use (answered with 400)."""


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def check_mailbox(name: str | None) -> str:
    """Refuse what no mailbox name is (empty, control characters, too long);
    the service checks the rest (``names.py``)."""
    if not name or len(name) > MAX_NAME or any(ord(c) < 32 or c == "\x7f" for c in name):
        raise BadRequest("bad mailbox name")
    return name


def done_code(value: str | None) -> str:
    """The ``Done`` parameter if it is one of :data:`DONE`, else ""."""
    return value if value in DONE else ""


# -- the mailbox list ----------------------------------------------------------------


def _group(name: str) -> int:
    if name == INBOX or name.startswith(INBOX + "/"):
        return 0
    return 2 if name.startswith("~") else 1


def _sort_key(name: str) -> tuple[int, tuple[str, ...]]:
    return _group(name), tuple(name.split("/"))


def _listing(mail: MailAccess, account: str, prefs: WebPrefs) -> list[Listed]:
    if prefs.mailbox_list == "subscribed":
        return mail.list_mailboxes(account, "", ["*"], select=("SUBSCRIBED",), status=STATUS)
    own = mail.list_mailboxes(account, "", ["*"], returns=("SUBSCRIBED",), status=STATUS)
    if not prefs.show_subscribed:
        return own
    names = {entry.name for entry in own}
    # then the subscribed names not listed yet (foreign ones, mostly)
    return own + [entry for entry in mail.list_mailboxes(
        account, "", ["*"], select=("SUBSCRIBED",), status=STATUS) if entry.name not in names]


def _alias_of(name: str, aliases: dict[str, str]) -> tuple[str, str] | None:
    """(alias, what the name stands for) when ``name`` goes through an alias."""
    if name.startswith("~"):
        return None
    for alias in sorted(aliases, key=len, reverse=True):
        if name == alias or name.startswith(alias + "/"):
            return alias, aliases[alias] + name[len(alias):]
    return None


def _may_administer(mail: MailAccess, account: str, name: str, own: bool) -> bool:
    """Owner, or ``a`` on the mailbox (mailboxes.md §2.1)."""
    if own:
        return True
    try:
        return "a" in mail.my_rights(account, name)
    except MailboxError:
        return False


def mailbox_rows(mail: MailAccess, account: str) -> list[dict[str, Any]]:
    """The Mailboxes page's rows, as the account's preferences ask."""
    prefs = web_prefs(mail.services, account)
    entries = _listing(mail, account, prefs)
    aliases = mail.access.aliases(account)
    levels: dict[str, int] = {}
    rows = []
    for entry in sorted(entries, key=lambda e: _sort_key(e.name)):
        if not entry.name or entry.name in levels:
            continue
        parent = entry.name.rpartition("/")[0]
        if parent in levels:
            level, label = levels[parent] + 1, entry.name[len(parent) + 1:]
        else:
            level, label = 0, entry.name
        levels[entry.name] = level
        missing = "\\NonExistent" in entry.attributes  # a subscription to nothing (now)
        selectable = "\\Noselect" not in entry.attributes and not missing
        alias = _alias_of(entry.name, aliases)
        own = alias is None and not entry.name.startswith("~")
        values = dict(entry.status) if entry.status is not None else None
        rows.append({
            "name": esc(entry.name),
            "nameURL": quote(entry.name),
            "label": esc(label),
            "level": level,
            "selectable": selectable,
            "missing": missing,
            "hasStatus": values is not None,
            "messages": (values or {}).get("MESSAGES", 0),
            "unseen": (values or {}).get("UNSEEN", 0),
            "subscribed": "\\Subscribed" in entry.attributes,
            "alias": alias is not None,
            "aliasTarget": esc(alias[1]) if alias else "",
            "foreign": entry.name.startswith("~"),
            "canAdminister": not missing and _may_administer(mail, account, entry.name, own),
        })
    return rows


def storage(mail: MailAccess, account: str) -> dict[str, Any]:
    """The account's mail storage for the Mailboxes page (RFC 9208 units,
    KB: ``storageUsed``, ``storageLimit``); nothing when unlimited."""
    try:
        _, quotas = mail.quota_root(account, "INBOX")
    except MailboxError:
        return {}
    if not quotas:
        return {}
    ((_, used, limit),) = quotas[0].resources
    return {"storageUsed": used, "storageLimit": limit}


def parent_choices(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where a new mailbox may go: below any listed name (the service decides
    whether the user may create there)."""
    return [{"name": row["name"]} for row in rows if not row["missing"]]


# -- one mailbox ---------------------------------------------------------------------


def _right_rows(letters: str) -> list[dict[str, Any]]:
    return [{"letter": r, "name": RIGHT_NAMES[r], "held": r in letters} for r in ALL_RIGHTS]


def _sub_mailboxes(mail: MailAccess, account: str, name: str) -> list[str]:
    """The names below ``name`` the user can see (deepest first)."""
    found = mail.list_mailboxes(account, "", [name + "/*"])
    below = [e.name for e in found if e.name.startswith(name + "/")]
    return sorted(below, key=lambda n: (-n.count("/"), n))


def mailbox_settings(mail: MailAccess, account: str, name: str) -> dict[str, Any]:
    """``MailboxSettings.wssp``: the mailbox, its counters (with ``r``), its
    sub-mailboxes, whether subscribed, and the user's own rights (MYRIGHTS);
    a mailbox the user has no right on raises the service's error."""
    mine = to_stored(mail.my_rights(account, name))
    values: dict[str, int | None] | None = None
    if "r" in mine:
        try:
            values = dict(mail.status(account, name, STATUS))
        except MailboxError:
            values = None  # \Noselect: no messages of its own
    children = _sub_mailboxes(mail, account, name)
    target = mail.access.resolve(account, name)
    subscribed = canonical_mailbox(name) in {canonical_mailbox(s) for s in
                                             mail.subscriptions(account)}
    return {
        "mailbox": esc(name),
        "mailboxURL": quote(name),
        "hasStatus": values is not None,
        "messages": (values or {}).get("MESSAGES", 0),
        "unseen": (values or {}).get("UNSEEN", 0),
        "subMailboxes": [{"name": esc(child)} for child in sorted(children)],
        "subMailboxCount": len(children),
        "subscribed": subscribed,
        "isInbox": not name.startswith("~") and target.mailbox_name == INBOX
                   and target.is_alias_of is None,
        "owner": esc(target.owner),
        "myRights": mine,
        "myRightList": _right_rows(mine),
        "canAdminister": "a" in mine,
    }


def create_name(name: str, parent: str) -> str:
    """The full name of a new mailbox: ``Parent/Name`` or ``Name``."""
    name, parent = name.strip(), parent.strip()
    if not name:
        raise BadRequest("Give the new mailbox a name.")
    full = f"{parent.rstrip('/')}/{name}" if parent else name
    return check_mailbox(full)


def delete_mailbox(mail: MailAccess, account: str, name: str, *, recursive: bool) -> int:
    """Delete ``name``; with ``recursive`` its sub-mailboxes first (deepest
    first, each through the service). Returns how many names went."""
    target = mail.access.resolve(account, name)
    if target.mailbox_name == INBOX:
        raise CannotDelete("INBOX cannot be deleted")
    children = _sub_mailboxes(mail, account, name) if recursive else []
    for child in children:
        mail.delete(account, child)
    mail.delete(account, name)
    return len(children) + 1


# -- the access rights editor --------------------------------------------------------


def rights_dataset(mail: MailAccess, account: str, name: str) -> dict[str, Any]:
    """``MailboxRights.wssp``: the ACL as a table of CGP letters; GETACL needs
    ``a`` (the owner has it), so anyone else gets the service's refusal."""
    acl = mail.get_acl(account, name)
    mine = to_stored(mail.my_rights(account, name))
    target = mail.access.resolve(account, name)
    rows = []
    for n, (identifier, wire) in enumerate(sorted(acl, key=lambda item: item[0].lower())):
        letters = to_stored(wire)
        rows.append({
            "identifier": esc(identifier),
            "formId": f"acl{n}",
            "negative": identifier.startswith("-"),
            "rights": letters,
            "rightList": _right_rows(letters),
        })
    return {
        "mailbox": esc(name),
        "mailboxURL": quote(name),
        "owner": esc(target.owner),
        "acl": rows,
        "rightNames": _right_rows(""),
        "myRights": mine,
        "myRightList": _right_rows(mine),
    }


def check_identifier(text: str) -> str:
    """An ACL identifier as typed (mailboxes.md §2.2); the store checks the rest."""
    text = text.strip()
    if not text or len(text) > MAX_IDENTIFIER or any(c.isspace() or ord(c) < 32 or c == "\x7f"
                                                      for c in text):
        raise BadRequest("An identifier is an account name, name@domain, anyone, anyone@, "
                         "anyone@domain or #group, optionally with - in front, without blanks.")
    return text


def rights_letters(values: Sequence[str]) -> str:
    """Checked boxes -> CGP letters in canonical order."""
    bad = [v for v in values if v not in ALL_RIGHTS or len(v) != 1]
    if bad:
        raise BadRequest(f"rights are the letters {ALL_RIGHTS}")
    return "".join(r for r in ALL_RIGHTS if r in values)
