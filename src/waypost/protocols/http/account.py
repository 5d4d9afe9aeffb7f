"""The account's own settings pages (issue 10 point 7): subscriptions and
Open Mailbox, mailbox aliases, preferences and the password.

URLs (GET pages; POST actions after the CSRF check of ``webuser``):

* ``Subscriptions.wssp[?Done=]`` -- the subscription list (mailboxes.md §4)
  with a remove button per name, an Add field taking any mailbox name,
  foreign ones included (``~marketing/announce``; the mailbox need not
  exist), and the **Open Mailbox** form: a plain GET form to
  ``Mailbox.wssp?Mailbox=<name>`` (the message list of ``mailpages``), so
  an administrator with ``CanAccessMailboxes`` opens ``~user/INBOX`` and
  anyone else gets that page's refusal (rights are the service's);
  actions ``Subscribe`` (``Mailbox``), ``Unsubscribe`` (``Mailbox``);
* ``Aliases.wssp[?Done=]`` -- mailbox aliases (mailboxes.md §5); actions
  ``SetAlias`` (``Alias``, ``Target``: adds or changes) and ``RemoveAlias``
  (``Alias``); the service refuses loops and names of existing mailboxes;
* ``Settings.wssp[?Done=]`` -- the WebUser preferences
  (``services/preferences.py``); action ``SaveSettings`` (``MailboxList``,
  ``ShowSubscribed`` checkbox, ``SentBox``, ``MessagesPerPage``, ``Skin``);
  a new ``Skin`` applies from the next login [waypost];
* ``Password.wssp[?Done=]`` -- action ``ChangePassword`` (``OldPassword``,
  ``NewPassword``, ``NewPassword2``).

A successful action answers 303 to its page with ``Done=<code>`` (a fixed
set, :data:`waypost.web.account.DONE_CODES`). A refused one answers the page
itself with status 400 (403 for a wrong current password) and the reason
(``errorText``, escaped; the service's words for names), never a redirect
that carries text.

Choices [waypost]:

* a wrong current password on ``ChangePassword`` counts as a failed login
  in the process's login guard (the same counters as IMAP, POP3, SMTP and
  the login page, keyed by the account): a stolen session cannot be used to
  guess the password faster than the login page allows, and during a
  lock-out even the right one is refused with the same words;
* no setting forbids users to change their password (CGP's ``PWDAllowed``
  has no Waypost counterpart yet), so every account may;
* the password never reaches a log line or a page.

Invariants: see :mod:`waypost.protocols.http.common`; every page here shows
user-chosen names beside the session's CSRF token, so none is compressed.
"""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web

from waypost.protocols.http.common import (
    GUARD_SERVICE,
    BadForm,
    Form,
    SessionAction,
    SessionPage,
    WebUser,
    client_ip,
    error_page,
    form_text,
    html_page,
    log,
    no_gzip,
    see_other,
    session_dataset,
)
from waypost.protocols.http.sessions import WebSession
from waypost.services import auth, preferences
from waypost.services.container import Services
from waypost.services.mailaccess.errors import MailboxError, NoSuchMailbox, StoreError
from waypost.services.names import DirectoryError
from waypost.web import account as pages

MAX_FIELD = 1000
"""Longest mailbox name, alias or preference value a form may carry."""


async def _render(app: WebUser, request: web.Request, session: WebSession, page: str,
                  extra: dict[str, Any], status: int = 200) -> web.Response:
    """``page`` of the session's skin with the session dataset plus ``extra``."""
    dataset = session_dataset(request, session)
    dataset.update(pages.done_code(request.query) if status == 200 else {})
    dataset.update(extra)
    body = await app.render(session.domain, session.skin, page, dataset)
    if body is None:
        return no_gzip(await error_page(app, session.domain, f"The skin has no {page}.",
                                        "notFound", 404))
    return no_gzip(html_page(body, status))


def _refused(exc: Exception) -> dict[str, Any]:
    return {"errorText": html.escape(str(exc) or "The request was refused.", quote=True)}


async def _store_failed(app: WebUser, session: WebSession, exc: Exception) -> web.Response:
    log.error("account page of %s failed: %s", session.account, exc)
    return no_gzip(await error_page(app, session.domain, "The mail store cannot answer now. "
                                    "Try again later.", "storeError", 503))


# -- subscriptions and Open Mailbox ----------------------------------------------------------


async def subscriptions_page(app: WebUser, request: web.Request, session: WebSession,
                             extra: dict[str, Any] | None = None, status: int = 200
                             ) -> web.Response:
    """``Subscriptions.wssp``: the subscription list, Add, and Open Mailbox."""
    try:
        rows = await app.run(pages.subscription_rows, app.mail, session.account)
    except StoreError as exc:
        return await _store_failed(app, session, exc)
    return await _render(app, request, session, "Subscriptions.wssp",
                         {"subscriptions": rows, **(extra or {})}, status)


async def subscribe(app: WebUser, request: web.Request, session: WebSession, form: Form
                    ) -> web.Response:
    """Add a name to the subscription list (it need not exist; foreign names too)."""
    typed = form_text(form, "Mailbox", MAX_FIELD)
    try:
        name = pages.check_subscription(typed)
        await app.run(app.mail.subscribe, session.account, name)
    except MailboxError as exc:
        return await subscriptions_page(app, request, session, {
            **_refused(exc), "formMailbox": html.escape(typed, quote=True)}, 400)
    except StoreError as exc:
        return await _store_failed(app, session, exc)
    return see_other("Subscriptions.wssp?Done=subscribed")


async def unsubscribe(app: WebUser, request: web.Request, session: WebSession, form: Form
                      ) -> web.Response:
    """Remove a name from the subscription list (the mailbox is not touched)."""
    name = form_text(form, "Mailbox", MAX_FIELD)
    if not name:
        raise BadForm("no mailbox name was given")
    try:
        removed = await app.run(app.mail.unsubscribe, session.account, name)
    except StoreError as exc:
        return await _store_failed(app, session, exc)
    if not removed:
        return await subscriptions_page(app, request, session, _refused(
            NoSuchMailbox(f"{name!r} is not in the subscription list")), 400)
    return see_other("Subscriptions.wssp?Done=unsubscribed")


# -- mailbox aliases -------------------------------------------------------------------------


async def aliases_page(app: WebUser, request: web.Request, session: WebSession,
                       extra: dict[str, Any] | None = None, status: int = 200
                       ) -> web.Response:
    """``Aliases.wssp``: the mailbox aliases with change and remove forms, and Add."""
    try:
        rows = await app.run(pages.alias_rows, app.mail, session.account)
    except StoreError as exc:
        return await _store_failed(app, session, exc)
    return await _render(app, request, session, "Aliases.wssp",
                         {"aliases": rows, **(extra or {})}, status)


async def set_alias(app: WebUser, request: web.Request, session: WebSession, form: Form
                    ) -> web.Response:
    """Add or change a mailbox alias (the service refuses loops and collisions)."""
    alias = form_text(form, "Alias", MAX_FIELD).strip()
    target = form_text(form, "Target", MAX_FIELD).strip()
    try:
        await app.run(app.mail.set_alias, session.account, alias, target)
    except MailboxError as exc:
        return await aliases_page(app, request, session, {
            **_refused(exc), "formAlias": html.escape(alias, quote=True),
            "formTarget": html.escape(target, quote=True)}, 400)
    except StoreError as exc:
        return await _store_failed(app, session, exc)
    log.info("WebUser %s: mailbox alias set", session.account)
    return see_other("Aliases.wssp?Done=aliasSaved")


async def remove_alias(app: WebUser, request: web.Request, session: WebSession, form: Form
                       ) -> web.Response:
    alias = form_text(form, "Alias", MAX_FIELD)
    try:
        await app.run(app.mail.remove_alias, session.account, alias)
    except MailboxError as exc:
        return await aliases_page(app, request, session, _refused(exc), 400)
    except StoreError as exc:
        return await _store_failed(app, session, exc)
    return see_other("Aliases.wssp?Done=aliasRemoved")


# -- preferences -----------------------------------------------------------------------------


async def settings_page(app: WebUser, request: web.Request, session: WebSession,
                        extra: dict[str, Any] | None = None, status: int = 200
                        ) -> web.Response:
    """``Settings.wssp``: the preferences as now in force."""
    try:
        values = await app.run(pages.settings_dataset, app.services, session.account,
                                session.domain)
    except (StoreError, DirectoryError) as exc:
        return await _store_failed(app, session, exc)
    return await _render(app, request, session, "Settings.wssp",
                         {**values, **(extra or {})}, status)


async def save_settings(app: WebUser, request: web.Request, session: WebSession, form: Form
                        ) -> web.Response:
    """Store the preferences (checked, all or nothing); a bad value is the
    page again with the reason."""
    fields = {name: form_text(form, name, MAX_FIELD) for name in form if isinstance(name, str)}
    changes = pages.prefs_from_form(fields)
    try:
        await app.run(preferences.set_prefs, app.services, session.account, changes)
    except preferences.PreferenceError as exc:
        return await settings_page(app, request, session, _refused(exc), 400)
    except (StoreError, DirectoryError) as exc:
        return await _store_failed(app, session, exc)
    return see_other("Settings.wssp?Done=prefsSaved")


# -- the password ----------------------------------------------------------------------------


async def password_page(app: WebUser, request: web.Request, session: WebSession,
                        extra: dict[str, Any] | None = None, status: int = 200
                        ) -> web.Response:
    """``Password.wssp``: current password, new password twice."""
    return await _render(app, request, session, "Password.wssp",
                         {"minPassword": pages.MIN_PASSWORD, **(extra or {})}, status)


def _verify(services: Services, account: str, password: str) -> str | None:
    try:
        return account if services.directory.verify_password(account, password) else None
    except UnicodeError:
        return None


async def change_password(app: WebUser, request: web.Request, session: WebSession,
                          form: Form) -> web.Response:
    """Check the current password under the login guard, then the new one,
    then store it through the Directory (argon2)."""
    old = form_text(form, "OldPassword", pages.MAX_PASSWORD)
    new = form_text(form, "NewPassword", pages.MAX_PASSWORD)
    again = form_text(form, "NewPassword2", pages.MAX_PASSWORD)
    try:
        pages.check_new_password(new, again)
    except pages.PasswordRefused as exc:
        return await password_page(app, request, session, {"errorCode": exc.code}, 400)
    address = client_ip(request)
    attempt = await auth.guarded_login(
        app.services, app.guard, app.settings, address, session.account,
        lambda: app.run(_verify, app.services, session.account, old), service=GUARD_SERVICE)
    if attempt.account is None:
        log.info("WebUser %s: password change from %s refused: the current password is "
                 "wrong%s", session.account, address, " (locked out)" if attempt.locked else "")
        return await password_page(app, request, session, {"errorCode": "badPassword"}, 403)
    try:
        await app.run(app.services.directory.set_password, session.account, new)
    except DirectoryError as exc:
        return await password_page(app, request, session, _refused(exc), 400)
    except StoreError as exc:
        return await _store_failed(app, session, exc)
    log.info("WebUser %s: password changed from %s", session.account, address)
    return see_other("Password.wssp?Done=passwordChanged")


async def login_skin(app: WebUser, account: str) -> str:
    """The skin of a new session of ``account`` (``preferences.session_skin``)."""
    try:
        return await app.run(preferences.session_skin, app.services, account)
    except (StoreError, DirectoryError) as exc:
        log.warning("skin preference of %s not readable: %s", account, exc)
        return ""


PAGES: dict[str, SessionPage] = {
    "Subscriptions.wssp": subscriptions_page,
    "Aliases.wssp": aliases_page,
    "Settings.wssp": settings_page,
    "Password.wssp": password_page,
}
ACTIONS: dict[str, SessionAction] = {
    "Subscribe": subscribe,
    "Unsubscribe": unsubscribe,
    "SetAlias": set_alias,
    "RemoveAlias": remove_alias,
    "SaveSettings": save_settings,
    "ChangePassword": change_password,
}
