"""Personal web sites over HTTP (web.md §6.2, issue 11 point 4): the files
of an account's File Storage at ``http://<domain>:8100/~<account>/...``
(the domain's ``WebSitePrefix``, which may be empty) and at host names the
Router sends to an account (``LoginPage@john.domain.dom`` -> john).

Invariants:

* which site and whether it may be served is :mod:`waypost.services.websites`'s
  decision; every path goes through ``files.check_path`` and the store's
  ``O_NOFOLLOW`` walk, so no URL reaches outside the account's storage;
* a folder URL without ``/`` is a 301 to the slash form; a folder is served
  by its ``DefaultWebPage``; there is never a directory listing (404);
* ``private`` folders need HTTP Basic authentication (401 with the domain as
  realm) through the process-wide login guard (failures count with every
  other protocol) as the owner or a web-site administrator [waypost: Basic
  only — Digest would need the plain password, which is never stored];
* every site response carries ``Content-Security-Policy: sandbox ...``
  without ``allow-same-origin`` [waypost]: a site shares host and port with
  WebUser sessions, so its pages run as an opaque origin and can never
  script a WebUser window or read its session URLs;
* files are sent by aiohttp's ``FileResponse`` (sendfile, single ``Range``,
  ``If-None-Match``/``If-Modified-Since``/``If-Range``, HEAD, ETag,
  Last-Modified, Content-Type from the extension); a multi-range request is
  answered with the whole file (200), as RFC 9110 §14.2 allows;
* every other method is WebDAV (:mod:`webdav`): it needs the same Basic
  authentication as ``private/`` (owner or web-site administrator) for
  every path, PROPFIND and OPTIONS included;
* blocking work runs in the WebUser pool.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from waypost.protocols.http import webdav
from waypost.protocols.http.common import (
    WEBUSER,
    WebUser,
    client_ip,
    log,
    not_modified,
    server_address,
)
from waypost.services import auth, websites
from waypost.services.files import AccountFiles, FileEntry, InvalidFileName, NotFound
from waypost.services.webdomain import Place, WebTarget

SITE_CSP = ("sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads; "
            "frame-ancestors 'self'")
READ_METHODS = ("GET", "HEAD")
GUARD_SERVICE = "WebSite"
MAX_CREDENTIALS = 2048
SMALL = 128 * 1024
"""Files up to this size are read in the request's one trip to the worker
pool and sent from memory (no further pool trips for stat and open); larger
ones, and every Range request, go through ``FileResponse`` (sendfile)."""


@dataclass(frozen=True, slots=True)
class Located:
    """A request placed in a site: whose, the storage path, the URL of the
    site root (for redirects)."""

    site: websites.Site
    domain: str
    path: str
    slash: bool
    root_url: str
    invalid: str | None = None
    """Why the storage path was refused (then ``path`` is ""): GET answers
    404, WebDAV 403."""


def _plain(status: int, text: str, **headers: str) -> web.Response:
    response = web.Response(status=status, text=text + "\n", headers=headers)
    response.headers["Content-Security-Policy"] = SITE_CSP
    response.headers["Cache-Control"] = "no-store"
    return response


def not_found() -> web.Response:
    return _plain(404, "Not Found")


def _locate(app: WebUser, target: WebTarget, url_path: str) -> Located | None:
    """Blocking: the site and storage path a request means, or None."""
    cache = app.sites
    if target.place is Place.SITE:
        site = cache.of(target.account)
        inner, root = url_path.lstrip("/"), "/"
        slash = url_path.endswith("/")
    elif target.place is Place.DOMAIN:
        prefix = cache.prefix(target.domain)
        parts = websites.split_url(prefix, url_path)
        if parts is None:
            return None
        site = cache.find(target.domain, parts.name)
        inner, slash = parts.path, parts.slash
        root = f"/{prefix}{urllib.parse.quote(parts.name)}/"
    else:
        return None
    if site is None:
        return None
    try:
        path = websites.storage_path(inner)
    except InvalidFileName as exc:
        return Located(site, target.domain, "", slash, root, invalid=str(exc))
    return Located(site, target.domain, path, slash, root)


@dataclass(frozen=True, slots=True)
class Found:
    """What a located path is: ``folder`` (a folder URL), and the file to send
    (``entry`` and ``local``; None when there is nothing to send)."""

    folder: bool
    entry: FileEntry | None = None
    local: str | None = None
    data: bytes | None = None
    """The whole file when it is small (:data:`SMALL`): sent from memory."""


def _find(app: WebUser, where: Located) -> Found | None:
    """Blocking: the file a located request sends (a folder's default page),
    or None when the path names nothing."""
    files = AccountFiles(app.services)
    owner = where.site.owner
    try:
        entry = files.stat(owner, where.path)
    except (NotFound, InvalidFileName):
        return None
    path = where.path
    if entry.is_folder:
        path = f"{path}/{where.site.default_page}" if path else where.site.default_page
    try:
        with files.open(owner, path) as opened:
            data = opened.read() if opened.entry.size <= SMALL else None
            return Found(entry.is_folder, opened.entry, opened.local_path, data)
    except (NotFound, InvalidFileName):
        return Found(entry.is_folder)


async def _authorised(app: WebUser, request: web.Request, where: Located) -> bool:
    """HTTP Basic credentials of the owner or a web-site administrator."""
    account = await _login(app, request, where)
    return account is not None and await _may_write(app, account, where)


async def _may_write(app: WebUser, account: str, where: Located) -> bool:
    return await app.run(websites.may_read_private, app.services, account, where.site.owner)


async def _login(app: WebUser, request: web.Request, where: Located) -> str | None:
    """The account whose HTTP Basic credentials came with the request (checked
    through the login guard), or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value or len(value) > MAX_CREDENTIALS:
        return None
    try:
        login, sep, password = base64.b64decode(value.strip(), validate=True).decode(
            "utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not sep or not login:
        return None
    if "@" not in login and "%" not in login:
        login = f"{login}@{where.domain}"
    attempt = await auth.guarded_login(
        app.services, app.guard, app.settings, client_ip(request), login,
        lambda: app.run(auth.check_password, app.services, login, password),
        service=GUARD_SERVICE)
    return attempt.account


def _unauthorised(where: Located) -> web.Response:
    realm = where.domain.replace('"', "")
    return _plain(401, "Authorization Required",
                  **{"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'})


async def _dav(app: WebUser, request: web.Request, where: Located) -> web.StreamResponse:
    """A WebDAV request: the owner or a web-site administrator only."""
    if request.method not in webdav.METHODS:
        return _plain(405, "Method Not Allowed", Allow=webdav.ALLOW)
    if not where.site.enabled:
        return _plain(403, "Forbidden: this web site is switched off")
    actor = await _login(app, request, where)
    if actor is None:
        log.info("site %s: WebDAV %s refused to %s", where.site.owner, request.method,
                 client_ip(request))
        return _unauthorised(where)
    if not await _may_write(app, actor, where):
        # [waypost] authenticated as someone else: 403, so clients do not
        # prompt for the same password again and again
        log.info("site %s: WebDAV %s refused to %s", where.site.owner, request.method, actor)
        return _plain(403, "Forbidden: only the owner or a web-site administrator may do this")
    response = await webdav.handle(app, request, where, actor)
    response.headers["Content-Security-Policy"] = SITE_CSP
    return response


def _resolve(app: WebUser, target: WebTarget | None, host: str | None,
             server_ip: str | None, url_path: str, method: str
             ) -> tuple[Located | None, Found | None]:
    """Blocking, one trip to the pool: place the request (unless ``target``
    is known), locate the site, and find the file when it will be read."""
    if target is None:
        target = app.place_blocking(host, server_ip)
    where = _locate(app, target, url_path)
    if (where is None or method not in READ_METHODS or not where.site.enabled
            or where.invalid is not None):
        return where, None
    return where, _find(app, where)


async def serve(app: WebUser, request: web.Request, target: WebTarget | None
                ) -> web.StreamResponse | None:
    """The site response for a request, or None when it is not a site URL
    (the caller answers it otherwise). ``target`` None: place it here."""
    where, found = await app.run(_resolve, app, target, request.headers.get("Host"),
                                 server_address(request), request.path, request.method)
    if where is None:
        return None
    if request.method not in READ_METHODS:
        return await _dav(app, request, where)
    if where.invalid is not None:
        return not_found()
    if not where.site.enabled:
        return _plain(403, "Forbidden: this web site is switched off")
    if found is None:
        return not_found()
    if found.folder and not where.slash:
        # a folder named without its slash: 301 to the slash form (§6.2 [waypost])
        query = f"?{request.query_string}" if request.query_string else ""
        return _plain(301, "Moved Permanently", Location=request.path + "/" + query)
    if found.entry is None or found.local is None:
        return not_found()  # a folder without its default page: never a listing
    private = websites.is_private(found.entry.path)
    if private and not await _authorised(app, request, where):
        log.info("site %s: private %s refused to %s", where.site.owner, found.entry.path,
                 client_ip(request))
        return _unauthorised(where)
    headers = {"Content-Security-Policy": SITE_CSP,
               "Cache-Control": "private, no-cache" if private else "no-cache"}
    if found.data is not None and "Range" not in request.headers:
        return _small(request, found.entry, found.data, headers)
    # several ranges: aiohttp would refuse them (416); RFC 9110 §14.2 lets a
    # server ignore Range, so the whole file goes out (200)
    kind = _WholeFile if "," in request.headers.get("Range", "") else web.FileResponse
    return kind(found.local, headers=headers)


class _WholeFile(web.FileResponse):
    """A file sent whole whatever the request's ``Range`` says. (Preparing a
    plain ``FileResponse`` with a cloned request in the handler made aiohttp
    prepare it a second time with the original one: a 416 after the 200
    headers, an unhandled error in the log.)"""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return None
        return await super().prepare(request.clone(headers={
            k: v for k, v in request.headers.items() if k.lower() not in ("range", "if-range")}))


def _small(request: web.Request, entry: FileEntry, data: bytes, headers: dict[str, str]
           ) -> web.Response:
    """A small file from memory, with the validators ``FileResponse`` would
    give it (same ETag form), and 304 for a matching conditional GET."""
    etag = f'"{entry.mtime_ns:x}-{entry.size:x}"'
    modified = datetime.fromtimestamp(entry.mtime, UTC)
    headers = {**headers, "ETag": etag, "Last-Modified": format_datetime(modified, usegmt=True)}
    if not_modified(request, etag, modified):
        return web.Response(status=304, headers=headers)
    response = web.Response(body=data, headers=headers)  # HEAD: aiohttp sends no body
    response.content_type = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
    return response


async def handle(request: web.Request) -> web.StreamResponse:
    """The last route: a site URL, else 404."""
    app: WebUser = request.app[WEBUSER]
    response = await serve(app, request, None)
    return response if response is not None else not_found()
