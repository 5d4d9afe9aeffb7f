"""WebDAV on personal site URLs (RFC 4918 class 1 and 2; issue 11 points 6
and 7, web.md §6.1): OPTIONS, PROPFIND, PROPPATCH, MKCOL, PUT, DELETE,
COPY, MOVE, LOCK and UNLOCK on ``/~account/...`` and on host-name sites;
GET and HEAD stay :mod:`sites`'s (public, except ``private/``).

Why not WsgiDAV (the brief's first choice) [waypost]: its write path is
push-based (``begin_write`` hands WsgiDAV a file object to write into)
while :meth:`AccountFiles.write` pulls an iterable of chunks inside the
store's atomic write, so every PUT would need a second thread and a queue
on top of the WSGI bridge thread; its hrefs and ``Destination`` checks
assume static mount paths, while a site's root is found per request
(``WebSitePrefix``, aliases, host names); and authentication must go
through the process-wide async login guard. The ten methods over
:class:`AccountFiles` are a few hundred lines here, with every rule kept in
the service and nothing blocking the loop.

Invariants:

* every method here needs HTTP Basic authentication (done by :mod:`sites`
  before :func:`handle` is called) as the owner or a web-site administrator;
  the store is reached only through :class:`AccountFiles` with that actor,
  so the service's rights, names and quota rules hold for every write;
* a name :func:`check_path` refuses (``..``, ``%2e%2e``, look-alikes of
  ``/``, ``index.wssp``) is 403 Forbidden [waypost: RFC 4918 has no code
  for it; 403 is its "the server refuses" answer, with the reason in the
  body]; a ``Destination`` outside the request's site (another host, another
  account, another scheme) is 502 Bad Gateway (RFC 4918 §9.8.5, §9.9.4);
  over ``MaxWebSize``/``MaxWebFiles`` is 507 Insufficient Storage;
* request bodies are streamed: a PUT goes chunk by chunk from the socket
  into the store's temporary file in a worker thread (never held in
  memory); a chunk that does not come within ``WebDAVBodyTimeout`` seconds
  drops the request with nothing stored; at most :data:`UPLOAD_SLOTS`
  uploads run at once (503 beyond), so stalled clients never take every
  worker;
* XML bodies are bounded (:data:`MAX_XML`, 413 above) and parsed by
  ``defusedxml`` (DTDs and entities refused: 400);
* PROPFIND with ``Depth: infinity`` is refused (403
  ``propfind-finite-depth``, RFC 4918 §9.1);
* locks (class 2) live in this process's memory [waypost: a restart ends
  them, like their timeouts, at most :data:`MAX_TIMEOUT` seconds]; a write
  to a locked resource needs the lock's token in the ``If`` header, submitted
  by the principal who took the lock (423 otherwise, RFC 4918 §7);
* dead properties (PROPPATCH) are kept by the service
  (:class:`waypost.services.files.DeadProperties`) in the data directory,
  bounded, and follow COPY, MOVE and DELETE.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import mimetypes
import re
import time
import urllib.parse
import uuid
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from waypost.protocols.http.common import WebUser
from waypost.services.files import (
    AccountFiles,
    AlreadyExists,
    FileEntry,
    FileError,
    InvalidFileName,
    NotAllowed,
    NotFound,
    QuotaExceeded,
    StoreError,
    check_path,
)

if TYPE_CHECKING:
    from waypost.protocols.http.sites import Located

log = logging.getLogger("waypost.http.webdav")

METHODS = frozenset({"OPTIONS", "PROPFIND", "PROPPATCH", "MKCOL", "PUT", "DELETE", "COPY",
                     "MOVE", "LOCK", "UNLOCK"})
ALLOW = ("OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, PROPPATCH, MKCOL, COPY, MOVE, LOCK, "
         "UNLOCK")
DAV = "DAV:"
MAX_XML = 64 * 1024
"""Largest XML request body (PROPFIND, PROPPATCH, LOCK) [waypost]."""
CHUNK = 256 * 1024
UPLOAD_SLOTS = 6
"""Uploads streaming at once per process; the WebUser pool has 8 workers."""
DEFAULT_TIMEOUT = 600
MAX_TIMEOUT = 3600
MAX_LOCKS = 10_000
MAX_OWNER = 4096

ET.register_namespace("D", DAV)


def _q(name: str) -> str:
    return f"{{{DAV}}}{name}"


class DavError(Exception):
    """A request answered with ``status``; ``condition`` is an RFC 4918
    precondition element name for a ``DAV:error`` body."""

    def __init__(self, status: int, text: str, condition: str | None = None,
                 href: str | None = None) -> None:
        super().__init__(text)
        self.status, self.text, self.condition, self.href = status, text, condition, href


def _xml_response(status: int, root: ET.Element, **headers: str) -> web.Response:
    body = b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8",
                                                                   xml_declaration=False)
    return web.Response(status=status, body=body, headers=headers,
                        content_type="application/xml", charset="utf-8")


def _error_response(error: DavError) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if error.condition is None:
        return web.Response(status=error.status, text=error.text + "\n", headers=headers)
    root = ET.Element(_q("error"))
    cond = ET.SubElement(root, _q(error.condition))
    if error.href is not None:
        ET.SubElement(cond, _q("href")).text = error.href
    return _xml_response(error.status, root, **headers)


def _file_error(exc: StoreError, *, missing: int = 404, exists: int = 412) -> DavError:
    """The status of a service refusal (module docstring)."""
    if isinstance(exc, QuotaExceeded):
        return DavError(507, f"Insufficient Storage: {exc}")
    if isinstance(exc, NotAllowed):
        return DavError(403, f"Forbidden: {exc}")
    if isinstance(exc, InvalidFileName):
        return DavError(403, f"Forbidden: {exc}")
    if isinstance(exc, NotFound):
        return DavError(missing, f"{'Not Found' if missing == 404 else 'Conflict'}: {exc}")
    if isinstance(exc, AlreadyExists):
        return DavError(exists, f"Already exists: {exc}")
    return DavError(409, f"Conflict: {exc}")


# -- locks (class 2) ---------------------------------------------------------------------


@dataclass(slots=True)
class Lock:
    token: str
    site: str
    """The owner of the site (lower case)."""
    path: str
    infinite: bool
    exclusive: bool
    principal: str
    owner_xml: str | None
    timeout: int
    expires: float = 0.0
    root_href: str = ""

    def covers(self, site: str, path: str) -> bool:
        if site != self.site:
            return False
        return (path == self.path or (self.infinite and (
            self.path == "" or path.startswith(self.path + "/"))))

    def inside(self, site: str, path: str) -> bool:
        return site == self.site and (path == "" or self.path == path
                                      or self.path.startswith(path + "/"))


@dataclass
class Locks:
    """The process's WebDAV locks; used from the event loop only (no thread
    touches them), so no mutex is needed."""

    by_token: dict[str, Lock] = field(default_factory=dict)

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [t for t, lock in self.by_token.items() if lock.expires <= now]:
            del self.by_token[token]

    def covering(self, site: str, path: str) -> list[Lock]:
        self._expire()
        return [lock for lock in self.by_token.values() if lock.covers(site, path)]

    def inside(self, site: str, path: str) -> list[Lock]:
        self._expire()
        return [lock for lock in self.by_token.values() if lock.inside(site, path)]

    def add(self, lock: Lock) -> None:
        self._expire()
        if len(self.by_token) >= MAX_LOCKS:
            raise DavError(503, "Service Unavailable: too many locks")
        lock.expires = time.monotonic() + lock.timeout
        self.by_token[lock.token] = lock

    def drop_inside(self, site: str, path: str) -> None:
        for lock in self.inside(site, path):
            self.by_token.pop(lock.token, None)


LOCKS = Locks()
_UPLOADS: weakref.WeakKeyDictionary[WebUser, asyncio.Semaphore] = weakref.WeakKeyDictionary()


# -- the If header (RFC 4918 §10.4) ------------------------------------------------------

_IF_TOKEN = re.compile(r"\s*(<[^>]*>|\(|\)|\[[^\]]*\]|not\b)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Condition:
    negate: bool
    token: str | None
    etag: str | None


IfLists = list[tuple[str | None, list[Condition]]]


def parse_if(header: str) -> IfLists:
    """The header's lists: (resource tag or None, conditions); 400 if malformed."""
    lists: IfLists = []
    tag: str | None = None
    pos = 0
    bad = DavError(400, "Bad Request: malformed If header")
    while pos < len(header):
        if not header[pos:].strip():
            break
        match = _IF_TOKEN.match(header, pos)
        if match is None:
            raise bad
        item, pos = match.group(1), match.end()
        if item.startswith("<"):
            tag = item[1:-1]
            continue
        if item != "(":
            raise bad
        conditions: list[Condition] = []
        negate = False
        while True:
            match = _IF_TOKEN.match(header, pos)
            if match is None:
                raise bad
            item, pos = match.group(1), match.end()
            if item == ")":
                break
            if item.lower() == "not":
                negate = True
            elif item.startswith("<"):
                conditions.append(Condition(negate, item[1:-1], None))
                negate = False
            elif item.startswith("["):
                conditions.append(Condition(negate, None, item[1:-1]))
                negate = False
            else:
                raise bad
        if not conditions:
            raise bad
        lists.append((tag, conditions))
    if not lists:
        raise bad
    return lists


def etag_of(entry: FileEntry) -> str:
    return f'"{int(entry.mtime * 1_000_000):x}-{entry.size:x}"'


# -- a request against a site --------------------------------------------------------------


@dataclass
class Dav:
    app: WebUser
    request: web.Request
    where: Located
    actor: str
    files: AccountFiles

    @property
    def owner(self) -> str:
        return self.where.site.owner

    @property
    def site(self) -> str:
        return self.where.site.owner.lower()

    async def run_files(self, fn_name: str, *args: object, missing: int = 404,
                        exists: int = 412, **kwargs: object) -> object:
        """An :class:`AccountFiles` call in the pool; service refusals become
        :class:`DavError`."""
        fn = getattr(self.files, fn_name)
        try:
            return await self.app.run(fn, self.owner, *args, actor=self.actor, **kwargs)
        except (FileError, NotFound, AlreadyExists) as exc:
            raise _file_error(exc, missing=missing, exists=exists) from None

    async def stat(self, path: str) -> FileEntry | None:
        try:
            entry = await self.run_files("stat", path)
        except DavError as exc:
            if exc.status == 404:
                return None
            raise
        assert isinstance(entry, FileEntry)
        return entry

    def href(self, path: str, folder: bool) -> str:
        root = self.where.root_url
        if not path:
            return root
        return root + urllib.parse.quote(path) + ("/" if folder else "")

    def path_of_url(self, url: str) -> str:
        """The storage path of a URL of this site (``Destination``, ``If``
        tags), refusing any other host or site (502) and bad names (403)."""
        parts = urllib.parse.urlsplit(url)
        if (parts.scheme or parts.netloc) and (
                parts.scheme.lower() not in ("http", "https")
                or parts.netloc.lower() != self.request.host.lower()):
            raise DavError(502, "Bad Gateway: the destination is on another server")
        try:
            path = urllib.parse.unquote(parts.path, errors="strict")
        except UnicodeDecodeError:
            raise DavError(400, "Bad Request: the destination is not UTF-8") from None
        root = urllib.parse.unquote(self.where.root_url)
        if path + "/" == root:
            path = root
        if not path.startswith(root):
            raise DavError(502, "Bad Gateway: the destination is outside this web site")
        try:
            return check_path(path[len(root):])
        except InvalidFileName as exc:
            raise DavError(403, f"Forbidden: {exc}") from None

    def destination(self) -> str:
        header = self.request.headers.get("Destination", "")
        if not header or len(header) > 8192:
            raise DavError(400, "Bad Request: no usable Destination header")
        return self.path_of_url(header)

    def depth(self, default: str, allowed: tuple[str, ...]) -> str:
        value = self.request.headers.get("Depth", default).strip().lower()
        if value not in allowed:
            raise DavError(400, f"Bad Request: Depth {value[:20]!r} is not allowed here")
        return value

    def overwrite(self) -> bool:
        value = self.request.headers.get("Overwrite", "T").strip().upper()
        if value not in ("T", "F"):
            raise DavError(400, "Bad Request: Overwrite must be T or F")
        return value == "T"

    # -- If header and locks ---------------------------------------------------------

    async def evaluate_if(self, path: str) -> set[str]:
        """Check the ``If`` header (412 when no list holds) and return the
        lock tokens it submits."""
        header = self.request.headers.get("If")
        if header is None:
            return set()
        if len(header) > 8192:
            raise DavError(400, "Bad Request: If header too long")
        lists = parse_if(header)
        submitted = {c.token for _, conds in lists for c in conds
                     if c.token is not None and not c.negate}
        for tag, conditions in lists:
            try:
                target = self.path_of_url(tag) if tag is not None else path
            except DavError:
                continue
            if await self._holds(target, conditions):
                return submitted
        raise DavError(412, "Precondition Failed: no condition of the If header holds")

    async def _holds(self, path: str, conditions: list[Condition]) -> bool:
        entry: FileEntry | None = None
        if any(c.etag is not None for c in conditions):
            entry = await self.stat(path)
        current = {lock.token for lock in LOCKS.covering(self.site, path)}
        for c in conditions:
            if c.token is not None:
                ok = c.token in current
            else:
                ok = entry is not None and not entry.is_folder and etag_of(entry) == c.etag
            if ok == c.negate:
                return False
        return True

    def check_locks(self, submitted: set[str], path: str, *, tree: bool = False,
                    member: bool = True) -> None:
        """423 unless every lock on ``path`` (its ancestors' infinite locks,
        with ``tree`` the locks inside it, with ``member`` a lock on its
        parent folder) is submitted by the principal holding it."""
        locks = LOCKS.inside(self.site, path) if tree else []
        locks += LOCKS.covering(self.site, path)
        if member and path:
            parent = path.rpartition("/")[0]
            locks += [lk for lk in LOCKS.covering(self.site, parent) if lk.path == parent]
        for lock in locks:
            if lock.token not in submitted or lock.principal != self.actor.lower():
                raise DavError(423, "Locked", "lock-token-submitted", lock.root_href)


# -- request bodies --------------------------------------------------------------------------


def _timeout(app: WebUser) -> float:
    try:
        return float(app.settings.number("WebDAVBodyTimeout"))
    except (KeyError, ValueError):
        return 60.0


def _has_body(request: web.Request) -> bool:
    return request.content_length not in (None, 0) or "chunked" in request.headers.get(
        "Transfer-Encoding", "").lower()


async def read_xml(app: WebUser, request: web.Request) -> ET.Element | None:
    """The request's XML body (None when empty): bounded, read with the body
    timeout, parsed without DTDs or entities."""
    if request.content_length is not None and request.content_length > MAX_XML:
        raise DavError(413, "Request Entity Too Large")
    if not _has_body(request):
        return None
    data = bytearray()
    while True:
        try:
            chunk = await asyncio.wait_for(request.content.read(CHUNK), _timeout(app))
        except TimeoutError:
            raise DavError(408, "Request Timeout") from None
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_XML:
            raise DavError(413, "Request Entity Too Large")
    if not data.strip():
        return None
    try:  # LookupError: the XML declaration names an unknown encoding (found by fuzzing)
        root = SafeET.fromstring(bytes(data), forbid_dtd=True)
    except (DefusedXmlException, ET.ParseError, ValueError, LookupError):
        raise DavError(400, "Bad Request: the XML body is malformed or uses a DTD") from None
    return root


# -- PROPFIND / PROPPATCH ---------------------------------------------------------------


LIVE = ("resourcetype", "getcontentlength", "getcontenttype", "getlastmodified",
        "creationdate", "displayname", "getetag", "supportedlock", "lockdiscovery")


def _lock_element(parent: ET.Element, lock: Lock) -> None:
    active = ET.SubElement(parent, _q("activelock"))
    ET.SubElement(ET.SubElement(active, _q("locktype")), _q("write"))
    ET.SubElement(ET.SubElement(active, _q("lockscope")),
                  _q("exclusive" if lock.exclusive else "shared"))
    ET.SubElement(active, _q("depth")).text = "infinity" if lock.infinite else "0"
    if lock.owner_xml:
        try:
            active.append(SafeET.fromstring(lock.owner_xml))
        except (DefusedXmlException, ET.ParseError):
            pass
    left = max(0, int(lock.expires - time.monotonic()))
    ET.SubElement(active, _q("timeout")).text = f"Second-{left}"
    ET.SubElement(ET.SubElement(active, _q("locktoken")), _q("href")).text = lock.token
    ET.SubElement(ET.SubElement(active, _q("lockroot")), _q("href")).text = lock.root_href


def _live(dav: Dav, entry: FileEntry, name: str) -> ET.Element | None:
    """The live property ``name`` of ``entry``, or None when it has none."""
    elem = ET.Element(_q(name))
    if name == "resourcetype":
        if entry.is_folder:
            ET.SubElement(elem, _q("collection"))
    elif name == "getcontentlength":
        if entry.is_folder:
            return None
        elem.text = str(entry.size)
    elif name == "getcontenttype":
        if entry.is_folder:
            return None
        elem.text = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
    elif name == "getlastmodified":
        elem.text = email.utils.formatdate(entry.mtime, usegmt=True)
    elif name == "creationdate":
        elem.text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.mtime))
    elif name == "displayname":
        elem.text = entry.name or dav.owner.partition("@")[0]
    elif name == "getetag":
        if entry.is_folder:
            return None
        elem.text = etag_of(entry)
    elif name == "supportedlock":
        for scope in ("exclusive", "shared"):
            entry_elem = ET.SubElement(elem, _q("lockentry"))
            ET.SubElement(ET.SubElement(entry_elem, _q("lockscope")), _q(scope))
            ET.SubElement(ET.SubElement(entry_elem, _q("locktype")), _q("write"))
    elif name == "lockdiscovery":
        for held in LOCKS.covering(dav.site, entry.path):
            _lock_element(elem, held)
    else:
        return None
    return elem


def _response(multistatus: ET.Element, href: str, found: list[ET.Element],
              missing: list[str]) -> None:
    response = ET.SubElement(multistatus, _q("response"))
    ET.SubElement(response, _q("href")).text = href
    for elems, status in ((found, "200 OK"), (missing, "404 Not Found")):
        if not elems:
            continue
        propstat = ET.SubElement(response, _q("propstat"))
        prop = ET.SubElement(propstat, _q("prop"))
        for item in elems:
            prop.append(item if isinstance(item, ET.Element) else ET.Element(item))
        ET.SubElement(propstat, _q("status")).text = f"HTTP/1.1 {status}"


def _dead(text: str) -> ET.Element | None:
    try:
        return SafeET.fromstring(text)
    except (DefusedXmlException, ET.ParseError):
        return None


async def propfind(dav: Dav) -> web.StreamResponse:
    depth = dav.request.headers.get("Depth", "infinity").strip().lower()
    if depth not in ("0", "1"):
        raise DavError(403, "Forbidden: Depth infinity is not supported",
                       "propfind-finite-depth")
    body = await read_xml(dav.app, dav.request)
    mode, wanted = "allprop", []
    if body is not None:
        if body.tag != _q("propfind"):
            raise DavError(400, "Bad Request: not a propfind body")
        for child in body:
            if child.tag == _q("propname"):
                mode = "propname"
            elif child.tag == _q("allprop"):
                mode = "allprop"
            elif child.tag == _q("prop"):
                mode, wanted = "prop", [p.tag for p in child]
    path = dav.where.path
    entries = await dav.app.run(_gather, dav.files, dav.owner, path, dav.actor, depth == "1")
    if entries is None:
        raise DavError(404, "Not Found")
    multistatus = ET.Element(_q("multistatus"))
    for entry, dead in entries:
        href = dav.href(entry.path, entry.is_folder)
        if mode == "prop":
            found: list[ET.Element] = []
            missing: list[str] = []
            for tag in wanted:
                elem = _live(dav, entry, tag[len(DAV) + 2:]) if tag.startswith(
                    "{" + DAV + "}") else (_dead(dead[tag]) if tag in dead else None)
                if elem is None:
                    missing.append(tag)
                else:
                    found.append(elem)
            _response(multistatus, href, found, missing)
            continue
        found = [e for e in (_live(dav, entry, n) for n in LIVE) if e is not None]
        found += [e for e in (_dead(t) for t in dead.values()) if e is not None]
        if mode == "propname":
            found = [ET.Element(e.tag) for e in found]
        _response(multistatus, href, found, [])
    return _xml_response(207, multistatus)


def _gather(files: AccountFiles, owner: str, path: str, actor: str, children: bool
            ) -> list[tuple[FileEntry, dict[str, str]]] | None:
    """Blocking: the entries PROPFIND reports, with their dead properties."""
    try:
        entry = files.stat(owner, path, actor) if path else FileEntry("", True, 0, time.time())
        entries = [entry]
        if children and entry.is_folder:
            entries += files.list(owner, path, actor)
    except NotFound:
        return None
    props = files.properties_of(owner, (e.path for e in entries if e.path), actor)
    return [(e, props.get(e.path, {})) for e in entries]


async def proppatch(dav: Dav) -> web.StreamResponse:
    body = await read_xml(dav.app, dav.request)
    if body is None or body.tag != _q("propertyupdate"):
        raise DavError(400, "Bad Request: not a propertyupdate body")
    path = dav.where.path
    dav.check_locks(await dav.evaluate_if(path), path, member=False)
    changes: list[tuple[str, str | None]] = []
    for action in body:
        if action.tag not in (_q("set"), _q("remove")):
            continue
        for prop in action.findall(_q("prop")):
            for item in prop:
                text = ET.tostring(item, encoding="unicode")
                changes.append((item.tag, text if action.tag == _q("set") else None))
    if not changes:
        raise DavError(400, "Bad Request: no properties to change")
    if not path:
        raise DavError(403, "Forbidden: the site root has no properties")
    protected = [tag for tag, _ in changes if tag.startswith("{" + DAV + "}")]
    statuses: dict[str, str] = {}
    if protected:
        for tag, _ in changes:
            statuses[tag] = "403 Forbidden" if tag in protected else "424 Failed Dependency"
    else:
        try:
            await dav.run_files("set_properties", path, changes)
            statuses = {tag: "200 OK" for tag, _ in changes}
        except DavError as exc:
            if exc.status != 507:
                raise
            statuses = {tag: "507 Insufficient Storage" for tag, _ in changes}
    multistatus = ET.Element(_q("multistatus"))
    response = ET.SubElement(multistatus, _q("response"))
    ET.SubElement(response, _q("href")).text = dav.href(path, False)
    for status in sorted(set(statuses.values())):
        propstat = ET.SubElement(response, _q("propstat"))
        prop = ET.SubElement(propstat, _q("prop"))
        for tag, value in statuses.items():
            if value == status:
                ET.SubElement(prop, tag)
        ET.SubElement(propstat, _q("status")).text = f"HTTP/1.1 {status}"
    return _xml_response(207, multistatus)


# -- MKCOL / PUT / DELETE / COPY / MOVE ------------------------------------------------------


async def _parent_exists(dav: Dav, path: str) -> None:
    parent = path.rpartition("/")[0]
    if not parent:
        return
    entry = await dav.stat(parent)
    if entry is None or not entry.is_folder:
        raise DavError(409, "Conflict: the parent folder does not exist")


async def mkcol(dav: Dav) -> web.StreamResponse:
    if _has_body(dav.request):
        raise DavError(415, "Unsupported Media Type: MKCOL takes no body")
    path = dav.where.path
    if not path or await dav.stat(path) is not None:
        raise DavError(405, "Method Not Allowed: it exists already")
    await _parent_exists(dav, path)
    dav.check_locks(await dav.evaluate_if(path), path)
    await dav.run_files("mkdir", path, missing=409, exists=405)
    return web.Response(status=201, headers={"Location": dav.href(path, True)})


async def put(dav: Dav) -> web.StreamResponse:
    path = dav.where.path
    if "Content-Range" in dav.request.headers:
        raise DavError(400, "Bad Request: partial PUT (Content-Range) is not supported")
    old = await dav.stat(path) if path else FileEntry("", True, 0, 0.0)
    if old is not None and old.is_folder:
        raise DavError(405, "Method Not Allowed: that is a folder")
    await _parent_exists(dav, path)
    dav.check_locks(await dav.evaluate_if(path), path)
    slots = _UPLOADS.setdefault(dav.app, asyncio.Semaphore(UPLOAD_SLOTS))
    if slots.locked():
        raise DavError(503, "Service Unavailable: too many uploads at once")
    async with slots:
        entry = await upload(dav, path)
    return web.Response(status=204 if old is not None else 201,
                        headers={"ETag": etag_of(entry)})


async def upload(dav: Dav, path: str) -> FileEntry:
    """Stream the request body into the store from a worker thread: each
    chunk is awaited on the loop with the body timeout, so memory holds at
    most a chunk or two and a stalled client ends with nothing stored."""
    loop = asyncio.get_running_loop()
    timeout = _timeout(dav.app)
    content = dav.request.content

    async def next_chunk() -> bytes:
        return await asyncio.wait_for(content.read(CHUNK), timeout)

    def chunks() -> Iterator[bytes]:
        while True:
            chunk = asyncio.run_coroutine_threadsafe(next_chunk(), loop).result()
            if not chunk:
                return
            yield chunk

    try:
        entry = await dav.run_files("write", path, chunks(), missing=409)
    except TimeoutError:
        log.info("site %s: PUT /%s stalled; dropped", dav.owner, path)
        raise DavError(408, "Request Timeout: the body stalled") from None
    except (OSError, web.HTTPException, asyncio.IncompleteReadError) as exc:
        log.info("site %s: PUT /%s body broken: %s", dav.owner, path, exc)
        raise DavError(400, "Bad Request: the body ended early") from None
    except Exception as exc:  # a payload error of aiohttp's parser: never a 500
        if exc.__class__.__module__.startswith("aiohttp"):
            log.info("site %s: PUT /%s body broken: %s", dav.owner, path, exc)
            raise DavError(400, "Bad Request: the body is broken") from None
        raise
    assert isinstance(entry, FileEntry)
    return entry


async def delete(dav: Dav) -> web.StreamResponse:
    path = dav.where.path
    if not path:
        raise DavError(403, "Forbidden: the site root cannot be deleted")
    entry = await dav.stat(path)
    if entry is None:
        raise DavError(404, "Not Found")
    if entry.is_folder:
        dav.depth("infinity", ("infinity",))
    dav.check_locks(await dav.evaluate_if(path), path, tree=True)
    await dav.run_files("remove", path)
    LOCKS.drop_inside(dav.site, path)
    return web.Response(status=204)


async def copy_move(dav: Dav, move: bool) -> web.StreamResponse:
    src = dav.where.path
    dst = dav.destination()
    overwrite = dav.overwrite()
    if not src or not dst:
        raise DavError(403, "Forbidden: the site root cannot be copied, moved or replaced")
    if src == dst:
        raise DavError(403, "Forbidden: the source and the destination are the same")
    entry = await dav.stat(src)
    if entry is None:
        raise DavError(404, "Not Found")
    depth = dav.depth("infinity", ("infinity",) if move or not entry.is_folder
                      else ("0", "infinity"))
    await _parent_exists(dav, dst)
    submitted = await dav.evaluate_if(src)
    if move:
        dav.check_locks(submitted, src, tree=True)
    dav.check_locks(submitted, dst, tree=True)
    if dst.startswith(src + "/") or src.startswith(dst + "/"):
        raise DavError(403, "Forbidden: a folder cannot be copied or moved into itself")
    existed = await dav.run_files("move" if move else "copy", src, dst, overwrite=overwrite,
                                  **({} if move else {"depth_zero": depth == "0"}),
                                  missing=409)
    LOCKS.drop_inside(dav.site, dst)
    if move:
        LOCKS.drop_inside(dav.site, src)
    return web.Response(status=204 if existed else 201,
                        headers={"Location": dav.href(dst, entry.is_folder)})


# -- LOCK / UNLOCK ------------------------------------------------------------------


_SECONDS = re.compile(r"(?i)second-([0-9]{1,40})")


def _lock_timeout(header: str) -> int:
    """RFC 4918 §10.7 ``Timeout``: the first usable value, bounded."""
    for item in header.split(","):
        item = item.strip()
        seconds = _SECONDS.fullmatch(item)
        if seconds is not None:  # ASCII digits only: "Second-²" is not a number
            return max(1, min(int(seconds.group(1)[:12]), MAX_TIMEOUT))
        if item.lower() == "infinite":
            return MAX_TIMEOUT
    return DEFAULT_TIMEOUT


def _lock_answer(status: int, lock: Lock, **headers: str) -> web.Response:
    prop = ET.Element(_q("prop"))
    _lock_element(ET.SubElement(prop, _q("lockdiscovery")), lock)
    return _xml_response(status, prop, **headers)


async def lock(dav: Dav) -> web.StreamResponse:
    path = dav.where.path
    body = await read_xml(dav.app, dav.request)
    timeout = _lock_timeout(dav.request.headers.get("Timeout", ""))
    if body is None:  # a refresh (RFC 4918 §9.10.2)
        submitted = await dav.evaluate_if(path)
        for held in LOCKS.covering(dav.site, path):
            if held.token in submitted and held.principal == dav.actor.lower():
                held.timeout = timeout
                held.expires = time.monotonic() + timeout
                return _lock_answer(200, held)
        raise DavError(412, "Precondition Failed: no lock of this resource was submitted",
                       "lock-token-matches-request-uri")
    if body.tag != _q("lockinfo"):
        raise DavError(400, "Bad Request: not a lockinfo body")
    scope = body.find(_q("lockscope"))
    kind = body.find(_q("locktype"))
    if scope is None or kind is None or kind.find(_q("write")) is None:
        raise DavError(400, "Bad Request: only write locks exist")
    exclusive = scope.find(_q("exclusive")) is not None
    owner = body.find(_q("owner"))
    owner_xml = ET.tostring(owner, encoding="unicode") if owner is not None else None
    if owner_xml is not None and len(owner_xml) > MAX_OWNER:
        raise DavError(400, "Bad Request: the lock owner is too long")
    infinite = dav.depth("infinity", ("0", "infinity")) == "infinity"
    entry = await dav.stat(path) if path else FileEntry("", True, 0, 0.0)
    if entry is None:
        await _parent_exists(dav, path)
    submitted = await dav.evaluate_if(path)
    conflicts = LOCKS.covering(dav.site, path) + (LOCKS.inside(dav.site, path)
                                                  if infinite else [])
    for held in conflicts:
        if held.exclusive or exclusive:
            raise DavError(423, "Locked", "no-conflicting-lock", held.root_href)
    if entry is None:
        dav.check_locks(submitted, path)
        await dav.run_files("write", path, iter(()), missing=409)
    folder = entry is not None and entry.is_folder
    new = Lock(f"urn:uuid:{uuid.uuid4()}", dav.site, path, infinite, exclusive,
               dav.actor.lower(), owner_xml, timeout, root_href=dav.href(path, folder))
    LOCKS.add(new)
    return _lock_answer(201 if entry is None else 200, new, **{"Lock-Token": f"<{new.token}>"})


async def unlock(dav: Dav) -> web.StreamResponse:
    token = dav.request.headers.get("Lock-Token", "").strip()
    if not (token.startswith("<") and token.endswith(">")):
        raise DavError(400, "Bad Request: no Lock-Token header")
    token = token[1:-1]
    held = LOCKS.by_token.get(token)
    if held is None or not held.covers(dav.site, dav.where.path):
        raise DavError(409, "Conflict: no such lock on this resource",
                       "lock-token-matches-request-uri")
    if held.principal != dav.actor.lower():
        raise DavError(403, "Forbidden: the lock belongs to someone else")
    LOCKS.by_token.pop(token, None)
    return web.Response(status=204)


async def options(dav: Dav) -> web.StreamResponse:
    return web.Response(status=200, headers={"DAV": "1, 2", "Allow": ALLOW,
                                             "MS-Author-Via": "DAV"})


async def handle(app: WebUser, request: web.Request, where: Located, actor: str
                 ) -> web.StreamResponse:
    """Answer a WebDAV request of ``actor`` (authenticated, allowed) on a
    located site path; ``where.invalid`` names a path the service refused."""
    try:
        if where.invalid is not None and request.method != "OPTIONS":
            raise DavError(403, f"Forbidden: {where.invalid}")
        dav = Dav(app, request, where, actor, AccountFiles(app.services))
        method = request.method
        if method == "OPTIONS":
            response = await options(dav)
        elif method == "PROPFIND":
            response = await propfind(dav)
        elif method == "PROPPATCH":
            response = await proppatch(dav)
        elif method == "MKCOL":
            response = await mkcol(dav)
        elif method == "PUT":
            response = await put(dav)
        elif method == "DELETE":
            response = await delete(dav)
        elif method in ("COPY", "MOVE"):
            response = await copy_move(dav, method == "MOVE")
        elif method == "LOCK":
            response = await lock(dav)
        else:
            response = await unlock(dav)
    except DavError as exc:
        response = _error_response(exc)
        if exc.status == 408:
            return await _drop(request, response)
    response.headers.setdefault("DAV", "1, 2")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _drop(request: web.Request, response: web.Response) -> web.Response:
    """Answer a stalled client and close its connection now: aiohttp would
    otherwise linger, reading the rest of the body for another 10 s."""
    response.force_close()
    response.headers["Content-Security-Policy"] = "sandbox"
    await response.prepare(request)
    await response.write_eof()
    if request.transport is not None:
        request.transport.close()
    return response
