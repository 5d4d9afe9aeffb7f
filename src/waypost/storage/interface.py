"""The one contract between the services and a storage backend.

Services never run SQL or open data files themselves; they call a
:class:`Store`. The embedded default (``storage/sqlite``) keeps a SQLite
database in WAL mode plus files in one data directory; a PostgreSQL backend
implements the same methods so several nodes can share one store.

The interface is synchronous on purpose: the CLI uses it directly, and the
server calls it from a worker thread (never on the event loop). Every
mutating method commits before it returns. Names passed in are the names as
the caller wrote them; backends compare domain and object names
case-insensitively and keep the spelling they were created with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class StoreError(Exception):
    """A request the store refuses (duplicate name, missing object, ...)."""


class NotFound(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


@dataclass(frozen=True, slots=True)
class DomainRecord:
    name: str
    is_main: bool
    settings: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    account_defaults: dict[str, Any] = field(default_factory=dict)
    template: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ObjectRecord:
    """A domain object: account, alias, forwarder, group or list.

    ``data`` holds the kind-specific part: account settings and rights,
    the alias's target account, the forwarder's address, group members,
    list settings. An account's password hash is kept apart in ``secret``.
    """

    domain: str
    name: str
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    secret: str | None = None


class Store(Protocol):
    data_dir: Path

    def close(self) -> None: ...

    # A counter bumped by every change of domains, objects, settings or the
    # Router table: the services rebuild their snapshots when it moves.
    def version(self) -> int: ...

    # server settings (string values; the settings module knows the defaults)
    def get_settings(self) -> dict[str, str]: ...
    def set_setting(self, key: str, value: str | None) -> None: ...

    # Router table (the text as the administrator wrote it)
    def get_router_table(self) -> str: ...
    def set_router_table(self, text: str) -> None: ...

    # domains
    def list_domains(self) -> list[DomainRecord]: ...
    def get_domain(self, name: str) -> DomainRecord: ...
    def create_domain(self, name: str, *, is_main: bool = False) -> DomainRecord: ...
    def delete_domain(self, name: str) -> None: ...
    def rename_domain(self, old: str, new: str) -> None: ...
    def update_domain(
        self,
        name: str,
        *,
        settings: dict[str, Any] | None = None,
        account_defaults: dict[str, Any] | None = None,
        template: dict[str, Any] | None = None,
    ) -> None: ...
    def add_domain_alias(self, name: str, alias: str) -> None: ...
    def remove_domain_alias(self, name: str, alias: str) -> None: ...

    # domain objects; names are unique per domain across kinds
    def list_objects(self, domain: str, kind: str | None = None) -> list[ObjectRecord]: ...
    def all_objects(self) -> list[ObjectRecord]: ...
    def get_object(self, domain: str, name: str) -> ObjectRecord: ...
    def create_object(self, record: ObjectRecord) -> None: ...
    def update_object(
        self, domain: str, name: str, *, data: dict[str, Any] | None = None,
        secret: str | None = None,
    ) -> None: ...
    def rename_object(self, domain: str, old: str, new: str) -> None: ...
    def delete_object(self, domain: str, name: str) -> None: ...
