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

Checks [waypost]: ``SentBox`` is empty or a valid own mailbox name
(``mailaccess/names.py``; it need not exist yet); ``Skin`` is a valid skin
name, and :func:`set_prefs` also refuses a skin the account's domain does not
have (:func:`available_skins`). A stored skin that has gone since is not an
error: :func:`session_skin` falls back to the unnamed skin.

The skin of a WebUser session (web.md §5.3 last sentence: "the account/domain
preference (``Skin``), else the domain default, else unnamed") [waypost]: the
account's ``Skin`` preference when the domain still offers that skin, else
the unnamed one. There is no domain-level ``Skin``/``WebUserSkin`` setting
yet (``settings.py`` and the domain settings have none), so the middle step
is absent until one exists.

Everything blocks on the store: call from a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from waypost.services.container import Services
from waypost.services.mailaccess.errors import InvalidMailboxName
from waypost.services.mailaccess.names import check_name
from waypost.services.mailstore import split_account
from waypost.services.skins import SkinError, Skins, check_skin_name

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
    if name == "SentBox" and value:
        try:
            value = check_name(value)
        except InvalidMailboxName as exc:
            raise PreferenceError(f"SentBox: {exc}") from None
    if name == "Skin":
        try:
            check_skin_name(value)
        except SkinError as exc:
            raise PreferenceError(f"Skin: {exc}") from None
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


def stored_prefs(services: Services, account: str) -> dict[str, str]:
    """The known preferences stored on the account itself (valid or not), as text."""
    return {name: str(value) for name, value in services.directory.account_prefs(account).items()
            if name in DEFAULTS}


def set_prefs(services: Services, account: str, changes: Mapping[str, str]) -> dict[str, Any]:
    """Check and store ``changes`` (``default`` removes one); all or nothing.
    A ``Skin`` must be one the account's domain offers (:func:`available_skins`)."""
    checked = {name: (value if value == "default" else check(name, value))
               for name, value in changes.items()}
    skin = checked.get("Skin")
    if skin not in (None, "default", ""):
        domain = services.directory.get_account(account).domain
        if skin not in available_skins(services, domain):
            raise PreferenceError(f"Skin: domain {domain} has no skin {skin!r}")
    return services.directory.set_account_prefs(account, checked)


def available_skins(services: Services, domain: str) -> list[str]:
    """The skins a session in ``domain`` can use (web.md §5.3): ``""`` (the
    unnamed one) first, then the named skins of the domain, the server and
    the package, sorted."""
    skins = Skins(services.data_dir, directory=services.directory)
    named: set[str] = set()
    for level in (domain, None):
        try:
            named.update(skins.list_skins(level))
        except SkinError:
            continue  # a domain that is gone: its level has no skins
    named.update(skins.stock_skins())
    named.discard("")
    return ["", *sorted(named)]


def session_skin(services: Services, account: str) -> str:
    """The skin of a new WebUser session of ``account`` (see the module
    docstring): its ``Skin`` preference if the domain offers it, else ``""``.
    Never raises for a bad or vanished skin."""
    skin = web_prefs(services, account).skin
    if not skin:
        return ""
    domain = split_account(account)[0]
    return skin if skin in available_skins(services, domain) else ""
