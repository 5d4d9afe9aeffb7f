"""The mail pages of a session (issue 10 point 6): the message list
(``Mailbox.wssp``), the message view (``Message.wssp``) and part downloads,
with their datasets from :mod:`waypost.web.mail`.

URLs: ``Mailbox.wssp?Mailbox=&Skip=&Limit=&Sort=date|from|subject|size&Order=
asc|desc&Search=``; ``Message.wssp?Mailbox=&UID=[&ShowImages=1][&Plain=1]``
(viewing sets \\Seen); ``/Session/<id>/Part/<mailbox>/<uid>/<part>`` (the
mailbox URL-encoded, possibly with ``/``; the part an IMAP section number)
as a download with ``Content-Disposition: attachment``, its own content type
and a sandboxing CSP; ``?Inline=1`` shows raster images inline (the ``cid:``
images of a message view) and nothing else. A refused mailbox is the error
page with 403/404, a bad parameter 400.

Invariants: see :mod:`waypost.protocols.http.common`; a message view that
shows remote images (``ShowImages=1``) is the only page whose policy allows
``http:``/``https:`` images; without it remote images are already replaced in
the markup, and the policy blocks them too.
"""

from __future__ import annotations

import re
import urllib.parse

from aiohttp import web

from waypost.protocols.http.common import (
    SECURITY_HEADERS,
    WEBUSER,
    SessionAction,
    SessionPage,
    WebUser,
    html_page,
    mail_refusal,
    no_gzip,
    session_dataset,
)
from waypost.protocols.http.sessions import WebSession
from waypost.services.mailaccess.errors import NotFound, StoreError
from waypost.web import mail as webmail


async def mailbox_page(app: WebUser, request: web.Request, session: WebSession
                       ) -> web.Response:
    """``Mailbox.wssp``: one page of a mailbox's messages (issue 10 point 6)."""
    try:
        query = webmail.list_query(request.query)
        found = await app.run(webmail.message_list, app.mail, session.account, query)
    except (webmail.BadRequest, StoreError) as exc:
        return await mail_refusal(app, request, session, exc)
    dataset = session_dataset(request, session)
    dataset.update(found)
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
        found = await app.run(webmail.message_view, app.mail, session.account, name, uid,
                              show_images=show_images, plain=request.query.get("Plain") == "1")
    except (webmail.BadRequest, StoreError) as exc:
        return await mail_refusal(app, request, session, exc)
    dataset = session_dataset(request, session)
    dataset.update(found)
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
    session = app.session_of(request)
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


PAGES: dict[str, SessionPage] = {
    "Mailbox.wssp": mailbox_page,
    "Message.wssp": message_page,
}
ACTIONS: dict[str, SessionAction] = {}
