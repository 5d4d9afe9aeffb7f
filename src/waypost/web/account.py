"""The datasets and checks of the account's own pages (issue 10 point 7):
subscriptions and Open Mailbox, mailbox aliases, preferences, the password.

Invariants:

* every value taken from a mailbox name, an alias, a preference or a skin
  name is HTML-escaped here (web.md §4.3 pitfall: skins print ``%%x%%``
  raw), with a URL-encoded twin (``...URL``) where a link or a form needs it;
* a result shown after a redirect is a code from a fixed set
  (:data:`DONE_CODES`), never text taken from the request; the skin maps
  the code to words;
* functions that take a :class:`MailAccess` or :class:`Services` block on
  the store: call them in the web module's worker pool, never on the loop;
* the names accepted for a subscription follow the service's rules
  (``mailaccess/names.py``): an own name must pass ``check_name``, a
  foreign one is ``~owner/name`` whose mailbox part passes it too
  (mailboxes.md §3-§4); the mailbox need not exist.

Choices [waypost]: a new password needs at least :data:`MIN_PASSWORD`
characters (there is no setting for it); the two new entries must be equal.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Mapping
from typing import Any

from waypost.services.container import Services
from waypost.services.mailaccess.errors import InvalidMailboxName
from waypost.services.mailaccess.names import check_name
from waypost.services.mailaccess.service import MailAccess
from waypost.services.preferences import (
    CHOICES,
    DEFAULTS,
    available_skins,
    effective,
    stored_prefs,
)

DONE_CODES = frozenset({
    "subscribed", "unsubscribed", "aliasSaved", "aliasRemoved", "prefsSaved",
    "passwordChanged",
})
"""What ``Done=`` may say after a successful action (Post/Redirect/Get)."""

MIN_PASSWORD = 8
"""[waypost] The shortest new password accepted (no setting exists for it)."""
MAX_PASSWORD = 1024

MAILBOX_LIST_LABELS = {"all": "All my mailboxes and aliases",
                       "subscribed": "Subscribed mailboxes only"}


class PasswordRefused(ValueError):
    """A new password the page refuses; ``code`` is what the skin shows."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def done_code(query: Mapping[str, str]) -> dict[str, str]:
    """``{"doneCode": code}`` when the query's ``Done`` is a known code, else ``{}``."""
    code = query.get("Done", "")
    return {"doneCode": code} if code in DONE_CODES else {}


# -- subscriptions (mailboxes.md §4) -------------------------------------------------------


def check_subscription(name: str) -> str:
    """A name to subscribe to, canonical; :class:`InvalidMailboxName` if it is
    not a mailbox name (own, or ``~owner/name`` / ``~owner@domain/name``)."""
    name = name.strip()
    if not name.startswith("~"):
        return check_name(name)
    owner, slash, box = name[1:].partition("/")
    if not owner or not slash:
        raise InvalidMailboxName(
            "a mailbox of another account is written ~owner/mailbox")
    if any(c in "*%~" or ord(c) < 0x20 or ord(c) == 0x7F for c in owner):
        raise InvalidMailboxName(f"{owner!r} is not an account name")
    return f"~{owner}/{check_name(box)}"


def subscription_rows(mail: MailAccess, user: str) -> list[dict[str, str]]:
    """The subscription list as stored, each name escaped, with its URL twin."""
    return [{"name": esc(name), "nameURL": quote(name)} for name in mail.subscriptions(user)]


# -- mailbox aliases (mailboxes.md §5) ------------------------------------------------------


def alias_rows(mail: MailAccess, user: str) -> list[dict[str, str]]:
    """The account's mailbox aliases, sorted by alias name, escaped."""
    aliases = mail.aliases(user)
    return [{"alias": esc(alias), "aliasURL": quote(alias),
             "target": esc(target), "targetURL": quote(target)}
            for alias, target in sorted(aliases.items(), key=lambda item: item[0].lower())]


# -- preferences ---------------------------------------------------------------------------


def settings_dataset(services: Services, account: str, domain: str) -> dict[str, Any]:
    """The Settings page: the effective preferences (those not stored on the
    account flagged ``...Default``) and the choices of each ``<select>``."""
    stored = stored_prefs(services, account)
    values = effective(stored)
    dataset: dict[str, Any] = {
        "mailboxListOptions": [
            {"value": value, "label": MAILBOX_LIST_LABELS[value],
             "selected": value == values["MailboxList"]}
            for value in CHOICES["MailboxList"]],
        "showSubscribed": values["ShowSubscribed"] == "yes",
        "sentBox": esc(values["SentBox"]),
        "messagesPerPage": esc(values["MessagesPerPage"]),
        "skins": [{"name": esc(skin), "label": esc(skin) if skin else "Default",
                   "selected": skin == values["Skin"]}
                  for skin in available_skins(services, domain)],
    }
    for name in DEFAULTS:
        if name not in stored:
            dataset[f"{name[0].lower()}{name[1:]}Default"] = True
    return dataset


def prefs_from_form(fields: Mapping[str, str]) -> dict[str, str]:
    """The preference changes a Settings form asks for: every field present,
    ``ShowSubscribed`` from its checkbox (absent = ``no``)."""
    changes = {name: fields[name] for name in ("MailboxList", "SentBox", "MessagesPerPage",
                                               "Skin") if name in fields}
    changes["ShowSubscribed"] = "yes" if fields.get("ShowSubscribed") else "no"
    return changes


# -- the password -------------------------------------------------------------------------


def check_new_password(new: str, again: str) -> str:
    """The new password if acceptable, else :class:`PasswordRefused`."""
    if not new:
        raise PasswordRefused("passwordEmpty", "the new password must not be empty")
    if new != again:
        raise PasswordRefused("passwordsDiffer", "the two new passwords differ")
    if len(new) < MIN_PASSWORD:
        raise PasswordRefused("passwordTooShort",
                              f"the new password must have at least {MIN_PASSWORD} characters")
    if len(new) > MAX_PASSWORD or any(ord(c) < 0x20 or ord(c) == 0x7F for c in new):
        raise PasswordRefused("passwordInvalid",
                              "the new password is too long or has control characters")
    return new
