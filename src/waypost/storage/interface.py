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

from collections.abc import Sequence
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


# -- queue ---------------------------------------------------------------------

PENDING = ("queued", "deferred")
"""Recipient states still waiting for delivery; ``delivered`` and ``failed``
are final (a message leaves the queue when all its recipients are final)."""


@dataclass(frozen=True, slots=True)
class NewQueueRecipient:
    """One destination of one envelope recipient, as routed at RCPT time."""

    address: str  # the RCPT TO address (what a DSN reports)
    module: str  # route: MODULE(queue)route_address
    queue: str = ""
    route_address: str = ""
    real_to: str | None = None
    mailbox: str | None = None
    notify: tuple[str, ...] = ()
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class NewQueueMessage:
    id: str
    mail_from: str
    blob: str  # key returned by :meth:`Store.blob_put`
    size: int
    created: float
    recipients: tuple[NewQueueRecipient, ...]
    params: dict[str, str] = field(default_factory=dict)
    client_ip: str = ""
    helo: str = ""
    auth_user: str | None = None
    trusted: bool = False
    protocol: str = ""


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    key: int
    message_id: str
    address: str
    module: str
    queue: str
    route_address: str
    real_to: str | None
    mailbox: str | None
    notify: tuple[str, ...]
    orcpt: str | None
    state: str
    attempts: int
    next_attempt: float
    last_error: str
    released: bool  # one attempt requested even though its queue is held

    @property
    def pending(self) -> bool:
        return self.state in PENDING


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: str
    mail_from: str
    params: dict[str, str]
    client_ip: str
    helo: str
    auth_user: str | None
    trusted: bool
    protocol: str
    blob: str
    size: int
    created: float
    recipients: tuple[QueuedRecipient, ...]


@dataclass(frozen=True, slots=True)
class RecipientUpdate:
    """A change of one queue recipient; applied only while it is pending.

    ``state`` None keeps the state (a held recipient rescheduled for its
    next check); ``attempted`` counts an attempt and clears ``released``.
    """

    key: int
    state: str | None
    error: str | None = None
    next_attempt: float | None = None
    attempted: bool = True


# -- mailstore -----------------------------------------------------------------

INBOX = "INBOX"


def canonical_mailbox(name: str) -> str:
    """Mailbox names are case-sensitive except INBOX (RFC 3501), also as the
    first component of a hierarchical name (``inbox/x`` is ``INBOX/x``)."""
    head, sep, rest = name.partition("/")
    if head.upper() == INBOX:
        return INBOX + sep + rest
    return name


@dataclass(frozen=True, slots=True)
class NewMailMessage:
    """A message to store: ``prefix`` + blob without the ``omit`` byte ranges.

    ``fallback_inbox``: a missing ``mailbox`` means INBOX (delivery) instead
    of an error (IMAP APPEND). ``queue_keys``: the queue recipients this copy
    delivers; when none of them is pending any more (delivered already,
    deleted by an administrator) the copy is skipped, so a repeated
    delivery never stores twice.
    """

    domain: str
    account: str
    mailbox: str
    blob: str
    blob_size: int
    internal_date: float
    prefix: bytes = b""
    omit: tuple[tuple[int, int], ...] = ()
    flags: tuple[str, ...] = ()
    summary: dict[str, str] = field(default_factory=dict)  # from, subject, date, message_id
    fallback_inbox: bool = False
    queue_keys: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        return len(self.prefix) + self.blob_size - sum(end - start for start, end in self.omit)


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int
    size: int


@dataclass(frozen=True, slots=True)
class MailMessage:
    uid: int
    modseq: int
    flags: tuple[str, ...]
    internal_date: float
    size: int
    blob: str
    prefix: bytes
    omit: tuple[tuple[int, int], ...]
    summary: dict[str, str]


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

    # -- message bodies: immutable blobs named by their SHA-256 -------------
    # blob_put is durable when it returns (file and directory synced); an
    # existing blob is not written again. blob_gc removes blobs no queue
    # message and no mailbox message names, untouched for ``grace`` seconds
    # (``full`` also sweeps files never committed, e.g. after a crash).
    def blob_put(self, data: bytes) -> str: ...
    def blob_get(self, key: str) -> bytes: ...
    def blob_gc(self, grace: float, *, full: bool = False) -> int: ...

    # -- queue ----------------------------------------------------------------
    # queue_commit applies everything in ONE transaction (group commit, and a
    # DSN committed together with the failure it reports). A message whose
    # recipients are all final leaves the queue in the same transaction.
    def queue_commit(
        self, add: Sequence[NewQueueMessage] = (), settle: Sequence[RecipientUpdate] = (),
    ) -> None: ...
    # Messages with pending recipients due at ``now`` (only those recipients),
    # oldest due first, skipping the (module, queue) pairs in ``skip``.
    def queue_due(
        self, now: float, limit: int, skip: Sequence[tuple[str, str]] = (),
    ) -> list[QueuedMessage]: ...
    def queue_list(self) -> list[QueuedMessage]: ...  # pending recipients only
    def queue_get(self, message_id: str) -> QueuedMessage: ...  # every recipient
    def queue_delete(self, message_id: str) -> None: ...
    # Make pending recipients due at ``now``; ``release`` also grants held ones
    # one attempt. ``module``/``queue`` None = any (``queue`` is compared
    # case-insensitively). Returns how many recipients were rescheduled.
    def queue_schedule(
        self, now: float, *, module: str | None = None, queue: str | None = None,
        release: bool = False,
    ) -> int: ...
    def queue_commits(self) -> int: ...  # transactions committed by queue_commit

    # -- mailstore ----------------------------------------------------------
    # mail_store stores copies and settles queue recipients in ONE transaction
    # (local delivery: never twice, never lost); returns each copy's UID or
    # None when skipped (see NewMailMessage.queue_keys).
    def mail_store(
        self, messages: Sequence[NewMailMessage], settle: Sequence[RecipientUpdate] = (),
    ) -> list[int | None]: ...
    def mail_create_mailbox(self, domain: str, account: str, name: str) -> MailboxInfo: ...
    def mail_mailboxes(self, domain: str, account: str) -> list[MailboxInfo]: ...
    def mail_mailbox(self, domain: str, account: str, name: str) -> MailboxInfo: ...
    def mail_messages(self, domain: str, account: str, mailbox: str) -> list[MailMessage]: ...
    def mail_message(self, domain: str, account: str, mailbox: str, uid: int) -> MailMessage: ...
    def mail_delete(self, domain: str, account: str, mailbox: str, uids: Sequence[int]) -> int: ...
