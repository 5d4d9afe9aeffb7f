"""The mail pages of a session (issue 10 point 6): the message list
(``Mailbox.wssp``), the message view (``Message.wssp``) and part downloads,
with their datasets from :mod:`waypost.web.mail`.

URLs: ``Mailbox.wssp?Mailbox=&Skip=&Limit=&Sort=date|from|subject|size&Order=
asc|desc&Search=&Scope=headers|text`` (``Limit`` defaults to the account's
``MessagesPerPage`` preference; ``Done=``/``Error=`` codes after an action);
``Message.wssp?Mailbox=&UID=[&ShowImages=1][&Plain=1]`` plus the list's state
(for previous/next and the way back; viewing sets \\Seen);
``/Session/<id>/Part/<mailbox>/<uid>/<part>`` (the mailbox URL-encoded,
possibly with ``/``; the part an IMAP section number) as a download with
``Content-Disposition: attachment``, its own content type and a sandboxing
CSP; ``?Inline=1`` shows raster images inline (the ``cid:`` images of a
message view) and nothing else. A refused mailbox is the error page with
403/404, a bad parameter 400.

Actions (issue 10 point 6), ``POST /Session/<id>/Messages`` from the list's
and the view's forms (the CSRF check is the POST path's): ``Mailbox``, one
or more ``UID``, ``Action=move|copy|delete|flag|unflag|read|unread``,
``Target`` (Move/Copy), the list's state (``Sort``, ``Order``, ``Skip``,
``Limit``, ``Search``, ``Scope``), and ``Return=view`` from the view. All go
through :class:`MailAccess` (rights, and IMAP sessions see them at once); see
:func:`waypost.web.mail.act` for the delete policy. The answer is a 303 to
the list with ``Done=<code>`` (or ``Error=noneSelected|noTarget``, nothing
changed), from the view to the same message, or after a delete/move to the
next message in the list's order (the list when none is left; "mark unread"
returns to the list, since viewing would mark it read again). A bad UID (0,
too long, not a number) is 400, a UID that is gone 404, a missing right 403:
nothing changes in any of these.

Invariants: see :mod:`waypost.protocols.http.common`; a message view that
shows remote images (``ShowImages=1``) is the only page whose policy allows
``http:``/``https:`` images; without it remote images are already replaced in
the markup, and the policy blocks them too.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from aiohttp import web

from waypost.protocols.http.common import (
    SECURITY_HEADERS,
    WEBUSER,
    BadForm,
    Form,
    SessionAction,
    SessionPage,
    WebUser,
    form_text,
    html_page,
    mail_refusal,
    no_gzip,
    see_other,
    session_dataset,
)
from waypost.protocols.http.sessions import WebSession
from waypost.services.mailaccess.errors import NotFound, StoreError
from waypost.services.preferences import web_prefs
from waypost.web import mail as webmail


def list_state(app: WebUser, account: str, params: Any) -> webmail.ListQuery:
    """The list's state from ``params``; without ``Limit``, the account's
    ``MessagesPerPage`` preference. Blocking (the preference): in the pool."""
    size = webmail.PAGE_SIZE if params.get("Limit") else \
        web_prefs(app.services, account).messages_per_page
    return webmail.list_query(params, size)


def _list_dataset(app: WebUser, account: str, params: Any) -> dict[str, Any]:
    return webmail.message_list(app.mail, account, list_state(app, account, params))


def _view_dataset(app: WebUser, account: str, params: Any, name: str, uid: int
                  ) -> dict[str, Any]:
    return webmail.message_view(app.mail, account, name, uid,
                                show_images=params.get("ShowImages") == "1",
                                plain=params.get("Plain") == "1",
                                query=list_state(app, account, params))


async def mailbox_page(app: WebUser, request: web.Request, session: WebSession
                       ) -> web.Response:
    """``Mailbox.wssp``: one page of a mailbox's messages (issue 10 point 6)."""
    try:
        found = await app.run(_list_dataset, app, session.account, request.query)
    except (webmail.BadRequest, StoreError) as exc:
        return await mail_refusal(app, request, session, exc)
    dataset = session_dataset(request, session)
    dataset.update(found)
    dataset.update(webmail.result_codes(request.query))
    body = await app.render(session.domain, session.skin, "Mailbox.wssp", dataset)
    if body is None:
        return await mail_refusal(app, request, session, NotFound("no Mailbox.wssp in the skin"))
    return no_gzip(html_page(body))


IMAGES_CSP = SECURITY_HEADERS["Content-Security-Policy"].replace(
    "img-src 'self' data:", "img-src 'self' data: http: https:")
"""The policy of a message view whose reader asked for remote images."""


async def message_page(app: WebUser, request: web.Request, session: WebSession
                       ) -> web.Response:
    """``Message.wssp``: one message, its HTML sanitised (issue 10 point 6)."""
    show_images = request.query.get("ShowImages") == "1"
    try:
        name = webmail.check_mailbox(request.query.get("Mailbox", ""))
        uid = webmail.check_uid(request.query.get("UID"))
        found = await app.run(_view_dataset, app, session.account, request.query, name, uid)
    except (webmail.BadRequest, StoreError) as exc:
        return await mail_refusal(app, request, session, exc)
    dataset = session_dataset(request, session)
    dataset.update(found)
    dataset.update(webmail.result_codes(request.query))
    body = await app.render(session.domain, session.skin, "Message.wssp", dataset)
    if body is None:
        return await mail_refusal(app, request, session, NotFound("no Message.wssp in the skin"))
    response = no_gzip(html_page(body))
    if show_images:
        response.headers["Content-Security-Policy"] = IMAGES_CSP
    return response


INLINE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
"""Raster images only: what a ``cid:`` reference may show inline (never SVG or HTML)."""


async def handle_part(request: web.Request) -> web.StreamResponse:
    """``GET /Session/<id>/Part/<mailbox>/<uid>/<part>``: a message part as a
    download (``Content-Disposition: attachment``, its own content type,
    ``nosniff``, a sandboxing policy); ``?Inline=1`` serves an image inline
    for ``cid:`` references, never anything else inline."""
    app: WebUser = request.app[WEBUSER]
    session = await app.session_of(request)
    if session is None:
        raise web.HTTPForbidden(text="no such session")
    mailbox, _, rest = request.match_info["rest"].rpartition("/")
    mailbox, _, uid_text = mailbox.rpartition("/")
    try:
        name = webmail.check_mailbox(mailbox)
        uid = webmail.check_uid(uid_text)
        number = webmail.check_part(rest)
        part = await app.run(webmail.download, app.mail, session.account, name, uid, number)
    except (webmail.BadRequest, StoreError) as exc:
        return await mail_refusal(app, request, session, exc)
    kind = part.content_type if re.fullmatch(r"[a-z0-9.+-]+/[a-z0-9.+-]+", part.content_type) \
        else "application/octet-stream"
    inline = request.query.get("Inline") == "1" and kind in INLINE_IMAGES
    disposition = "inline" if inline else "attachment"
    ascii_name = re.sub(r'[^A-Za-z0-9._ -]', "_", part.filename)[:200] or "part"
    quoted = urllib.parse.quote(part.filename[:200], safe="")
    response = web.Response(body=part.data, headers={
        "Content-Disposition": f"{disposition}; filename=\"{ascii_name}\"; "
                               f"filename*=UTF-8''{quoted}",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, no-store",
    })
    response.content_type = kind
    return no_gzip(response)


def _form_uids(form: Form) -> list[int]:
    """The checked ``UID`` values, each checked (:class:`BadForm`: 400)."""
    values = form.getall("UID", [])
    if len(values) > webmail.MAX_UIDS:
        raise BadForm("too many messages at once")
    try:
        uids = [webmail.check_uid(v if isinstance(v, str) else None) for v in values]
    except webmail.BadRequest as exc:
        raise BadForm(str(exc)) from None
    return list(dict.fromkeys(uids))


def _form_query(form: Form) -> webmail.ListQuery:
    """The list's state the form carries (:class:`BadForm`: 400)."""
    fields = {name: form_text(form, name, 1100) for name in
              ("Mailbox", "Sort", "Order", "Skip", "Limit", "Search", "Scope")}
    if not fields["Mailbox"]:
        raise BadForm("no Mailbox")
    try:
        return webmail.list_query(fields)
    except webmail.BadRequest as exc:
        raise BadForm(str(exc)) from None


async def messages_action(app: WebUser, request: web.Request, session: WebSession,
                          form: Form) -> web.StreamResponse:
    """``POST Messages``: move, copy, delete, flag, unflag, mark read or
    unread the checked messages (module docstring), then 303."""
    query = _form_query(form)
    action = form_text(form, "Action", 20)
    if action not in webmail.ACTIONS:
        raise BadForm("unknown Action")
    uids = _form_uids(form)
    from_view = form_text(form, "Return", 10) == "view" and len(uids) == 1
    base = f"/Session/{session.id}/"

    def back(**extra: str) -> web.Response:
        if from_view and "Error" in extra:
            return see_other(base + webmail.view_url(query, uids[0], **extra))
        return see_other(base + webmail.list_url(query, **extra))

    if not uids:
        return back(Error="noneSelected")
    target = ""
    if action in ("move", "copy"):
        target = form_text(form, "Target", 1100)
        if not target:
            return back(Error="noTarget")
        try:
            target = webmail.check_mailbox(target)
        except webmail.BadRequest as exc:
            raise BadForm(str(exc)) from None
    try:
        after: int | None = None
        if from_view and action in ("move", "delete"):
            opened = await app.run(app.mail.open, session.account, query.mailbox, "r")
            before, after = await app.run(webmail.neighbours, app.mail, opened, uids[0],
                                          query)
            after = after if after is not None else before
        done = await app.run(webmail.act, app.mail, session.account, query.mailbox, uids,
                             action, target)
    except webmail.BadRequest as exc:
        raise BadForm(str(exc)) from None
    except StoreError as exc:
        return await mail_refusal(app, request, session, exc)
    if not from_view or action == "unread":
        return see_other(base + webmail.list_url(query, Done=done))
    if action in ("move", "delete"):
        if after is None:
            return see_other(base + webmail.list_url(query, Done=done))
        return see_other(base + webmail.view_url(query, after, Done=done))
    return see_other(base + webmail.view_url(query, uids[0], Done=done))


PAGES: dict[str, SessionPage] = {
    "Mailbox.wssp": mailbox_page,
    "Message.wssp": message_page,
}
ACTIONS: dict[str, SessionAction] = {
    "Messages": messages_action,
}
