"""The mailbox list of a session (``Mailboxes.wssp``, the first page after
login) and the pages that manage mailboxes (issue 10 points 6 and 7), with
their datasets from :mod:`waypost.web.folders`.

Pages (GET):

* ``Mailboxes.wssp[?Done=code]`` -- the mailboxes the preferences ask for
  (own, aliases, subscribed foreign ones), by hierarchy, with unread counts,
  subscribe buttons, a create form, "Rights" links where the user may
  administer;
* ``MailboxSettings.wssp?Mailbox=`` -- one mailbox: rename, subscribe,
  create a sub-mailbox, the user's own rights, and the delete confirmation
  ("delete X and its N messages?", sub-mailboxes only when ticked);
* ``MailboxRights.wssp?Mailbox=[&Done=code]`` -- the access rights editor
  (How To §6, mailboxes.md §2): only the owner or a holder of ``a``; anyone
  else gets the refusal page (403, or 404 without ``l``), never the ACL.

Actions (POST, CSRF checked by ``webuser.handle_session_post``; success is a
303 to the page, ``Done=`` one of :data:`waypost.web.folders.DONE`):
``CreateMailbox`` (``Name``, ``Parent``), ``RenameMailbox`` (``Mailbox``,
``NewName``), ``DeleteMailbox`` (``Mailbox``, ``SubMailboxes=1``),
``SubscribeMailbox`` (``Mailbox``, ``Subscribe=1|0``), ``SetMailboxRights``
(``Mailbox``, ``Identifier``, ``Rights`` repeated: the identifier's rights
become exactly the ticked ones; none removes it), ``RemoveMailboxRights``
(``Mailbox``, ``Identifier``).

A refused action answers the page its form was on again, with the
service's reason (escaped) and the status of its kind (403 without the
right, 404 for what is not there, 400 for a bad name); when even that page
cannot be shown, the refusal page (:func:`mail_refusal`).

Invariants: see :mod:`waypost.protocols.http.common`; every mailbox
operation goes through :class:`MailAccess`, so IMAP sees it at once.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Callable
from typing import Any

from aiohttp import web

from waypost.protocols.http.common import (
    MAIL_ERRORS,
    BadForm,
    Form,
    SessionAction,
    SessionPage,
    WebUser,
    builtin_page,
    form_text,
    html_page,
    log,
    mail_refusal,
    no_gzip,
    see_other,
    session_dataset,
)
from waypost.protocols.http.sessions import WebSession
from waypost.services.mailaccess.errors import MailboxError, NotFound, StoreError
from waypost.services.mailaccess.service import MailAccess
from waypost.web import folders as webfolders

Builder = Callable[[MailAccess, str, str], dict[str, Any]]
"""A page's dataset from (mail, account, mailbox)."""


def _status_of(exc: Exception) -> tuple[int, str]:
    return next(((s, c) for kind, s, c in MAIL_ERRORS if isinstance(exc, kind)),
                (400, "badRequest"))


def _error_fields(exc: Exception | None) -> dict[str, Any]:
    if exc is None:
        return {}
    status, code = _status_of(exc)
    if isinstance(exc, StoreError) and status >= 500:
        text = "The mail store cannot answer now. Try again later."
    else:
        text = str(exc)
    return {"errorText": html.escape(text, quote=True), "errorCode": code}


async def _render(app: WebUser, request: web.Request, session: WebSession, page: str,
                  dataset: dict[str, Any], status: int = 200) -> web.Response:
    body = await app.render(session.domain, session.skin, page, dataset)
    if body is None:
        return await mail_refusal(app, request, session, NotFound(f"no {page} in the skin"))
    return no_gzip(html_page(body, status))


# -- Mailboxes.wssp ------------------------------------------------------------------


async def _mailboxes(app: WebUser, request: web.Request, session: WebSession,
                     exc: Exception | None = None) -> web.Response:
    try:
        rows = await app.run(webfolders.mailbox_rows, app.mail, session.account)
    except MailboxError as failure:
        log.warning("mailbox list of %s failed: %s", session.account, failure)
        rows = []
    dataset = session_dataset(request, session)
    dataset["mailboxes"] = rows
    dataset["parents"] = webfolders.parent_choices(rows)
    dataset.update(await app.run(webfolders.storage, app.mail, session.account))
    dataset["done"] = webfolders.done_code(request.query.get("Done")) if exc is None else ""
    dataset.update(_error_fields(exc))
    status = _status_of(exc)[0] if exc is not None else 200
    body = await app.render(session.domain, session.skin, "Mailboxes.wssp", dataset)
    if body is None:
        items = "".join(
            f'<li><span class="mailbox">{row["name"]}</span> '
            f'<span class="unseen">{row["unseen"]}</span> unread of '
            f'<span class="messages">{row["messages"]}</span></li>' for row in rows)
        body = builtin_page(
            "Mailboxes",
            f'<p>Logged in as {dataset["accountName"]}.</p><ul class="mailboxes">{items}</ul>'
            f'<p><a href="Logout">Log out</a></p>')
    return no_gzip(html_page(body, status))


async def mailboxes_page(app: WebUser, request: web.Request, session: WebSession
                         ) -> web.Response:
    """The first session page: the mailboxes the preferences ask for."""
    return await _mailboxes(app, request, session)


# -- pages of one mailbox ------------------------------------------------------------


async def _mailbox_page(app: WebUser, request: web.Request, session: WebSession,
                        page: str, build: Builder, name: str,
                        exc: Exception | None = None) -> web.Response:
    """``page`` for mailbox ``name``; with ``exc`` (a refused action) its
    reason and status. A page the user may not see is the refusal page."""
    try:
        found = await app.run(build, app.mail, session.account, webfolders.check_mailbox(name))
    except (webfolders.BadRequest, MailboxError) as failure:
        # the page itself is refused: say why it is (the right it needs), unless
        # the action's own refusal already is a mail refusal
        shown = exc if isinstance(exc, MailboxError) else failure
        return await mail_refusal(app, request, session, shown)
    dataset = session_dataset(request, session)
    dataset.update(found)
    dataset["done"] = webfolders.done_code(request.query.get("Done")) if exc is None else ""
    dataset.update(_error_fields(exc))
    return await _render(app, request, session, page, dataset,
                         _status_of(exc)[0] if exc is not None else 200)


async def settings_page(app: WebUser, request: web.Request, session: WebSession
                        ) -> web.Response:
    """``MailboxSettings.wssp?Mailbox=``: rename, subscribe, delete (confirmed)."""
    return await _mailbox_page(app, request, session, "MailboxSettings.wssp",
                               webfolders.mailbox_settings, request.query.get("Mailbox", ""))


async def rights_page(app: WebUser, request: web.Request, session: WebSession
                      ) -> web.Response:
    """``MailboxRights.wssp?Mailbox=``: the ACL editor (owner or ``a`` only)."""
    return await _mailbox_page(app, request, session, "MailboxRights.wssp",
                               webfolders.rights_dataset, request.query.get("Mailbox", ""))


# -- actions -------------------------------------------------------------------------


def _mailbox_field(form: Form, name: str = "Mailbox") -> str:
    try:
        return webfolders.check_mailbox(form_text(form, name, webfolders.MAX_NAME))
    except webfolders.BadRequest as exc:
        raise BadForm(str(exc)) from None


def _page_url(page: str, mailbox: str | None = None, done: str | None = None) -> str:
    query: dict[str, str] = {}
    if mailbox is not None:
        query["Mailbox"] = mailbox
    if done is not None:
        query["Done"] = done
    return page + ("?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
                   if query else "")


async def create_action(app: WebUser, request: web.Request, session: WebSession,
                        form: Form) -> web.Response:
    """``CreateMailbox``: ``Parent/Name`` or ``Name`` (mailboxes.md §1: ``A/B``
    makes the directory of ``A``; elsewhere ``c`` on the parent)."""
    try:
        full = webfolders.create_name(form_text(form, "Name", webfolders.MAX_NAME),
                                      form_text(form, "Parent", webfolders.MAX_NAME))
    except webfolders.BadRequest as exc:
        raise BadForm(str(exc)) from None
    try:
        await app.run(app.mail.create, session.account, full)
    except MailboxError as exc:
        return await _mailboxes(app, request, session, exc)
    log.info("WebUser %s created mailbox %r", session.account, full)
    return see_other(_page_url("Mailboxes.wssp", done="created"))


async def rename_action(app: WebUser, request: web.Request, session: WebSession,
                        form: Form) -> web.Response:
    """``RenameMailbox`` (renaming INBOX moves its messages, mailboxes.md §1)."""
    name = _mailbox_field(form)
    new = _mailbox_field(form, "NewName").strip()
    try:
        await app.run(app.mail.rename, session.account, name, new)
    except MailboxError as exc:
        return await _mailbox_page(app, request, session, "MailboxSettings.wssp",
                                   webfolders.mailbox_settings, name, exc)
    log.info("WebUser %s renamed mailbox %r to %r", session.account, name, new)
    return see_other(_page_url("Mailboxes.wssp", done="renamed"))


async def delete_action(app: WebUser, request: web.Request, session: WebSession,
                        form: Form) -> web.Response:
    """``DeleteMailbox``, posted by the confirmation on ``MailboxSettings.wssp``;
    sub-mailboxes only with ``SubMailboxes=1`` [waypost]."""
    name = _mailbox_field(form)
    recursive = form_text(form, "SubMailboxes", 8) == "1"
    try:
        await app.run(webfolders.delete_mailbox, app.mail, session.account, name,
                      recursive=recursive)
    except MailboxError as exc:
        return await _mailbox_page(app, request, session, "MailboxSettings.wssp",
                                   webfolders.mailbox_settings, name, exc)
    log.info("WebUser %s deleted mailbox %r%s", session.account, name,
             " with its sub-mailboxes" if recursive else "")
    return see_other(_page_url("Mailboxes.wssp", done="deleted"))


async def subscribe_action(app: WebUser, request: web.Request, session: WebSession,
                           form: Form) -> web.Response:
    """``SubscribeMailbox``: ``Subscribe=1`` adds the name to the subscription
    list (mailboxes.md §4), ``0`` removes it."""
    name = _mailbox_field(form)
    subscribe = form_text(form, "Subscribe", 8)
    if subscribe not in ("0", "1"):
        raise BadForm("Subscribe must be 1 or 0")
    try:
        if subscribe == "1":
            await app.run(app.mail.subscribe, session.account, name)
        else:
            await app.run(app.mail.unsubscribe, session.account, name)
    except MailboxError as exc:
        return await _mailboxes(app, request, session, exc)
    return see_other(_page_url("Mailboxes.wssp",
                               done="subscribed" if subscribe == "1" else "unsubscribed"))


async def set_rights_action(app: WebUser, request: web.Request, session: WebSession,
                            form: Form) -> web.Response:
    """``SetMailboxRights``: the identifier's rights become the ticked ones
    (SETACL replace; none ticked removes the entry)."""
    name = _mailbox_field(form)
    try:
        identifier = webfolders.check_identifier(
            form_text(form, "Identifier", webfolders.MAX_IDENTIFIER * 2))
        letters = webfolders.rights_letters(
            [v for v in form.getall("Rights", []) if isinstance(v, str)])
    except webfolders.BadRequest as exc:
        return await _mailbox_page(app, request, session, "MailboxRights.wssp",
                                   webfolders.rights_dataset, name, BadForm(str(exc)))
    try:
        await app.run(app.mail.set_acl, session.account, name, identifier, letters)
    except MailboxError as exc:
        return await _mailbox_page(app, request, session, "MailboxRights.wssp",
                                   webfolders.rights_dataset, name, exc)
    log.info("WebUser %s set rights of %r on %r to %r", session.account, identifier, name,
             letters)
    return see_other(_page_url("MailboxRights.wssp", name, "rightsSaved"))


async def remove_rights_action(app: WebUser, request: web.Request, session: WebSession,
                               form: Form) -> web.Response:
    """``RemoveMailboxRights``: DELETEACL of one identifier."""
    name = _mailbox_field(form)
    try:
        identifier = webfolders.check_identifier(
            form_text(form, "Identifier", webfolders.MAX_IDENTIFIER * 2))
    except webfolders.BadRequest as exc:
        raise BadForm(str(exc)) from None
    try:
        await app.run(app.mail.delete_acl, session.account, name, identifier)
    except MailboxError as exc:
        return await _mailbox_page(app, request, session, "MailboxRights.wssp",
                                   webfolders.rights_dataset, name, exc)
    log.info("WebUser %s removed the rights of %r on %r", session.account, identifier, name)
    return see_other(_page_url("MailboxRights.wssp", name, "rightsRemoved"))


PAGES: dict[str, SessionPage] = {
    "Mailboxes.wssp": mailboxes_page,
    "MailboxSettings.wssp": settings_page,
    "MailboxRights.wssp": rights_page,
}
ACTIONS: dict[str, SessionAction] = {
    "CreateMailbox": create_action,
    "RenameMailbox": rename_action,
    "DeleteMailbox": delete_action,
    "SubscribeMailbox": subscribe_action,
    "SetMailboxRights": set_rights_action,
    "RemoveMailboxRights": remove_rights_action,
}
