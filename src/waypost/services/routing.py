"""Keeps the compiled Router Table and the Directory snapshot current.

The Router package (``services/router``) is pure: it routes with the table and
snapshot it is given. This service, beside it, is the one that reads the store.

Invariants: the compiled table depends on the table text and on the Main Domain
names (address records naming the Main Domain are stripped at load time), so it
is rebuilt whenever the store's change counter moves, and only then; a table
that does not compile is never stored (``set_table``).
"""

from __future__ import annotations

import threading

from waypost.services.directory import Directory
from waypost.services.router.lint import caught_domains
from waypost.services.router.route import MAX_STEPS, RouteResult, route
from waypost.services.router.table import CompiledTable, Kind, compile_table
from waypost.services.router.view import DirectorySnapshot
from waypost.storage.interface import Store


def main_names(snap: DirectorySnapshot) -> list[str]:
    """The Main Domain and its aliases: what the table compiler strips."""
    return [snap.main_domain] + [a for a, d in snap.domain_aliases.items() if d == snap.main_domain]


class Router:
    """The routing service: the pure ``route`` over the current table and snapshot.

    Thread-safe (callers run it in worker threads); the lock makes a rebuild
    happen once per change, not once per concurrent caller."""

    def __init__(self, store: Store, directory: Directory) -> None:
        self._store = store
        self._directory = directory
        self._lock = threading.Lock()
        self._version = -1
        self._table = CompiledTable()
        self._snap: DirectorySnapshot | None = None
        self._published: tuple[int, CompiledTable, DirectorySnapshot] | None = None

    def current(self) -> tuple[CompiledTable, DirectorySnapshot]:
        """The compiled table and snapshot, rebuilt only after a change (the
        lock only then: callers in many threads do not queue on it)."""
        current = self.peek()
        if current is not None:
            return current
        with self._lock:
            version = self._store.version()
            if version != self._version or self._snap is None:
                snap = self._directory.snapshot()
                self._table = compile_table(self._store.get_router_table(), main_names(snap))
                self._snap = snap
                self._version = version
                self._published = (version, self._table, snap)  # one assignment: peek's view
            return self._table, self._snap

    def peek(self) -> tuple[CompiledTable, DirectorySnapshot] | None:
        """The table and snapshot when they are current, None when a rebuild
        is due: never blocks beyond the store's cheap change counter, so an
        event loop may route with them (the SIP proxy does per request) and
        leave the rebuild to a worker thread."""
        published = self._published
        if published is None or published[0] != self._store.version():
            return None
        return published[1], published[2]

    def route(
        self,
        address: str,
        kind: Kind | str = Kind.MAIL,
        *,
        trusted: bool = False,
        explain: bool = False,
        max_steps: int = MAX_STEPS,
    ) -> RouteResult:
        """Route one address (router.md); blocking when a rebuild is due."""
        table, snap = self.current()
        return route(address, kind, trusted, table, snap, explain=explain, max_steps=max_steps)

    def get_table(self) -> str:
        """The table text as the administrator wrote it."""
        return self._store.get_router_table()

    def set_table(self, text: str) -> CompiledTable:
        """Store a new table only if it compiles (raises TableError otherwise),
        so a bad table never replaces the one in force."""
        _, snap = self.current()
        compiled = compile_table(text, main_names(snap))
        self._store.set_router_table(text)
        return compiled

    def warnings(self, table: CompiledTable | None = None) -> list[str]:
        """What a valid table would still break (``router/lint.py``): the
        table in force, or ``table`` against the current Directory."""
        current, snap = self.current()
        return [catch.text() for catch in caught_domains(table or current, snap)]
