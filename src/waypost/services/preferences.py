"""Account Preferences the WebUser interface reads and writes (CGP's
``GetAccountPrefs``/``SetAccountPrefs``): the user's own choices, stored in
the account's ``Prefs`` and never needed to deliver mail (rules may test
them through ``Preference``, ``rules/book.py``).

Known preferences, their defaults and their values [waypost names follow
CGP's where CGP has one]:

* ``MailboxList`` -- which mailboxes the Mailboxes page lists: ``all`` (the
  account's own mailboxes and its mailbox aliases) or ``subscribed`` (the
  subscription list only, foreign names included);
* ``ShowSubscribed`` -- "Show All Subscribed Mailboxes" (How To, foreign
  mailboxes): with ``yes`` the page also lists every subscribed mailbox,
  foreign ones included, after the account's own; default ``yes``;
* ``SentBox`` -- where sent messages are saved (``Sent``; empty: not saved);
* ``MessagesPerPage`` -- the message list's page size (``50``, 10 to 500);
* ``Skin`` -- the WebUser skin of the account's sessions ("" the unnamed one);
* ``RealName`` is a Setting, not a preference (the From of composed mail).

Everything blocks on the store: call from a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from waypost.services.container import Services

DEFAULTS: dict[str, str] = {
    "MailboxList": "all",
    "ShowSubscribed": "yes",
    "SentBox": "Sent",
    "MessagesPerPage": "50",
    "Skin": "",
}
CHOICES: dict[str, tuple[str, ...]] = {
    "MailboxList": ("all", "subscribed"),
    "ShowSubscribed": ("yes", "no"),
}


class PreferenceError(ValueError):
    """A preference name or value that is not accepted."""


@dataclass(frozen=True, slots=True)
class WebPrefs:
    """The effective WebUser preferences of one account."""

    mailbox_list: str = "all"
    show_subscribed: bool = True
    sent_box: str = "Sent"
    messages_per_page: int = 50
    skin: str = ""


def check(name: str, value: str) -> str:
    """``value`` as stored for ``name``; :class:`PreferenceError` when wrong."""
    if name not in DEFAULTS:
        raise PreferenceError(f"unknown preference {name!r} (known: {', '.join(DEFAULTS)})")
    value = value.strip()
    if name in CHOICES and value.lower() not in CHOICES[name]:
        raise PreferenceError(f"{name} must be one of {', '.join(CHOICES[name])}")
    if name in CHOICES:
        return value.lower()
    if name == "MessagesPerPage" and not (value.isdigit() and 10 <= int(value) <= 500):
        raise PreferenceError("MessagesPerPage must be a number from 10 to 500")
    if any(ord(c) < 32 or c == "\x7f" for c in value) or len(value) > 255:
        raise PreferenceError(f"{name} has characters that are not allowed")
    return value


def effective(stored: Mapping[str, Any]) -> dict[str, str]:
    """Defaults overlaid with the stored values that are still valid."""
    out = dict(DEFAULTS)
    for name, value in stored.items():
        if name in DEFAULTS and isinstance(value, str):
            try:
                out[name] = check(name, value)
            except PreferenceError:
                continue
    return out


def web_prefs(services: Services, account: str) -> WebPrefs:
    """The account's effective WebUser preferences."""
    values = effective(services.directory.account_prefs(account))
    return WebPrefs(
        mailbox_list=values["MailboxList"],
        show_subscribed=values["ShowSubscribed"] == "yes",
        sent_box=values["SentBox"],
        messages_per_page=int(values["MessagesPerPage"]),
        skin=values["Skin"],
    )


def set_prefs(services: Services, account: str, changes: Mapping[str, str]) -> dict[str, Any]:
    """Check and store ``changes`` (``default`` removes one); all or nothing."""
    checked = {name: (value if value == "default" else check(name, value))
               for name, value in changes.items()}
    return services.directory.set_account_prefs(account, checked)
