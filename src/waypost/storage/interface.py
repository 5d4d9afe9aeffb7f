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

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol


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
class QueueAttempt:
    """One delivery attempt (or look at a held queue) of a queue recipient,
    as ``waypost queue show`` lists it: when, ``sent``/``deferred``/
    ``bounced``/``held``, the reply (remote or local), and the relay."""

    at: float
    status: str
    reply: str
    relay: str = ""


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
    history: tuple[QueueAttempt, ...] = ()  # filled by queue_get only, oldest first
    # the claim (see Store.queue_claim): the delivering process and until when
    # its lease runs (epoch seconds); None/0.0 while nobody holds it
    owner: str | None = None
    lease_until: float = 0.0

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
    next check); ``attempted`` counts an attempt and clears ``released``;
    ``history`` is added to the recipient's history with the change.
    Every applied update clears the recipient's claim (owner, lease).
    ``owner`` set: applied only while that owner still holds the claim (its
    lease may have run out, but nobody has claimed the recipient since), so
    a worker whose claim was taken over cannot settle what another now
    delivers; None applies regardless (administrator, DSN, tests).
    """

    key: int
    state: str | None
    error: str | None = None
    next_attempt: float | None = None
    attempted: bool = True
    history: QueueAttempt | None = None
    owner: str | None = None


# -- SIP registrations -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SipBinding:
    """One registered contact of an account (RFC 3261 §10.3).

    ``key`` is the binding's identity, chosen by the registrar; ``expires``
    and ``registered`` are wall-clock times (``time.time()``), so they mean
    the same after a restart; ``q`` is in thousandths (None: not given).
    ``id`` 0 is a binding not stored yet; ``domain``/``account`` name the
    owner as it is called now (filled by the store when it reads).
    """

    key: str
    contact: str
    expires: float
    call_id: str
    cseq: int
    registered: float
    q: int | None = None
    instance: str | None = None
    reg_id: int | None = None
    transport: str = ""
    address: str = ""
    port: int = 0
    user_agent: str = ""
    id: int = 0
    domain: str = ""
    account: str = ""


@dataclass(frozen=True, slots=True)
class SipBindingChanges:
    """What one REGISTER does to an account's bindings: ``remove`` by id,
    then ``put`` (a binding whose key exists replaces that row)."""

    remove: tuple[int, ...] = ()
    put: tuple[SipBinding, ...] = ()


# -- mailstore -----------------------------------------------------------------

INBOX = "INBOX"
SEPARATOR = "/"
SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
_SYSTEM = {f.lower(): f for f in SYSTEM_FLAGS}
SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
"""RFC 6154 attributes a mailbox may carry (``mail_set_special_use``)."""
SPECIAL_USE_BY_NAME = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash",
                       "Junk": "\\Junk", "Archive": "\\Archive"}
"""[waypost] Top-level mailboxes of these names carry the attribute unless one is stored."""
ACL_RIGHTS = "lrswipcda"
"""The CGP rights letters an ACL stores (mailboxes.md §2.1), in display order."""


class MailboxError(StoreError):
    """A refused mailbox request; ``code`` is the RFC 5530 response code an IMAP
    session puts in its NO answer."""

    code = "CANNOT"


class NoSuchMailbox(MailboxError, NotFound):
    code = "NONEXISTENT"


class MailboxExists(MailboxError, AlreadyExists):
    code = "ALREADYEXISTS"


class OverQuota(MailboxError):
    """The write would take the account's usage (``mail_usage``) over the
    ``max_usage`` it was given: nothing was written (RFC 9208 §4.3)."""

    code = "OVERQUOTA"


class StorageFull(MailboxError):
    """The file system of the data directory is full (``ENOSPC``, ``EDQUOT``,
    SQLite's ``SQLITE_FULL``): nothing was written, and the same request
    succeeds once space returns. SMTP answers ``452 4.3.1`` (RFC 3463),
    delivery defers; IMAP answers ``NO [OVERQUOTA]`` as Dovecot does for a
    full disk (RFC 5530 has no code for it; ``SERVERBUG`` would call it a bug)."""

    code = "OVERQUOTA"


class CannotDelete(MailboxError):
    """INBOX, or a \\Noselect name that still has sub-mailboxes (RFC 3501)."""


class MailboxHasChildren(CannotDelete):
    """DELETE of a \\Noselect name that still has sub-mailboxes: RFC 9051
    §7.1 gives it its own code (IMAP4rev1 sessions send CANNOT)."""

    code = "HASCHILDREN"


class InvalidMailboxName(MailboxError):
    pass


def canonical_mailbox(name: str) -> str:
    """Mailbox names are case-sensitive except INBOX (RFC 3501), also as the
    first component of a hierarchical name (``inbox/x`` is ``INBOX/x``)."""
    head, sep, rest = name.partition("/")
    if head.upper() == INBOX:
        return INBOX + sep + rest
    return name


def normalize_flags(flags: Sequence[str]) -> tuple[str, ...]:
    """Flags as stored: system flags in their canonical spelling, each flag once
    (first spelling wins), ``\\Recent`` dropped (it is session state, not stored)."""
    result: dict[str, str] = {}
    for flag in flags:
        flag = _SYSTEM.get(flag.lower(), flag)
        if flag and flag.lower() != "\\recent" and flag.lower() not in result:
            result[flag.lower()] = flag
    return tuple(result.values())


def special_use_of(name: str, stored: str | None) -> str:
    """The effective SPECIAL-USE attribute: the stored one (``""`` = none), else
    the attribute its top-level name implies."""
    if stored is not None:
        return stored
    return SPECIAL_USE_BY_NAME.get(name, "")


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
    structure: str | None = None  # mime.ParsedMessage JSON of the stored bytes
    # with queue_keys: the copy is stored only while this claimer still holds
    # them (see RecipientUpdate.owner), in the transaction that settles them
    queue_owner: str | None = None

    @property
    def size(self) -> int:
        return len(self.prefix) + self.blob_size - sum(end - start for start, end in self.omit)


@dataclass(frozen=True, slots=True)
class NewAppend:
    """One message of an IMAP APPEND: its bytes, flags, internal date (None:
    now) and the header summary the store keeps beside it."""

    data: bytes
    flags: tuple[str, ...] = ()
    internal_date: float | None = None
    summary: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int
    size: int
    selectable: bool = True  # False: only the "directory" entity exists (\Noselect)
    special_use: str = ""


@dataclass(frozen=True, slots=True)
class MailboxEntry:
    """One name of an account's mailbox tree, as LIST shows it."""

    name: str
    selectable: bool
    has_children: bool
    special_use: str  # effective (see special_use_of); "" = none
    acl: dict[str, str] = field(default_factory=dict)  # identifier -> CGP letters

    def attributes(self) -> tuple[str, ...]:
        attrs = [] if self.selectable else ["\\Noselect"]
        attrs.append("\\HasChildren" if self.has_children else "\\HasNoChildren")
        if self.special_use:
            attrs.append(self.special_use)
        return tuple(attrs)


@dataclass(frozen=True, slots=True)
class MailboxState:
    """What SELECT and STATUS report, read in O(1) from counters."""

    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int
    unseen: int
    recent: int  # messages no session has claimed yet (mail_claim_recent)
    size: int


class MessageMeta(NamedTuple):
    """A row of the message index: what a session keeps per message."""

    uid: int
    modseq: int
    flags: tuple[str, ...]
    size: int
    internal_date: float


class FlagUpdates(list[tuple[int, int, tuple[str, ...]]]):
    """Result of ``mail_set_flags``: ``(uid, modseq, flags)`` of every message of
    the set that exists and was not refused, flags as they are now (a message the
    operation did not change keeps its MODSEQ). ``modified``: UIDs refused by
    ``unchanged_since`` (CONDSTORE ``[MODIFIED ...]``)."""

    modified: list[int]

    def __init__(self, items: Sequence[tuple[int, int, tuple[str, ...]]] = (),
                 modified: Sequence[int] = ()) -> None:
        super().__init__(items)
        self.modified = list(modified)


class CopiedUids(list[tuple[int, int]]):
    """Result of ``mail_copy``/``mail_move``: ``(source UID, new UID)`` pairs in
    UID order, and ``uidvalidity``, the target's, read in the transaction that
    made the copies. Read afterwards, it could name another incarnation: a
    RENAME (or DELETE + CREATE) of the target name landing in between made
    COPYUID pair the new UIDs with the wrong UIDVALIDITY (RFC 4315 §3; found by
    the model-based checker as UIDs of one UIDVALIDITY going backwards)."""

    uidvalidity: int

    def __init__(self, pairs: Sequence[tuple[int, int]], uidvalidity: int) -> None:
        super().__init__(pairs)
        self.uidvalidity = uidvalidity


@dataclass(frozen=True, slots=True)
class MailboxChanges:
    """What changed in a mailbox after ``since`` (a MODSEQ the session saw):
    ``new`` are messages with UID >= the ``uidnext`` given, ``changed`` older
    ones whose flags changed, ``expunged`` UIDs removed (from the expunge log)."""

    uidvalidity: int
    uidnext: int
    highestmodseq: int
    new: list[MessageMeta]
    changed: list[MessageMeta]
    expunged: list[int]


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


# -- account file storage (web.md §6.1) -----------------------------------------


class FileError(StoreError):
    """A file storage request that cannot be done (a file where a folder is
    needed, a folder that is not empty, ...)."""


class InvalidFileName(FileError):
    """A path the storage does not accept (empty part, ``.``/``..``, ``/``
    inside a part, NUL or another control character, a leading ``.``)."""


class QuotaExceeded(FileError):
    """The write would take the account over ``MaxWebSize`` or ``MaxWebFiles``."""


@dataclass(frozen=True, slots=True)
class FileLimits:
    """The account's File Storage quota; None = unlimited."""

    max_bytes: int | None = None
    max_files: int | None = None
    """Files and folders together (CGP counts both)."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file or folder of an account's storage; ``path`` is ``/``-separated,
    relative to the storage root ("" is the root)."""

    path: str
    is_folder: bool
    size: int
    mtime: float
    mtime_ns: int = 0
    """The modification time in nanoseconds where the backend has it (HTTP
    validators are built from it, so they change with every write)."""

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]


@dataclass(frozen=True, slots=True)
class FileUsage:
    files: int
    """Files and folders (the root not counted)."""
    bytes: int


class OpenedFile(Protocol):
    """A stored file opened for reading: the bytes as they were when opened
    (a later replacement does not change them). ``local_path`` is a path a
    server may send with ``sendfile`` when the backend keeps plain files."""

    entry: FileEntry
    local_path: str | None

    def read(self, size: int = -1) -> bytes: ...
    def seek(self, offset: int, whence: int = 0) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> OpenedFile: ...
    def __exit__(self, *exc: object) -> None: ...


class Store(Protocol):
    data_dir: Path

    def close(self) -> None: ...

    # Several calls as one change: they commit together or not at all.
    def transaction(self) -> AbstractContextManager[None]: ...

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
        self, name: str, *, settings: dict[str, Any] | None = None,
        account_defaults: dict[str, Any] | None = None, template: dict[str, Any] | None = None,
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

    # -- SIP registrations (services/signals/registrar.py decides) ------------
    # Bindings not yet expired at ``now``, of one account or of all (``domain``
    # and ``account`` None), by account, then q (highest first; none = 1), then age.
    def sip_bindings(
        self, domain: str | None = None, account: str | None = None, *, now: float,
    ) -> list[SipBinding]: ...
    # ONE durable transaction: drop every binding expired at ``now`` (all
    # accounts), give the account's current ones to ``decide``, apply what it
    # returns; an exception from ``decide`` rolls everything back. Returns the
    # account's bindings after the change (NotFound: no such account).
    def sip_change_bindings(
        self, domain: str, account: str, now: float,
        decide: Callable[[list[SipBinding]], SipBindingChanges],
    ) -> list[SipBinding]: ...

    # -- message bodies: immutable blobs named by their SHA-256 -------------
    # blob_put is durable when it returns (file and directory synced); an
    # existing blob is not written again. blob_gc removes blobs no queue
    # message and no mailbox message names, untouched for ``grace`` seconds
    # (``full`` also sweeps files never committed, e.g. after a crash).
    def blob_put(self, data: bytes, *, sync_dir: bool = True) -> str: ...
    # octets free for new data where the store keeps it (a full disk: 0)
    def free_space(self) -> int: ...
    # makes the names of blobs put with sync_dir=False durable (one call per batch)
    def blob_sync(self) -> None: ...
    def blob_get(self, key: str) -> bytes: ...
    # ``size`` octets from ``offset`` (fewer at the end): streams a large body
    def blob_read(self, key: str, offset: int, size: int) -> bytes: ...
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
    # Leases (several processes on one store deliver each recipient once).
    # queue_claim picks what queue_due would, claims it for ``owner`` (owner
    # and lease expiry ``now + lease`` written in the SAME write transaction
    # that selects them: BEGIN IMMEDIATE on SQLite, SELECT .. FOR UPDATE SKIP
    # LOCKED then UPDATE on PostgreSQL) and returns it. A recipient is
    # claimable when nobody holds it or its lease ran out before ``now`` (the
    # owner died). A route queue (module, queue) with a live claim by another
    # owner is skipped whole, so one process delivers a group at a time.
    # Recipients this owner already holds are not returned again.
    def queue_claim(
        self, owner: str, now: float, lease: float, limit: int,
        skip: Sequence[tuple[str, str]] = (),
    ) -> list[QueuedMessage]: ...
    # Extend ``owner``'s lease on ``keys`` to ``until`` (a long delivery, well
    # before expiry); returns the keys it still holds (the others were taken
    # over or settled: their outcome is no longer this owner's to record).
    def queue_renew(self, owner: str, keys: Sequence[int], until: float) -> set[int]: ...
    # Give up ``owner``'s claims (a clean shutdown): claimable at once again.
    # Returns how many recipients were released.
    def queue_release(self, owner: str) -> int: ...
    def queue_list(self) -> list[QueuedMessage]: ...  # pending recipients only (with claims)
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
    # Mailboxes are named (domain, account, name); the store only makes names
    # canonical (INBOX) and refuses what it cannot hold; which names are allowed
    # is decided before it is called (services/mailaccess/names.py). Every
    # mutating call is ONE transaction and moves the mailbox's HIGHESTMODSEQ
    # (CONDSTORE); refusals raise the MailboxError subclasses above. Access
    # rights are NOT checked here: that is services/mailaccess/rights.py.
    #
    # mail_store stores copies and settles queue recipients in ONE transaction
    # (local delivery: never twice, never lost); returns each copy's UID or
    # None when skipped (see NewMailMessage.queue_keys).
    def mail_store(
        self, messages: Sequence[NewMailMessage], settle: Sequence[RecipientUpdate] = (),
    ) -> list[int | None]: ...

    # mailbox tree. Creating "A/B" makes the directory entity "A" (\Noselect)
    # when missing and copies the parent's ACL; "A/" creates only the
    # directory entity. Deleting a mailbox with children makes it \Noselect
    # (its messages go); ``recursive`` deletes the children too. Renaming
    # INBOX moves its messages and leaves INBOX empty.
    def mail_create_mailbox(
        self, domain: str, account: str, name: str, *, special_use: str | None = None,
    ) -> MailboxInfo: ...
    def mail_delete_mailbox(
        self, domain: str, account: str, name: str, *, recursive: bool = False,
    ) -> None: ...
    def mail_rename_mailbox(self, domain: str, account: str, old: str, new: str) -> None: ...
    def mail_mailboxes(self, domain: str, account: str) -> list[MailboxInfo]: ...
    def mail_mailbox(self, domain: str, account: str, name: str) -> MailboxInfo: ...
    def mail_folders(self, domain: str, account: str) -> list[MailboxEntry]: ...
    def mail_folder(self, domain: str, account: str, name: str) -> MailboxEntry: ...
    # (domain, account, entry) of every mailbox of ``domain`` (None: all
    # domains); ``shared_only``: only those with a non-empty ACL.
    def mail_domain_folders(
        self, domain: str | None, *, shared_only: bool,
    ) -> list[tuple[str, str, MailboxEntry]]: ...
    # None: the default by name; "": no attribute; else one of SPECIAL_USES
    def mail_set_special_use(
        self, domain: str, account: str, name: str, use: str | None,
    ) -> None: ...

    # ACL in CGP letters; mode "replace" | "add" | "remove"; returns the
    # identifier's rights now ("" = the entry is gone).
    def mail_get_acl(self, domain: str, account: str, name: str) -> dict[str, str]: ...
    def mail_set_acl(
        self, domain: str, account: str, name: str, identifier: str, rights: str,
        mode: str = "replace",
    ) -> str: ...
    def mail_delete_acl(self, domain: str, account: str, name: str, identifier: str) -> bool: ...

    # subscriptions (any names, foreign ones too) and mailbox aliases
    def mail_subscriptions(self, domain: str, account: str) -> list[str]: ...
    def mail_subscribe(self, domain: str, account: str, name: str) -> None: ...
    def mail_unsubscribe(self, domain: str, account: str, name: str) -> bool: ...
    def mail_set_subscriptions(self, domain: str, account: str, names: Sequence[str]) -> None: ...
    def mail_aliases(self, domain: str, account: str) -> dict[str, str]: ...
    def mail_set_alias(
        self, domain: str, account: str, alias: str, target: str | None,
    ) -> None: ...
    def mail_set_aliases(self, domain: str, account: str, aliases: dict[str, str]) -> None: ...
    # Account Template (domains-accounts.md §5) for a new account, one transaction
    def mail_apply_template(
        self, domain: str, account: str, *, mailboxes: Sequence[str] = (),
        subscriptions: Sequence[str] = (), aliases: dict[str, str] | None = None,
    ) -> None: ...

    # messages. ``uids`` None = every message of the mailbox.
    def mail_messages(self, domain: str, account: str, mailbox: str) -> list[MailMessage]: ...
    def mail_message(self, domain: str, account: str, mailbox: str, uid: int) -> MailMessage: ...
    # ``uidvalidity`` (here and below): only that incarnation of the mailbox,
    # else NoSuchMailbox (a selected mailbox replaced meanwhile, RFC 3501 §2.3.1.1)
    def mail_fetch(
        self, domain: str, account: str, mailbox: str, uids: Sequence[int] | None,
        *, uidvalidity: int | None = None,
    ) -> list[MailMessage]: ...
    def mail_index(self, domain: str, account: str, mailbox: str) -> list[MessageMeta]: ...
    def mail_mailbox_state(self, domain: str, account: str, mailbox: str) -> MailboxState: ...
    # octets of all the account's messages (RFC822.SIZE sum), O(1): quota
    def mail_usage(self, domain: str, account: str) -> int: ...
    # \Recent (RFC 3501): the first UID that is recent for the calling session;
    # later sessions no longer see those messages as recent. With ``upto``, only
    # the UIDs below it are claimed (those the session's view holds).
    def mail_claim_recent(
        self, domain: str, account: str, mailbox: str, *, upto: int | None = None,
    ) -> int: ...
    def mail_set_flags(
        self, domain: str, account: str, mailbox: str, uids: Sequence[int] | None,
        flags: Sequence[str], mode: str, *, unchanged_since: int | None = None,
        uidvalidity: int | None = None,
    ) -> FlagUpdates: ...
    # removes messages flagged \Deleted (among ``uids`` when given); logs them
    def mail_expunge(
        self, domain: str, account: str, mailbox: str, uids: Sequence[int] | None = None,
        *, uidvalidity: int | None = None,
    ) -> list[int]: ...
    # removes the messages whatever their flags (POP3 DELE, administrators)
    def mail_delete(self, domain: str, account: str, mailbox: str, uids: Sequence[int]) -> int: ...
    # new rows over the same blobs (no byte copy), flags and internal date
    # kept; returns (source UID, new UID) pairs in UID order (UIDPLUS) with
    # the target's UIDVALIDITY of that transaction (CopiedUids).
    # ``max_usage`` (copy, move, append): OverQuota, nothing written, when the
    # target account's usage would end above it (checked in the transaction)
    def mail_copy(
        self, domain: str, account: str, mailbox: str, uids: Sequence[int] | None,
        dst_domain: str, dst_account: str, dst_mailbox: str, *, max_usage: int | None = None,
        uidvalidity: int | None = None,
    ) -> CopiedUids: ...
    def mail_move(
        self, domain: str, account: str, mailbox: str, uids: Sequence[int] | None,
        dst_domain: str, dst_account: str, dst_mailbox: str, *, max_usage: int | None = None,
        uidvalidity: int | None = None,
    ) -> CopiedUids: ...
    # IMAP APPEND: body blob and row durable on return; (UIDVALIDITY, UID)
    def mail_append(
        self, domain: str, account: str, mailbox: str, data: bytes, *,
        flags: Sequence[str] = (), internal_date: float | None = None,
        summary: dict[str, str] | None = None, max_usage: int | None = None,
    ) -> tuple[int, int]: ...
    # MULTIAPPEND (RFC 3502 §3): several messages into one mailbox in ONE
    # transaction, all or none, durable on return; (UIDVALIDITY, UIDs in order)
    def mail_append_many(
        self, domain: str, account: str, mailbox: str, messages: Sequence[NewAppend], *,
        max_usage: int | None = None,
    ) -> tuple[int, list[int]]: ...
    # the header section of a stored message, reading only the head of its blob
    def mail_header_bytes(self, message: MailMessage) -> bytes: ...
    # the cached JSON of the parsed MIME structure (not a change: no MODSEQ)
    def mail_structure_get(
        self, domain: str, account: str, mailbox: str, uid: int,
    ) -> str | None: ...
    def mail_structure_put(
        self, domain: str, account: str, mailbox: str, uid: int, text: str,
    ) -> None: ...
    def mail_structures_put(
        self, domain: str, account: str, mailbox: str, items: Sequence[tuple[int, str]],
    ) -> None: ...
    def mail_structures(  # UID -> JSON of those cached
        self, domain: str, account: str, mailbox: str, uids: Sequence[int] | None,
    ) -> dict[int, str]: ...
    def mail_changes_since(
        self, domain: str, account: str, mailbox: str, modseq: int, *,
        uidnext: int | None = None,
    ) -> MailboxChanges: ...

    # -- account file storage (web.md §6.1). Paths are "/"-separated and
    # relative; the backend keeps every access inside the account's storage
    # (no symbolic link is ever followed). Writes are atomic and durable on
    # return, and checked against ``limits`` under the account's lock, so two
    # writers cannot both pass a quota only one of them fits in.
    def files_list(self, domain: str, account: str, folder: str) -> list[FileEntry]: ...
    def files_stat(self, domain: str, account: str, path: str) -> FileEntry: ...
    def files_open(self, domain: str, account: str, path: str) -> OpenedFile: ...
    # ``chunks`` is consumed as it arrives (never all held in memory)
    def files_write(
        self, domain: str, account: str, path: str, chunks: Iterable[bytes],
        limits: FileLimits, *, mtime: float | None = None,
    ) -> FileEntry: ...
    def files_mkdir(
        self, domain: str, account: str, path: str, limits: FileLimits,
    ) -> FileEntry: ...
    def files_rename(self, domain: str, account: str, old: str, new: str) -> FileEntry: ...
    def files_delete(self, domain: str, account: str, path: str, *, recursive: bool = False
                     ) -> int: ...
    def files_usage(self, domain: str, account: str) -> FileUsage: ...
    # removes the trees of deleted accounts and stale temporary uploads
    def files_gc(self) -> int: ...

    # -- state shared by the processes of one store (issue 15 point 3) ------
    # Times are wall-clock seconds (``time.time()``): several processes, and
    # later several nodes, compare them. See ``storage/sqlite/shared_state.py``.
    #
    # Login failures (``services/login_guard.py``): keys are opaque strings.
    # One read: the failures of the three keys at ``since`` or later, the
    # pair's reservations in flight and its lock-out.
    def login_state(self, pair: str, address: str, account: str, *, since: float,
                    now: float) -> LoginState: ...
    # reserve an attempt in flight for ``pair`` (an id) unless its lock-out,
    # failures, reservations and ``extra`` (attempts the caller holds
    # elsewhere) reach ``limit`` (None); checked and written in one transaction
    def login_reserve(self, pair: str, *, since: float, now: float, limit: int,
                      extra: int, ttl: float) -> int | None: ...
    # one failure of each key (and the end of ``reservation``); a lock-out of
    # the pair until ``now + lockout`` when its failures reach ``limit``
    # (0: never); rows older than ``since`` expire. Not flushed before return.
    def login_failed(self, pair: str, address: str, account: str, *, now: float,
                     since: float, limit: int, lockout: float,
                     reservation: int | None) -> LoginFailure: ...
    # a success: the pair's failures, lock-out and ``reservation`` are gone
    def login_succeeded(self, pair: str, *, reservation: int | None) -> None: ...
    # A named lock held by ``holder`` until it is dropped or its lease ends
    # (POP3 maildrops): taken when free, expired or already the holder's.
    def shared_lock_take(self, name: str, holder: str, *, now: float, ttl: float) -> bool: ...
    # extend the holder's leases; returns the names it no longer holds
    def shared_lock_renew(self, names: Sequence[str], holder: str, *, now: float,
                          ttl: float) -> list[str]: ...
    def shared_lock_drop(self, name: str, holder: str) -> None: ...
    # who holds the lock ``name`` now (expired or not), None when nobody
    def shared_lock_holder(self, name: str) -> str | None: ...
    # WebUser sessions, by a keyed hash of their id (protocols/http/sessions.py)
    def web_session_put(self, record: WebSessionRecord, *, max_sessions: int) -> None: ...
    def web_session_get(self, key: str) -> WebSessionRecord | None: ...
    def web_session_touch(self, key: str, last_seen: float) -> None: ...
    def web_session_drop(self, key: str) -> bool: ...
    def web_sessions_expire(self, before: float) -> int: ...
    # a random secret shared by every process of the store, made on first use
    def shared_secret(self, name: str) -> bytes: ...


@dataclass(frozen=True, slots=True)
class LoginState:
    """What :meth:`Store.login_state` read: failures of the (account, IP)
    pair, of the IP and of the account; the pair's attempts in flight (in
    every process) and the end of its lock-out (0: none)."""

    pair: int = 0
    address: int = 0
    account: int = 0
    in_flight: int = 0
    locked_until: float = 0.0


@dataclass(frozen=True, slots=True)
class LoginFailure:
    """After :meth:`Store.login_failed`: the failure counts of the pair and
    of the IP, and whether this failure began a lock-out."""

    pair: int
    address: int
    locked_now: bool


@dataclass(frozen=True, slots=True)
class WebSessionRecord:
    """A stored WebUser session: ``key`` and ``cookie`` are keyed hashes of
    the session id and of its cookie secret, never the secrets themselves."""

    key: str
    cookie: str
    account: str
    domain: str
    skin: str
    client_ip: str
    secure: bool
    last_seen: float
