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

import hashlib
import hmac
import mimetypes
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_response import ContentCoding

from waypost.protocols.http import account as account_pages
from waypost.protocols.http import compose, filepages, folders, mailpages, sites
from waypost.protocols.http.common import (
    COMPRESSIBLE,
    DEFAULT_SKIN,
    GUARD_SERVICE,
    LOGIN_COOKIE,
    MAX_NAME,
    MAX_PASSWORD,
    MIN_COMPRESS,
    NO_GZIP,
    SECURITY_HEADERS,
    SERVICE,
    SESSION_COOKIE,
    WEBUSER,
    BadForm,
    SessionAction,
    SessionPage,
    WebUser,
    builtin_page,
    client_ip,
    error_page,
    html_page,
    log,
    not_modified,
    safe_text,
    session_dataset,
    valid_file_name,
    valid_skin_name,
)
from waypost.protocols.http.sessions import WebSession
from waypost.services import auth
from waypost.services.container import Services
from waypost.services.webdomain import Place, WebTarget, host_name

__all__ = ["WebUser", "build_app", "login_dataset", "safe_text", "valid_file_name"]

T = TypeVar("T")
MODULES = (folders, mailpages, compose, account_pages, filepages)
"""The page modules of a session, each with its ``PAGES`` and ``ACTIONS``."""


def _merged(tables: list[dict[str, T]]) -> dict[str, T]:
    """One table from the modules' tables; a name two modules claim is a
    programming error found at import, never one silently shadowing the other."""
    out: dict[str, T] = {}
    for table in tables:
        clash = out.keys() & table.keys()
        if clash:
            raise RuntimeError(f"session page or action defined twice: {sorted(clash)}")
        out.update(table)
    return out


PAGES: dict[str, SessionPage] = _merged([m.PAGES for m in MODULES])
"""Every GET page of a session, by name."""
ACTIONS: dict[str, SessionAction] = _merged([m.ACTIONS for m in MODULES])
"""Every POST of a session, by name (each called after the CSRF check)."""


# -- pages outside a session ----------------------------------------------------------------


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
        return await error_page(app, "", f"{target.host} is a personal web site: it has no "
                                "WebUser pages.", "noSite", 404)
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
    response = html_page(body, status)
    response.set_cookie(LOGIN_COOKIE, cookie, path="/login", httponly=True,
                        samesite="Strict", secure=request.secure)
    return response


async def handle_root(request: web.Request) -> web.StreamResponse:
    app: WebUser = request.app[WEBUSER]
    target = await app.place(request)
    if target.place is Place.SITE:  # a host name routed to an account: its site
        return await sites.serve(app, request, target) or sites.not_found()
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
    address = client_ip(request)
    attempt = await auth.guarded_login(
        app.services, app.guard, app.settings, address, login,
        lambda: app.run(_check_password, app.services, login, password), service=GUARD_SERVICE,
    )
    account = attempt.account
    if account is None:
        return await login_page(app, request, target, error_code="badPassword", login_name=name)
    if not await app.run(app.services.directory.service_enabled, account, SERVICE):
        log.info("WebUser login of %s from %s refused: WebMail not in AccessModes",
                 account, address)
        return await login_page(app, request, target, error_code="serviceDisabled",
                                login_name=name)
    await app.run(app.mail.ensure_inbox, account)
    session = await app.run(app.sessions.create, account, account.rpartition("@")[2],
                            skin=await account_pages.login_skin(app, account),
                            client_ip=address, secure=request.secure)
    log.info("WebUser login %s from %s (%s)", account, address,
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
    if not_modified(request, etag, modified):
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
    """A skin file; the same URL as a personal site's when no skin file has
    that name (skin names win over account names with an empty
    ``WebSitePrefix``, web.md §6.2), or on a site's host name."""
    app: WebUser = request.app[WEBUSER]
    target = await app.place(request)
    if target.place is Place.SITE:
        return await sites.serve(app, request, target) or sites.not_found()
    refused = await not_a_domain(app, target)
    if refused is not None:
        return refused
    skin = request.match_info.get("skin", DEFAULT_SKIN)
    try:
        return await skin_file(app, request, target.domain, skin, request.match_info["name"])
    except (web.HTTPNotFound, web.HTTPBadRequest):
        site = await sites.serve(app, request, target)
        if site is None:
            raise
        return site



# -- sessions ----------------------------------------------------------------------------


async def _session_or_login(request: web.Request
                            ) -> tuple[WebUser, WebSession | None, web.StreamResponse | None]:
    """The request's checked session, or the answer to give instead: the
    login page with ``sessionExpired`` (403) for a dead or foreign session."""
    app: WebUser = request.app[WEBUSER]
    session = await app.session_of(request)
    if session is not None:
        return app, session, None
    target = await app.place(request)
    refused = await not_a_domain(app, target)
    if refused is None:
        refused = await login_page(app, request, target, error_code="sessionExpired",
                                   status=403)
    return app, None, refused


async def handle_session(request: web.Request) -> web.StreamResponse:
    """``GET /Session/<id>/<request>`` (web.md §2): a page, ``Logout``, or a
    file of the session's skin."""
    app, session, refused = await _session_or_login(request)
    if session is None:
        assert refused is not None
        return refused
    what = request.match_info["request"]
    if what == "Logout":
        return await logout(app, request, session)
    page = PAGES.get(what)
    if page is not None:
        return await page(app, request, session)
    if what.lower().endswith((".wssp", ".wssi")):
        raise web.HTTPNotFound(text="no such page")
    return await skin_file(app, request, session.domain, session.skin, what)


async def handle_session_post(request: web.Request) -> web.StreamResponse:
    """``POST /Session/<id>/<action>`` (issue 10 point 8): the session, a
    form body, then its ``csrfToken`` against the session's token (constant
    time) before the action sees anything; a missing or wrong token is 403
    and nothing is changed."""
    app, session, refused = await _session_or_login(request)
    if session is None:
        assert refused is not None
        return refused
    action = ACTIONS.get(request.match_info["request"])
    if action is None:
        raise web.HTTPNotFound(text="no such action")
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return await error_page(app, session.domain, "The request was not sent as a form.",
                                "badRequest", 400)
    form = await request.post()
    token = form.get("csrfToken")
    if not isinstance(token, str) or not session.csrf_ok(token):
        log.warning("WebUser %s: %s from %s refused: missing or wrong CSRF token",
                    session.account, request.match_info["request"], client_ip(request))
        return await error_page(app, session.domain, "The form has expired or did not come "
                                "from this site. Reload the page and try again.",
                                "badToken", 403)
    try:
        return await action(app, request, session, form)
    except BadForm as exc:
        return await error_page(app, session.domain, str(exc), "badRequest", 400)


async def logout(app: WebUser, request: web.Request, session: WebSession) -> web.Response:
    await app.run(app.sessions.end, session.id)
    log.info("WebUser logout %s from %s", session.account, client_ip(request))
    dataset = session_dataset(request, session)
    body = await app.render(session.domain, session.skin, "logout.wssp", dataset)
    if body is None:
        body = builtin_page("Logged out", '<p><a href="/">Log in again</a></p>')
    response = html_page(body)
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


def build_app(webuser: WebUser, *, max_request: int) -> web.Application:
    """The WebUser application: routes, gzip, security headers, bounded bodies."""
    app = web.Application(middlewares=[compress], client_max_size=max_request)
    app[WEBUSER] = webuser
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/", handle_root)
    app.router.add_get("/login", handle_login_get)
    app.router.add_post("/login", handle_login)
    app.router.add_get("/Session/{sid}/Part/{rest:.+}", mailpages.handle_part)
    app.router.add_get("/Session/{sid}/{request}", handle_session)
    app.router.add_post("/Session/{sid}/{request}", handle_session_post)
    app.router.add_get("/skins/{name}", handle_skin_file)
    app.router.add_get("/skins/{skin}/{name}", handle_skin_file)
    app.router.add_get("/{name}", handle_skin_file)
    app.router.add_route("*", "/{tail:.*}", sites.handle)  # personal sites: the last route
    return app
