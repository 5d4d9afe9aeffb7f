"""Skin pages: find a WSSP file through the skin search order, compile it once,
render it with a dataset (web.md §4, §5.3).

Invariants:

* a compiled page is cached under (domain, skin, file name) together with the
  version it was compiled from (the level it was found at and its mtime);
  every use asks the skins service for the current version first (stat calls
  only), so a changed, added or deleted skin file takes effect on the next
  request, without a restart (issue 10 point 4);
* ``INCLUDE`` resolves through the same search order and the same cache, for
  the domain and skin of the page being rendered;
* a file name that the skins service refuses (traversal, NUL, ...) is "no
  such file", never an exception out of here;
* every method blocks (stat, read, compile, render): call them in a worker
  thread, never on the event loop;
* the cache is bounded (least recently used pages go first).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

from waypost.services.skins import SkinFile
from waypost.web.wssp import Page, compile_page

log = logging.getLogger("waypost.web")

MAX_CACHED = 2048
"""Compiled pages kept at most (domains x skins x files actually used)."""

TEMPLATE_SUFFIXES = (".wssp", ".wssi")
"""Rendered or included only; never sent as a skin file (web.md §4.5)."""


class SkinSource(Protocol):
    """What pages need of the skins service (``services.skins.Skins``)."""

    def find(self, domain: str, skin: str, name: str) -> SkinFile | None: ...

    def version(self, domain: str, skin: str, name: str) -> tuple[str, float] | None: ...


Key = tuple[str, str, str]


class Pages:
    """Compiled skin pages of every domain and skin, revalidated on each use."""

    def __init__(self, skins: SkinSource, *, max_cached: int = MAX_CACHED) -> None:
        self.skins = skins
        self.max_cached = max_cached
        self._lock = threading.Lock()
        self._cache: OrderedDict[Key, tuple[tuple[str, float], Page]] = OrderedDict()
        self.compiled = 0
        """How many times a file was compiled (tests prove the cache with it)."""

    def page(self, domain: str, skin: str, name: str) -> Page | None:
        """The compiled page ``name`` for (domain, skin), None when no level has it."""
        key = (domain, skin, name)
        try:
            version = self.skins.version(domain, skin, name)
        except (ValueError, OSError) as exc:
            log.info("skin file %r of skin %r (domain %s) refused: %s", name, skin, domain, exc)
            return None
        if version is None:
            self._forget(key)
            return None
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == version:
                self._cache.move_to_end(key)
                return cached[1]
        found = self._find(domain, skin, name)
        if found is None:
            self._forget(key)
            return None
        text = found.data.decode("utf-8", "replace")
        compiled = compile_page(text, name, skin=f"{found.level} (domain {domain})", log=log)
        with self._lock:
            self.compiled += 1
            self._cache[key] = ((found.level, found.mtime), compiled)
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return compiled

    def render(self, domain: str, skin: str, name: str, dataset: Mapping[str, Any]) -> str | None:
        """Render page ``name`` with ``dataset``; ``INCLUDE`` goes through the
        same search order. None when the page itself is missing."""
        page = self.page(domain, skin, name)
        if page is None:
            return None

        def include(file: str) -> Page | None:
            return self.page(domain, skin, file)

        return page.render(dataset, include=include)

    def static(self, domain: str, skin: str, name: str) -> SkinFile | None:
        """A skin file to send as it is (CSS, images, strings): never a page
        or an include, never a name the skins service refuses."""
        if name.lower().endswith(TEMPLATE_SUFFIXES):
            return None
        return self._find(domain, skin, name)

    def version(self, domain: str, skin: str, name: str) -> tuple[str, float] | None:
        """The current version of a static skin file (cheap: for ``ETag``)."""
        if name.lower().endswith(TEMPLATE_SUFFIXES):
            return None
        try:
            return self.skins.version(domain, skin, name)
        except (ValueError, OSError):
            return None

    def _find(self, domain: str, skin: str, name: str) -> SkinFile | None:
        try:
            return self.skins.find(domain, skin, name)
        except (ValueError, OSError) as exc:
            log.info("skin file %r of skin %r (domain %s) refused: %s", name, skin, domain, exc)
            return None

    def _forget(self, key: Key) -> None:
        with self._lock:
            self._cache.pop(key, None)
