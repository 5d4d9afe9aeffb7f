"""What every WebUser page module shares: the per-process :class:`WebUser`,
responses, the error page, the session dataset and the refusal of a mail
request. Page modules (``mailpages``, ``folders``, ``compose``,
``account``) register their pages in ``PAGES`` (GET) and ``ACTIONS``
(POST) tables that :mod:`~waypost.protocols.http.webuser` routes.

Invariants:

* a session handler is only ever called with a checked session (id,
  cookie, optionally the client address); an ACTIONS handler only after the
  form's ``csrfToken`` matched the session's (``webuser.handle_session_post``),
  so no handler checks either itself;
* blocking work runs through :meth:`WebUser.run` (the module's pool);
* values put into datasets are safe for raw ``%%x%%`` output (web.md §4.3
  pitfall): HTML-escaped at the source, URL-encoded twins named ``...URL``;
* pages that show mail content or user-chosen names are never compressed
  (:func:`no_gzip`, BREACH; see ``webuser``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import html
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from aiohttp import web
from multidict import MultiDictProxy

from waypost.protocols.http.sessions import SessionStore, WebSession
from waypost.services.container import Services
from waypost.services.login_guard import LoginGuard
from waypost.services.mailaccess.errors import (
    InvalidMailboxName,
    MailboxError,
    NoPermission,
    NoSuchMailbox,
    NotFound,
    StoreError,
)
from waypost.services.mailaccess.service import MailAccess
from waypost.services.reception import Reception
from waypost.services.skins import Skins
from waypost.services.webdomain import WebTarget, detect
from waypost.services.websites import SiteCache
from waypost.settings import ServerSettings
from waypost.web.pages import Pages

log = logging.getLogger("waypost.http")

T = TypeVar("T")

SERVICE = "WebMail"
"""The AccessModes name a WebUser login needs (domains-accounts.md §4.2)."""
GUARD_SERVICE = "WebUser"
WORKERS = 8
SESSION_COOKIE = "WaypostSession"
LOGIN_COOKIE = "WaypostLogin"
SESSION_SECRET = "webuser-sessions"
"""The store's shared secret of the session rows' keyed hashes."""
LOGIN_SECRET = "webuser-login-csrf"
"""The store's shared secret that signs the login form's token."""
MAX_NAME = 256
MAX_PASSWORD = 1024
DEFAULT_SKIN = ""
"""[waypost] The skin of a login page: the unnamed one until domains and
accounts get a ``Skin`` setting (web.md §5.3 last sentence)."""

SECURITY_HEADERS = {
    # No inline script anywhere (mail content later is sanitised and shown in
    # pages under this policy too); skins may use inline style attributes.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    # Session ids are in URLs: never let them leave in a Referer.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
COMPRESSIBLE = re.compile(r"^(text/|application/(javascript|json|xml)|image/svg\+xml)")
MIN_COMPRESS = 256
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+~-]{0,254}")
_SKIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+~ -]{0,254}")
_SAFE_TEXT = re.compile(r"[^A-Za-z0-9@%._+=:,/\[\] ~()-]")


def safe_text(text: str, limit: int = MAX_NAME) -> str:
    """User-typed text reduced to characters that are the same raw and
    HTML-escaped, so a skin's plain ``%%loginName%%`` cannot inject markup."""
    return _SAFE_TEXT.sub("", text[:limit])


def valid_file_name(name: str) -> bool:
    """A skin file name as URLs may carry it: one path component, no dot
    files, no ``..``, no backslash or control characters."""
    return bool(_FILE_NAME.fullmatch(name)) and ".." not in name


def valid_skin_name(name: str) -> bool:
    return bool(_SKIN_NAME.fullmatch(name)) and ".." not in name


class WebUser:
    """What every WebUser request of the process shares."""

    def __init__(self, services: Services, guard: LoginGuard, *,
                 tls: ssl.SSLContext | None = None,
                 executor: ThreadPoolExecutor | None = None,
                 reception: Reception | None = None) -> None:
        self.services = services
        self.reception = reception
        """Where Send submits (the server's queue, as SMTP AUTH); None: cannot send."""
        self.guard = guard
        self.has_certificate = tls is not None
        self.executor = executor or ThreadPoolExecutor(WORKERS, thread_name_prefix="http")
        self.pages = Pages(Skins(services.data_dir))
        self.mail = MailAccess(services)
        self.settings: ServerSettings = services.settings()
        # In the store: every process of the store shares the sessions, and
        # the login form's token (signed by a secret they share too).
        self.sessions = SessionStore(float(self.settings.number("WebUserIdleTimeout")),
                                     rows=services.store,
                                     secret=services.store.shared_secret(SESSION_SECRET))
        self.sites = SiteCache(services)
        self._secret = services.store.shared_secret(LOGIN_SECRET)
        self._version = -1

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the module's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- per request ------------------------------------------------------------------

    def place_blocking(self, host: str | None, server_ip: str | None) -> WebTarget:
        """Pick up changed settings (a cheap version check), then place the request."""
        version = self.mail.version()
        if version != self._version:
            self.settings = self.services.settings()
            self.sessions.idle_timeout = float(self.settings.number("WebUserIdleTimeout"))
            self._version = version
        return detect(self.services.router, host, server_ip)

    async def session_of(self, request: web.Request) -> WebSession | None:
        """The live session a ``/Session/<id>/...`` request names, checked
        against its cookie (and the client address with ``WebUserBindIP``):
        one read of the store, in the thread pool."""
        return await self.run(self.sessions.check, request.match_info["sid"],
                              request.cookies.get(SESSION_COOKIE), client_ip(request),
                              bind_ip=self.settings.flag("WebUserBindIP"))

    async def place(self, request: web.Request) -> WebTarget:
        return await self.run(self.place_blocking, request.headers.get("Host"),
                              server_address(request))

    def csrf_for(self, cookie: str) -> str:
        """The login form's token for a pre-login cookie (signed double submit)."""
        return hmac.new(self._secret, cookie.encode(), hashlib.sha256).hexdigest()

    async def render(self, domain: str, skin: str, name: str,
                     dataset: Mapping[str, Any]) -> str | None:
        return await self.run(self.pages.render, domain, skin, name, dataset)

def not_modified(request: web.Request, etag: str, mtime: datetime) -> bool:
    """RFC 9110 §13.1: If-None-Match wins over If-Modified-Since."""
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        return inm.strip() == "*" or etag in [t.strip().removeprefix("W/") for t in inm.split(",")]
    ims = request.headers.get("If-Modified-Since")
    if ims:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError, OverflowError):  # a year past 9999 overflows
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return mtime.replace(microsecond=0) <= since
    return False


def server_address(request: web.Request) -> str | None:
    """The local address the request came in on (places a Host-less request)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return sockname[0] if sockname else None


def client_ip(request: web.Request) -> str:
    return (request.remote or "").removeprefix("::ffff:")


def html_page(text: str, status: int = 200) -> web.Response:
    response = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


def builtin_page(title: str, body: str) -> str:
    """The last resort when a skin lacks a page: plain, escaped by the caller."""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}'
            f'</title></head><body><main><h1>{title}</h1>{body}</main></body></html>')



async def error_page(app: WebUser, domain: str, text: str, code: str, status: int
                     ) -> web.Response:
    """``error.wssp`` of ``domain`` ("" = no domain: server-wide and stock levels)."""
    dataset = {"errorText": safe_text(text, 300), "errorCode": code}
    body = await app.render(domain, DEFAULT_SKIN, "error.wssp", dataset)
    if body is None:
        body = builtin_page("Error", f"<p>{html.escape(dataset['errorText'])}</p>")
    return html_page(body, status)



def session_dataset(request: web.Request, session: WebSession) -> dict[str, Any]:
    """What every session page gets."""
    dataset: dict[str, Any] = {
        "domainName": session.domain,
        "accountName": html.escape(session.account),
        "sessionID": session.id,
        "csrfToken": session.csrf,
        "skinName": session.skin,
        "filesRef": f"/Session/{session.id}/",
    }
    if request.secure:
        dataset["secureChannel"] = True
    return dataset



NO_GZIP = "waypost.no_gzip"
"""Set on a response that must not be compressed: session pages that show
mail content or mailbox names (attacker-chosen text) beside the session's
secrets (BREACH; see the module docstring)."""


def no_gzip(response: web.Response) -> web.Response:
    response[NO_GZIP] = True
    return response


ErrorTable = tuple[tuple[type[Exception], int, str], ...]
"""Service errors to (HTTP status, errorCode), the first matching kind wins."""

MAIL_ERRORS: ErrorTable = (
    (NoPermission, 403, "noPermission"),
    (NotFound, 404, "notFound"),
    (InvalidMailboxName, 400, "badMailboxName"),
    (MailboxError, 400, "mailboxError"),
    (StoreError, 503, "storeError"),
)


async def refusal(app: WebUser, session: WebSession, exc: Exception, table: ErrorTable,
                  *, unavailable: str) -> web.Response:
    """The error page for a refused or failed request (never its data): the
    status and code of the first kind in ``table`` that ``exc`` is, else 400;
    the service's message says why, except when the store failed (500/503:
    logged, and the page says ``unavailable``; 507, over a quota, is the
    user's to read)."""
    status, code = next(((s, c) for kind, s, c in table if isinstance(exc, kind)),
                        (400, "badRequest"))
    if status in (500, 503):
        log.error("WebUser request of %s failed: %s", session.account, exc)
        text = unavailable
    else:
        text = str(exc)
    if isinstance(exc, NoSuchMailbox):  # also a mailbox the user may not see (rights.py)
        text = f"{text}: it does not exist, or you are not allowed to open it."
    return no_gzip(await error_page(app, session.domain, text, code, status))


async def mail_refusal(app: WebUser, request: web.Request, session: WebSession,
                       exc: Exception) -> web.Response:
    """A refused or failed mail request: 403 without the right, 404 for what
    is not there, 400 for a bad parameter, 503 when the store cannot answer."""
    return await refusal(app, session, exc, MAIL_ERRORS,
                         unavailable="The mail store cannot answer now. Try again later.")


Form = MultiDictProxy[str | bytes | bytearray | web.FileField]
"""A posted form as aiohttp reads it (file fields for uploads)."""
SessionPage = Callable[[WebUser, web.Request, WebSession], Awaitable[web.StreamResponse]]
"""A GET page inside a session."""
SessionAction = Callable[[WebUser, web.Request, WebSession, Form],
                         Awaitable[web.StreamResponse]]
"""A POST inside a session, called after the CSRF check."""

WEBUSER = web.AppKey("webuser", WebUser)


def form_text(form: Form, name: str, limit: int = 4096) -> str:
    """A text field of a form ("" when absent or a file); :class:`BadForm`
    when longer than ``limit``."""
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    if len(value) > limit:
        raise BadForm(f"{name} is too long")
    return value


class BadForm(ValueError):
    """A form field the action cannot use (answered 400 with the reason)."""


def see_other(location: str) -> web.Response:
    """The answer to a successful POST (Post/Redirect/Get): 303 to a session page."""
    response = web.Response(status=303, headers={"Location": location})
    response.headers["Cache-Control"] = "no-store"
    return response
