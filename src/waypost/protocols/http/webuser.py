"""The WebUser module (web.md §1-§3, §4.6): the login page, the login, the
session skeleton and skin files, as an aiohttp application.

URLs [waypost choices where the spec leaves them open]:

* ``GET /`` — the login page (``login.wssp``) of the request's domain;
* ``POST /login`` — ``Username``, ``Password``, ``csrfToken``; success is a
  303 to ``/Session/<id>/Mailboxes.wssp``, failure the login page again with
  ``errorCode`` ``badPassword`` (200);
* ``GET /Session/<id>/<request>`` — a session page, the session's skin files
  by plain name (``style.css``), ``Logout``. Pages: ``Mailboxes.wssp`` (own,
  subscribed foreign and aliased mailboxes with counts),
  ``Mailbox.wssp?Mailbox=&Skip=&Limit=&Sort=date|from|subject|size&Order=
  asc|desc&Search=`` (the message list, :mod:`waypost.web.mail`),
  ``Message.wssp?Mailbox=&UID=[&ShowImages=1][&Plain=1]`` (the message view,
  HTML sanitised by :mod:`waypost.web.sanitize`; viewing sets \\Seen);
  a refused mailbox is the error page with 403/404, a bad parameter 400;
* ``GET /Session/<id>/Part/<mailbox>/<uid>/<part>`` — a message part as a
  download (the mailbox URL-encoded, possibly with ``/``; the part an IMAP
  section number): ``Content-Disposition: attachment``, the part's content
  type, a sandboxing CSP; ``?Inline=1`` shows raster images inline (the
  ``cid:`` images of a message view) and nothing else;
* ``GET /skins/<file>`` and ``GET /skins/<skin>/<file>`` — skin files of the
  request's domain (unnamed skin, or the named one); ``GET /<file>`` serves
  the same as ``/skins/<file>`` so a login page may name ``style.css``
  relatively (skin files take precedence over personal-site names, §6.2).
  Never a ``.wssp`` or ``.wssi``; file and skin names are single path
  components (anything else is 400), and the skins service keeps every
  lookup inside the skin directories.

Invariants:

* every request is placed by :func:`waypost.services.webdomain.detect`
  (``LoginPage@<Host>`` through the Router, §3); an unknown host gets the
  error page with status 404 rendered from the server-wide/stock skin only,
  never from any domain's skin or with any domain's data; a personal-site
  host gets 404 until sites are served (a later issue);
* the login page's ``secureChannel`` is true only when *this* request came
  over TLS (§7);
* values put into datasets are safe for raw ``%%x%%`` output (web.md §4.3
  pitfall): user-typed text (``loginName``, a bad host) is reduced to
  characters that need no escaping; mailbox names are HTML-escaped at the
  source (``name``) with a URL-encoded twin (``nameURL``);
* the login form is protected by a signed double-submit token: a random
  pre-login cookie (HttpOnly, SameSite=Strict, path ``/login``) and a form
  field that is its HMAC under a per-process secret; a POST without both,
  or with a token for another cookie, is 403 and no password is checked;
* logins go through :func:`waypost.services.auth.guarded_login` with the
  process-wide login guard (failures counted together with IMAP, POP3 and
  SMTP; slowed; locked out), the account needs ``WebMail`` in its
  AccessModes, and a bare name means an account of the request's domain;
* a successful login always makes a new session (``sessions.py``); its
  cookie is path-scoped to ``/Session/<id>/``, so several sessions can live
  in one browser;
* blocking work (Router, store, skins, argon2, rendering) runs in the
  module's thread pool, never on the event loop;
* gzip applies to text bodies of at least ``MIN_COMPRESS`` bytes. A page
  that is compressed and holds a secret (the login page's token) must not
  reflect attacker-chosen text (BREACH): the login page reflects the typed
  name only after a POST that already carried a valid token, and then in
  the reduced alphabet of :func:`safe_text`. Session pages of later parts
  must keep to the same rule or switch compression off: the mail pages
  (mailbox list, message list and view, parts) reflect attacker-chosen text
  and are never compressed (:data:`NO_GZIP`);
* a message view that shows remote images (``ShowImages=1``) is the only
  page whose policy allows ``http:``/``https:`` images; without it remote
  images are already replaced in the markup, and the policy blocks them too.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import html
import logging
import mimetypes
import re
import secrets
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_response import ContentCoding

from waypost.protocols.http.sessions import SessionStore, WebSession
from waypost.services import auth
from waypost.services.container import Services
from waypost.services.login_guard import LoginGuard
from waypost.services.mailaccess.errors import (
    InvalidMailboxName,
    MailboxError,
    NoPermission,
    NotFound,
    StoreError,
)
from waypost.services.mailaccess.service import MailAccess
from waypost.services.skins import Skins
from waypost.services.webdomain import Place, WebTarget, detect, host_name
from waypost.settings import ServerSettings
from waypost.web import mail as webmail
from waypost.web.pages import Pages

log = logging.getLogger("waypost.http")

T = TypeVar("T")

SERVICE = "WebMail"
"""The AccessModes name a WebUser login needs (domains-accounts.md §4.2)."""
GUARD_SERVICE = "WebUser"
WORKERS = 8
SESSION_COOKIE = "WaypostSession"
LOGIN_COOKIE = "WaypostLogin"
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
_SAFE_TEXT = re.compile(r"[^A-Za-z0-9@%._+=:,/\[\] -]")


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
                 executor: ThreadPoolExecutor | None = None) -> None:
        self.services = services
        self.guard = guard
        self.has_certificate = tls is not None
        self.executor = executor or ThreadPoolExecutor(WORKERS, thread_name_prefix="http")
        self.pages = Pages(Skins(services.data_dir))
        self.mail = MailAccess(services)
        self.settings: ServerSettings = services.settings()
        self.sessions = SessionStore(float(self.settings.number("WebUserIdleTimeout")))
        self._secret = secrets.token_bytes(32)
        self._version = -1

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the module's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- per request ------------------------------------------------------------------

    def _place(self, host: str | None, server_ip: str | None) -> WebTarget:
        """Pick up changed settings (a cheap version check), then place the request."""
        version = self.mail.version()
        if version != self._version:
            self.settings = self.services.settings()
            self.sessions.idle_timeout = float(self.settings.number("WebUserIdleTimeout"))
            self._version = version
        return detect(self.services.router, host, server_ip)

    async def place(self, request: web.Request) -> WebTarget:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        server_ip = sockname[0] if sockname else None
        return await self.run(self._place, request.headers.get("Host"), server_ip)

    def csrf_for(self, cookie: str) -> str:
        """The login form's token for a pre-login cookie (signed double submit)."""
        return hmac.new(self._secret, cookie.encode(), hashlib.sha256).hexdigest()

    async def render(self, domain: str, skin: str, name: str,
                     dataset: Mapping[str, Any]) -> str | None:
        return await self.run(self.pages.render, domain, skin, name, dataset)


def _client_ip(request: web.Request) -> str:
    return (request.remote or "").removeprefix("::ffff:")


def _html(text: str, status: int = 200) -> web.Response:
    response = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


def _builtin_page(title: str, body: str) -> str:
    """The last resort when a skin lacks a page: plain, escaped by the caller."""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}'
            f'</title></head><body><main><h1>{title}</h1>{body}</main></body></html>')


# -- pages outside a session ----------------------------------------------------------------


async def error_page(app: WebUser, domain: str, text: str, code: str, status: int
                     ) -> web.Response:
    """``error.wssp`` of ``domain`` ("" = no domain: server-wide and stock levels)."""
    dataset = {"errorText": safe_text(text, 300), "errorCode": code}
    body = await app.render(domain, DEFAULT_SKIN, "error.wssp", dataset)
    if body is None:
        body = _builtin_page("Error", f"<p>{html.escape(dataset['errorText'])}</p>")
    return _html(body, status)


async def unknown_domain(app: WebUser, target: WebTarget) -> web.Response:
    log.info("HTTP request for unknown domain %r", target.host)
    named = f" {target.host}" if host_name(target.host) else ""  # a malformed one: not echoed
    return await error_page(app, "", f"Unknown domain{named}: this server does not "
                            "serve that name.", "unknownDomain", 404)


async def not_a_domain(app: WebUser, target: WebTarget) -> web.Response | None:
    """The response for a request that is not placed in a domain, else None."""
    if target.place is Place.UNKNOWN:
        return await unknown_domain(app, target)
    if target.place is Place.SITE:
        return await error_page(app, "", f"The personal web site {target.host} is not "
                                "available yet.", "noSite", 404)
    return None


def login_dataset(domain: str, *, secure: bool, has_certificate: bool, csrf: str,
                  error_code: str = "", login_name: str = "") -> dict[str, Any]:
    """The login page dataset (web.md §4.6). Flags that are false are absent
    (a missing value is false in WSSP); ``loginName`` is made safe for raw
    output; ``canAutoSignup`` and ``hasMailLists`` are absent until self-signup
    and public lists exist."""
    dataset: dict[str, Any] = {"domainName": domain, "csrfToken": csrf,
                               "skinName": DEFAULT_SKIN}
    if secure:
        dataset["secureChannel"] = True
    if has_certificate:
        dataset["hasCertificate"] = True
    if error_code:
        dataset["errorCode"] = error_code
    if login_name:
        dataset["loginName"] = safe_text(login_name)
    return dataset


async def login_page(app: WebUser, request: web.Request, target: WebTarget, *,
                     error_code: str = "", login_name: str = "", status: int = 200
                     ) -> web.Response:
    """``login.wssp`` with the dataset of web.md §4.6 and a fresh CSRF pair."""
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not re.fullmatch(r"[A-Za-z0-9_-]{32,64}", cookie):
        cookie = secrets.token_urlsafe(32)
    dataset = login_dataset(target.domain, secure=request.secure,
                            has_certificate=app.has_certificate, csrf=app.csrf_for(cookie),
                            error_code=error_code, login_name=login_name)
    body = await app.render(target.domain, DEFAULT_SKIN, "login.wssp", dataset)
    if body is None:
        log.error("no login.wssp for domain %s in any skin level", target.domain)
        return await error_page(app, target.domain, "The login page is missing.",
                                "noLoginPage", 500)
    response = _html(body, status)
    response.set_cookie(LOGIN_COOKIE, cookie, path="/login", httponly=True,
                        samesite="Strict", secure=request.secure)
    return response


async def handle_root(request: web.Request) -> web.StreamResponse:
    app: WebUser = request.app[WEBUSER]
    target = await app.place(request)
    return await not_a_domain(app, target) or await login_page(app, request, target)


async def handle_login_get(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/")


async def handle_login(request: web.Request) -> web.StreamResponse:
    """``POST /login`` (issue 10 point 8): CSRF, then the guarded login."""
    app: WebUser = request.app[WEBUSER]
    target = await app.place(request)
    refused = await not_a_domain(app, target)
    if refused is not None:
        return refused
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return await error_page(app, target.domain, "The login form was not sent as a form.",
                                "badRequest", 400)
    form = await request.post()
    token, name, password = (form.get(k) for k in ("csrfToken", "Username", "Password"))
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if (not isinstance(token, str) or not cookie
            or not hmac.compare_digest(token.encode("utf-8", "replace"),
                                       app.csrf_for(cookie).encode())):
        log.info("WebUser login from %s refused: missing or wrong CSRF token", request.remote)
        return await error_page(app, target.domain, "The login form has expired or did not "
                                "come from this site. Reload the login page and try again.",
                                "badToken", 403)
    if (not isinstance(name, str) or not isinstance(password, str) or not name.strip()
            or len(name) > MAX_NAME or len(password) > MAX_PASSWORD):
        return await login_page(app, request, target, error_code="badPassword",
                                login_name=name if isinstance(name, str) else "")
    name = name.strip()
    login = name if ("@" in name or "%" in name) else f"{name}@{target.domain}"
    client_ip = _client_ip(request)
    attempt = await auth.guarded_login(
        app.services, app.guard, app.settings, client_ip, login,
        lambda: app.run(_check_password, app.services, login, password), service=GUARD_SERVICE,
    )
    account = attempt.account
    if account is None:
        return await login_page(app, request, target, error_code="badPassword", login_name=name)
    if not await app.run(app.services.directory.service_enabled, account, SERVICE):
        log.info("WebUser login of %s from %s refused: WebMail not in AccessModes",
                 account, client_ip)
        return await login_page(app, request, target, error_code="serviceDisabled",
                                login_name=name)
    await app.run(app.mail.ensure_inbox, account)
    session = app.sessions.create(account, account.rpartition("@")[2], skin=DEFAULT_SKIN,
                                  client_ip=client_ip, secure=request.secure)
    log.info("WebUser login %s from %s (%s)", account, client_ip,
             "TLS" if request.secure else "clear text")
    response = web.Response(status=303,
                            headers={"Location": f"/Session/{session.id}/Mailboxes.wssp"})
    response.set_cookie(SESSION_COOKIE, session.cookie, path=f"/Session/{session.id}/",
                        httponly=True, samesite="Strict", secure=request.secure)
    response.del_cookie(LOGIN_COOKIE, path="/login")
    response.headers["Cache-Control"] = "no-store"
    return response


def _check_password(services: Services, login: str, password: str) -> str | None:
    try:
        return auth.check_password(services, login, password)
    except UnicodeError:  # a password that is not text cannot match
        return None


# -- skin files --------------------------------------------------------------------------


def _etag(version: tuple[str, float]) -> str:
    digest = hashlib.sha256(f"{version[0]}\0{version[1]!r}".encode()).hexdigest()[:24]
    return f'"{digest}"'


def _not_modified(request: web.Request, etag: str, mtime: datetime) -> bool:
    """RFC 9110 §13.1: If-None-Match wins over If-Modified-Since."""
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        return inm.strip() == "*" or etag in [t.strip().removeprefix("W/") for t in inm.split(",")]
    ims = request.headers.get("If-Modified-Since")
    if ims:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return mtime.replace(microsecond=0) <= since
    return False


async def skin_file(app: WebUser, request: web.Request, domain: str, skin: str, name: str
                    ) -> web.StreamResponse:
    """A static skin file with ``ETag``/``Last-Modified`` and 304 (issue 10 point 1)."""
    if not valid_file_name(name) or not valid_skin_name(skin or "x"):
        raise web.HTTPBadRequest(text="invalid skin or file name")
    version = await app.run(app.pages.version, domain, skin, name)
    if version is None:
        raise web.HTTPNotFound(text="no such skin file")
    etag = _etag(version)
    modified = datetime.fromtimestamp(version[1], UTC)
    headers = {"ETag": etag, "Last-Modified": format_datetime(modified, usegmt=True),
               "Cache-Control": "no-cache"}
    if _not_modified(request, etag, modified):
        return web.Response(status=304, headers=headers)
    found = await app.run(app.pages.static, domain, skin, name)
    if found is None:
        raise web.HTTPNotFound(text="no such skin file")
    etag = _etag((found.level, found.mtime))
    headers["ETag"] = etag
    headers["Last-Modified"] = format_datetime(datetime.fromtimestamp(found.mtime, UTC),
                                               usegmt=True)
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    response = web.Response(body=found.data, headers=headers)
    response.content_type = kind
    return response


async def handle_skin_file(request: web.Request) -> web.StreamResponse:
    app: WebUser = request.app[WEBUSER]
    target = await app.place(request)
    refused = await not_a_domain(app, target)
    if refused is not None:
        return refused
    skin = request.match_info.get("skin", DEFAULT_SKIN)
    return await skin_file(app, request, target.domain, skin, request.match_info["name"])


# -- sessions ----------------------------------------------------------------------------


async def handle_session(request: web.Request) -> web.StreamResponse:
    """``/Session/<id>/<request>`` (web.md §2): the session or the login page."""
    app: WebUser = request.app[WEBUSER]
    sid, what = request.match_info["sid"], request.match_info["request"]
    session = app.sessions.check(sid, request.cookies.get(SESSION_COOKIE), _client_ip(request),
                                 bind_ip=app.settings.flag("WebUserBindIP"))
    if session is None:
        target = await app.place(request)
        refused = await not_a_domain(app, target)
        if refused is not None:
            return refused
        return await login_page(app, request, target, error_code="sessionExpired", status=403)
    if what == "Logout":
        return await logout(app, request, session)
    if what == "Mailboxes.wssp":
        return await mailboxes_page(app, request, session)
    if what == "Mailbox.wssp":
        return await mailbox_page(app, request, session)
    if what == "Message.wssp":
        return await message_page(app, request, session)
    if what.lower().endswith((".wssp", ".wssi")):
        raise web.HTTPNotFound(text="no such page")
    return await skin_file(app, request, session.domain, session.skin, what)


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
        body = _builtin_page(
            "Mailboxes",
            f'<p>Logged in as {dataset["accountName"]}.</p><ul class="mailboxes">{items}</ul>'
            f'<p><a href="Logout">Log out</a></p>')
    return _no_gzip(_html(body))


NO_GZIP = "waypost.no_gzip"
"""Set on a response that must not be compressed: session pages that show
mail content or mailbox names (attacker-chosen text) beside the session's
secrets (BREACH; see the module docstring)."""


def _no_gzip(response: web.Response) -> web.Response:
    response[NO_GZIP] = True
    return response


MAIL_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (NoPermission, 403, "noPermission"),
    (NotFound, 404, "notFound"),
    (InvalidMailboxName, 400, "badMailboxName"),
    (MailboxError, 400, "mailboxError"),
    (StoreError, 503, "storeError"),
)


async def mail_refusal(app: WebUser, request: web.Request, session: WebSession,
                       exc: Exception) -> web.Response:
    """A clear page for a refused or failed mail request (never its data):
    403 without the right, 404 for what is not there, 400 for a bad
    parameter; the service's message says why."""
    status, code = next(((s, c) for kind, s, c in MAIL_ERRORS if isinstance(exc, kind)),
                        (400, "badRequest"))
    if status >= 500:
        log.error("webmail request of %s failed: %s", session.account, exc)
    text = str(exc) if not isinstance(exc, StoreError) or status < 500 else \
        "The mail store cannot answer now. Try again later."
    return _no_gzip(await error_page(app, session.domain, text, code, status))


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
    return _no_gzip(_html(body))


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
    response = _no_gzip(_html(body))
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
    sid = request.match_info["sid"]
    session = app.sessions.check(sid, request.cookies.get(SESSION_COOKIE), _client_ip(request),
                                 bind_ip=app.settings.flag("WebUserBindIP"))
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
    return _no_gzip(response)


async def logout(app: WebUser, request: web.Request, session: WebSession) -> web.Response:
    app.sessions.end(session.id)
    log.info("WebUser logout %s from %s", session.account, _client_ip(request))
    dataset = session_dataset(request, session)
    body = await app.render(session.domain, session.skin, "logout.wssp", dataset)
    if body is None:
        body = _builtin_page("Logged out", '<p><a href="/">Log in again</a></p>')
    response = _html(body)
    response.del_cookie(SESSION_COOKIE, path=f"/Session/{session.id}/")
    return response


# -- the application -------------------------------------------------------------------------


def _wants_gzip(request: web.Request) -> bool:
    for part in request.headers.get("Accept-Encoding", "").lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() == "gzip":
            q = params.strip().removeprefix("q=")
            return not (params and re.fullmatch(r"0(\.0*)?", q))
    return False


@web.middleware
async def compress(request: web.Request, handler: Callable[[web.Request],
                   Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """gzip for text bodies when the client accepts it (issue 10 point 1)."""
    response = await handler(request)
    if (isinstance(response, web.Response) and isinstance(response.body, bytes)
            and not response.get(NO_GZIP)
            and COMPRESSIBLE.match(response.content_type)
            and len(response.body) >= MIN_COMPRESS):
        response.headers["Vary"] = "Accept-Encoding"
        if _wants_gzip(request):
            response.enable_compression(ContentCoding.gzip)
    return response


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


WEBUSER = web.AppKey("webuser", WebUser)


def build_app(webuser: WebUser, *, max_request: int) -> web.Application:
    """The WebUser application: routes, gzip, security headers, bounded bodies."""
    app = web.Application(middlewares=[compress], client_max_size=max_request)
    app[WEBUSER] = webuser
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/", handle_root)
    app.router.add_get("/login", handle_login_get)
    app.router.add_post("/login", handle_login)
    app.router.add_get("/Session/{sid}/Part/{rest:.+}", handle_part)
    app.router.add_get("/Session/{sid}/{request}", handle_session)
    app.router.add_get("/skins/{name}", handle_skin_file)
    app.router.add_get("/skins/{skin}/{name}", handle_skin_file)
    app.router.add_get("/{name}", handle_skin_file)
    return app
