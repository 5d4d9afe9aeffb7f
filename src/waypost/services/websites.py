"""Personal web sites (web.md §6.2): which account's File Storage a URL
means, whether it may be served, and what it takes to read ``private/``.
No HTTP here (``protocols/http/sites.py`` speaks it), so every decision is
unit-tested on names.

Invariants:

* an account name in a URL (``/~john/``) is routed as the ``access`` address
  ``john@<domain>`` through the Router, so account aliases, domain aliases
  and Router records apply; only a route that ends at a local account
  (no mailbox part) is a site; anything else is "no such site" (404);
* a site is served only while the WebSite service is enabled for both the
  account and its domain (AccessModes / DomainAccessModes, §4.2), else 403;
* a path with any folder named ``private`` (any case, at any depth)
  [waypost: "a folder named private and below", read as any such folder]
  needs an authenticated reader who is the owner, an administrator of the
  owner's domain with ``CanAccessWebSites``, or ``Master``;
* every path is checked by :func:`waypost.services.files.check_path` before
  the store sees it.

Everything blocks on the store: call from a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from waypost.services.container import Services
from waypost.services.files import check_path
from waypost.services.names import DirectoryError
from waypost.services.router.table import Kind
from waypost.storage.interface import InvalidFileName, NotFound

SERVICE = "WebSite"
PRIVATE = "private"
DEFAULT_PAGE = "default.html"


@dataclass(frozen=True, slots=True)
class Site:
    """An account's site as a request finds it."""

    owner: str
    """``name@domain`` of the account whose File Storage this is."""
    enabled: bool
    default_page: str


@dataclass(frozen=True, slots=True)
class SitePath:
    """A request's path split at the site: ``name`` the account part ("" for
    a host-name site), ``path`` inside the storage, ``slash`` whether the URL
    ended with ``/``."""

    name: str
    path: str
    slash: bool


def prefix_of(services: Services, domain: str) -> str:
    """The domain's ``WebSitePrefix`` (``~`` by default; may be empty)."""
    value = services.directory.effective_domain_settings(domain).get("WebSitePrefix", "~")
    return str(value if value is not None else "~")


def split_url(prefix: str, url_path: str) -> SitePath | None:
    """``/<prefix><name>/<rest>`` -> its parts, or None when the URL is not a
    site URL of this prefix. ``url_path`` is the decoded path."""
    if not url_path.startswith("/" + prefix):
        return None
    rest = url_path[1 + len(prefix):]
    name, sep, inner = rest.partition("/")
    if not name:
        return None
    return SitePath(name, inner, slash=bool(sep) and (inner == "" or inner.endswith("/")))


def storage_path(inner: str) -> str:
    """The storage path of the part of a URL after the site root;
    :class:`InvalidFileName` when it names nothing a site can hold."""
    return check_path(inner)


def is_private(path: str) -> bool:
    """Is ``path`` (a storage path) in or of a ``private`` folder?"""
    return any(part.lower() == PRIVATE for part in path.split("/"))


def find_site(services: Services, domain: str, name: str) -> Site | None:
    """The site of account ``name`` of ``domain`` (routed as an access
    address), or None."""
    if not name or "@" in name or "%" in name or "!" in name or len(name) > 255:
        return None
    result = services.router.route(f"{name}@{domain}", Kind.ACCESS, trusted=True)
    if result.error is not None or len(result.routes) != 1:
        return None
    route = result.routes[0]
    if route.module != "LOCAL" or route.mailbox or "@" not in route.queue:
        return None
    return site_of(services, route.queue)


def site_of(services: Services, owner: str) -> Site | None:
    """The site of an account (``name@domain``), or None when it is not one."""
    directory = services.directory
    try:
        record = directory.get_account(owner)
    except (NotFound, DirectoryError):
        return None
    address = f"{record.name}@{record.domain}"
    settings = directory.effective_account_settings(address)
    page = str(settings.get("DefaultWebPage") or DEFAULT_PAGE)
    try:
        page = check_path(page) or DEFAULT_PAGE
    except InvalidFileName:
        page = DEFAULT_PAGE
    return Site(address, directory.service_enabled(address, SERVICE), page)


class SiteCache:
    """:func:`prefix_of`, :func:`find_site` and :func:`site_of` answers kept
    until the store's version changes (any Directory, settings or Router
    change), so a busy site costs no Directory reads per request. Bounded;
    thread-safe enough for the worker pool (a race only recomputes)."""

    MAX = 10_000

    def __init__(self, services: Services) -> None:
        self.services = services
        self._version = -1
        self._answers: dict[tuple[str, str, str], object] = {}

    def _fresh(self) -> dict[tuple[str, str, str], object]:
        version = self.services.store.version()
        if version != self._version or len(self._answers) > self.MAX:
            self._answers = {}
            self._version = version
        return self._answers

    def prefix(self, domain: str) -> str:
        answers, key = self._fresh(), ("prefix", domain.lower(), "")
        if key not in answers:
            answers[key] = prefix_of(self.services, domain)
        return str(answers[key])

    def find(self, domain: str, name: str) -> Site | None:
        answers, key = self._fresh(), ("find", domain.lower(), name.lower())
        if key not in answers:
            answers[key] = find_site(self.services, domain, name)
        found = answers[key]
        return found if isinstance(found, Site) else None

    def of(self, owner: str) -> Site | None:
        answers, key = self._fresh(), ("of", owner.lower(), "")
        if key not in answers:
            answers[key] = site_of(self.services, owner)
        found = answers[key]
        return found if isinstance(found, Site) else None


def may_read_private(services: Services, reader: str, owner: str) -> bool:
    """The owner, or an administrator of the owner's domain with
    ``CanAccessWebSites`` (``Master`` included)."""
    if reader.lower() == owner.lower():
        return True
    return services.directory.has_domain_right(reader, owner.rpartition("@")[2],
                                               "CanAccessWebSites")
