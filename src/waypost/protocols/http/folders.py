"""The mailbox list of a session (``Mailboxes.wssp``, the first page after
login) and the pages that manage mailboxes (issue 10 points 6 and 7).

Invariants: see :mod:`waypost.protocols.http.common`.
"""

from __future__ import annotations

import html
import urllib.parse
from typing import Any

from aiohttp import web

from waypost.protocols.http.common import (
    SessionAction,
    SessionPage,
    WebUser,
    builtin_page,
    html_page,
    log,
    no_gzip,
    session_dataset,
)
from waypost.protocols.http.sessions import WebSession
from waypost.services.mailaccess.errors import MailboxError
from waypost.services.mailaccess.service import MailAccess


def _mailbox_rows(mail: MailAccess, account: str) -> list[dict[str, Any]]:
    """Own mailboxes, then subscribed ones not among them (foreign mailboxes
    such as ``~marketing/announce``), with their counters."""
    rows = []
    status = ("MESSAGES", "UNSEEN")
    own = mail.list_mailboxes(account, "", ["*"], status=status)
    names = {entry.name for entry in own}
    subscribed = [entry for entry in mail.list_mailboxes(
        account, "", ["*"], select=("SUBSCRIBED",), status=status) if entry.name not in names]
    for entry in own + subscribed:
        if "\\Noselect" in entry.attributes or "\\NonExistent" in entry.attributes:
            continue
        values = dict(entry.status or ())
        rows.append({
            "name": html.escape(entry.name),
            "nameURL": urllib.parse.quote(entry.name, safe=""),
            "messages": values.get("MESSAGES", 0),
            "unseen": values.get("UNSEEN", 0),
        })
    return rows


async def mailboxes_page(app: WebUser, request: web.Request, session: WebSession
                         ) -> web.Response:
    """The first session page: the user's mailboxes with unread counts."""
    try:
        rows = await app.run(_mailbox_rows, app.mail, session.account)
    except MailboxError as exc:
        log.warning("mailbox list of %s failed: %s", session.account, exc)
        rows = []
    dataset = session_dataset(request, session)
    dataset["mailboxes"] = rows
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
    return no_gzip(html_page(body))


PAGES: dict[str, SessionPage] = {
    "Mailboxes.wssp": mailboxes_page,
}
ACTIONS: dict[str, SessionAction] = {}
