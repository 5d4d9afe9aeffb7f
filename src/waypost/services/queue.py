"""The queue: where a message becomes durable, and the schedule of its delivery.

``Queue.submit`` returns only when the body is a synced blob file and the
envelope rows are committed -- the SMTP session says 250 after that, so a
crash loses nothing acknowledged. Commits are grouped: submissions (and the
runner's state changes) queue up while the previous transaction is being
written, and the next transaction takes them all, so N concurrent sessions
share one database sync. Blob writes run concurrently in worker threads; the
database work runs on one dedicated thread (SQLite has one writer anyway),
never on the event loop.

Each recipient row belongs to the queue of its route, ``MODULE(queue)``:
``SMTP(host)`` per target, ``LOCAL(account)`` per account (smtp.md §2.2).
Whether an SMTP queue is *held* (Hold Mail for Domains, smtp.md §6.1) is
decided from the current settings, not stored, so changing the setting
holds or frees mail already queued; a release grants each held recipient one
attempt (ETRN semantics: after a failure it is held again). Retry and
expiry follow smtp.md §2.3 (:class:`QueuePolicy`). A full disk
(:class:`StorageFull`) fails the submissions of the batch it hit, with
nothing committed, and is logged once per episode (``storage_full.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from waypost.services import holders
from waypost.services.container import Services
from waypost.services.message import Submission, new_message_id
from waypost.services.router.route import Route
from waypost.services.storage_full import FullNotice
from waypost.settings import ServerSettings, SettingError, split_list
from waypost.storage.interface import (
    NewQueueMessage,
    NewQueueRecipient,
    QueuedMessage,
    QueuedRecipient,
    RecipientUpdate,
    StorageFull,
    Store,
)

log = logging.getLogger("waypost.queue")

T = TypeVar("T")

DAY = 86400.0


DEFAULT_LEASE = 300.0  # QueueLeaseTime when there are no settings (tests)


def claimant_id() -> str:
    """This process's name on the queue recipients it claims (``holders.py``)."""
    return holders.holder_id()


def lease_time(settings: ServerSettings | None) -> float:
    """QueueLeaseTime in seconds (at least one)."""
    return max(1.0, float(settings.number("QueueLeaseTime"))) if settings else DEFAULT_LEASE


def hold_patterns(text: str) -> tuple[str, ...]:
    """Patterns of HoldMailForDomains; an ``= account`` part (ATRN) is ignored here."""
    return tuple(p for p in (item.partition("=")[0].strip().lower()
                             for item in split_list(text)) if p)


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """Retry, expiry and hold, from the server settings (smtp.md §2.3, §6.1)."""

    retry_first: float = 600.0
    retry_max: float = 3600.0
    expiry: float = 5 * DAY
    held_expiry: float = 7 * DAY
    hold: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> QueuePolicy:
        # The defaults come from an instance: with slots=True the class
        # attribute of a field is its slot descriptor, not its default.
        default = cls()

        def seconds(name: str, fallback: float) -> float:
            try:
                return float(settings.number(name))
            except (KeyError, SettingError):  # setting not declared yet
                return fallback

        return cls(
            retry_first=seconds("QueueRetryFirst", default.retry_first),
            retry_max=seconds("QueueRetryMax", default.retry_max),
            expiry=seconds("QueueLifetime", default.expiry),
            held_expiry=seconds("HeldQueueLifetime", default.held_expiry),
            hold=hold_patterns(settings.text("HoldMailForDomains")),
        )

    def held(self, module: str, queue: str) -> bool:
        """An SMTP queue whose host (or whole name) matches a hold pattern."""
        if module != "SMTP" or not self.hold:
            return False
        host = Route(module, queue).host_port()[0].lower()
        names = {host, queue.lower()}
        return any(_wildcard(p).fullmatch(n) for n in names for p in self.hold)

    def backoff(self, attempts: int) -> float:
        """Delay after the ``attempts``-th failed attempt: first, doubling, capped."""
        return min(self.retry_first * 2 ** max(attempts - 1, 0), self.retry_max)

    def expires(self, created: float, held: bool) -> float:
        return created + (self.held_expiry if held else self.expiry)


@functools.lru_cache(maxsize=256)
def _wildcard(pattern: str) -> re.Pattern[str]:
    """Only ``*`` is special (``[1.2.3.4]`` is a literal queue name, not a set)."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def queue_label(module: str, queue: str) -> str:
    return f"{module}({queue})"


def parse_queue_name(text: str) -> tuple[str, str]:
    """``SMTP(host)`` / ``LOCAL(acct@dom)`` / a bare name (an SMTP queue, as
    ETRN names it) -> (module, queue)."""
    text = text.strip()
    head, paren, rest = text.partition("(")
    if paren and rest.endswith(")") and head.isalpha():
        return head.upper(), rest[:-1]
    return "SMTP", text.removeprefix("#")


def recipient_state(r: QueuedRecipient, policy: QueuePolicy) -> str:
    """``held``, ``deferred`` or ``queued`` as an administrator sees it."""
    if r.pending and policy.held(r.module, r.queue) and not r.released:
        return "held"
    return r.state


# -- administrator actions: synchronous, so the CLI (another process) uses them too --

def release_queue(store: Store, name: str, now: float | None = None) -> int:
    """Give every pending recipient of a queue one attempt now, held or not.

    ``@domain`` releases that domain's SMTP queues and those of its
    subdomains (ETRN ``@``). Returns the number of recipients released.
    """
    module, queue = parse_queue_name(name)
    now = time.time() if now is None else now
    if not queue.startswith("@"):
        return store.queue_schedule(now, module=module, queue=queue, release=True)
    domain = queue[1:].lower()
    names = {
        r.queue for m in store.queue_list() for r in m.recipients
        if r.module == module and _in_domain(Route(module, r.queue).host_port()[0], domain)
    }
    return sum(store.queue_schedule(now, module=module, queue=q, release=True) for q in names)


def flush_queue(store: Store, name: str | None = None, now: float | None = None) -> int:
    """Make deferred recipients (of one queue, or all) due now; held stay held."""
    now = time.time() if now is None else now
    if name is None:
        return store.queue_schedule(now)
    module, queue = parse_queue_name(name)
    return store.queue_schedule(now, module=module, queue=queue)


def _in_domain(host: str, domain: str) -> bool:
    host = host.lower()
    return host == domain or host.endswith("." + domain)


@dataclass(slots=True)
class _Pending:
    add: Sequence[NewQueueMessage]
    settle: Sequence[RecipientUpdate]
    done: asyncio.Future[None]


class Queue:
    """Durable submission and the queue operations of the running server."""

    def __init__(self, services: Services, *, blob_threads: int = 8) -> None:
        self.services = services
        self.store = services.store
        self.policy = QueuePolicy()
        self.settings: ServerSettings | None = None  # as of the last refresh_policy
        self.submitted = asyncio.Event()  # set on every change the runner should see
        self.policy_version = -1
        self._db_pool = ThreadPoolExecutor(1, thread_name_prefix="waypost-queue-db")
        self._blob_pool = ThreadPoolExecutor(blob_threads, thread_name_prefix="waypost-blobs")
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._closing = False
        self.full_notice = FullNotice(log)  # a full disk, logged once per episode

    # -- running blocking work off the loop --------------------------------

    async def db(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run store work on the queue's database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_pool, functools.partial(func, *args, **kwargs))

    async def files(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blob file work (hashing, writing, fsync, reading) on a worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._blob_pool, functools.partial(func, *args, **kwargs))

    async def refresh_policy(self) -> QueuePolicy:
        """Re-read the settings when the store's change counter moved."""
        version = await self.db(self.store.version)
        if version != self.policy_version:
            self.settings = await self.db(self.services.settings)
            self.policy = QueuePolicy.from_settings(self.settings)
            self.policy_version = version
        return self.policy

    # -- submission ----------------------------------------------------------

    async def submit(self, sub: Submission, *, settle: Sequence[RecipientUpdate] = ()) -> str:
        """Make a message durable and return its queue id.

        ``settle``: queue-recipient changes committed in the same transaction
        (a DSN and the failures it reports are one change: never both lost,
        never sent twice).
        """
        if self._closing:
            raise RuntimeError("the queue is shutting down")
        if not sub.recipients:
            raise ValueError("a message needs at least one recipient")
        message_id = sub.params.get("QueueID") or new_message_id()
        # the blob's directory entry is synced once per batch by the committer
        try:
            blob = await self.files(self.store.blob_put, sub.body, sync_dir=False)
        except StorageFull as exc:
            self.full_notice.refused("message body", exc)
            raise
        row = NewQueueMessage(
            id=message_id, mail_from=sub.mail_from, blob=blob, size=len(sub.body),
            created=time.time(), params=dict(sub.params), client_ip=sub.client_ip,
            helo=sub.helo, auth_user=sub.auth_user, trusted=sub.trusted, protocol=sub.protocol,
            recipients=tuple(
                NewQueueRecipient(
                    address=r.address, module=r.route.module, queue=r.route.queue,
                    route_address=r.route.address, real_to=r.route.real_to,
                    mailbox=r.route.mailbox, notify=tuple(r.notify), orcpt=r.orcpt,
                ) for r in sub.recipients
            ),
        )
        await self._commit([row], settle)
        self.submitted.set()
        return message_id

    async def settle(self, updates: Sequence[RecipientUpdate]) -> None:
        """Commit recipient state changes (grouped with concurrent submissions)."""
        if updates:
            await self._commit((), updates)

    async def _commit(
        self, add: Sequence[NewQueueMessage], settle: Sequence[RecipientUpdate]
    ) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(add, settle, done))
        self._wake.set()
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_loop(), name="waypost-committer")
        await done

    async def _commit_loop(self) -> None:
        """Take everything that arrived while the last commit ran; commit it once."""
        while self._pending or not self._closing:
            if not self._pending:
                await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                if any(p.add for p in batch):
                    await self.files(self.store.blob_sync)  # before any row names them
                await self.db(self.store.queue_commit, [m for p in batch for m in p.add],
                              [u for p in batch for u in p.settle])
            except Exception as exc:
                if isinstance(exc, StorageFull):  # the others would fail alike
                    self.full_notice.refused("queue commit", exc)
                    for entry in batch:
                        _finish(entry.done, exc)
                    continue
                if len(batch) == 1:
                    _finish(batch[0].done, exc)
                    continue
                # one bad entry must not fail the others: commit them one by one
                for entry in batch:
                    try:
                        await self.db(self.store.queue_commit, entry.add, entry.settle)
                    except Exception as single:
                        _finish(entry.done, single)
                    else:
                        _finish(entry.done, None)
            else:
                self.full_notice.cleared()
                for entry in batch:
                    _finish(entry.done, None)

    async def has_room(self, size: int) -> bool:
        """Whether ``size`` more octets fit where the store keeps data (a
        ``statvfs``, off the loop). When it cannot tell, the write decides."""
        try:
            free = await self.files(self.store.free_space)
        except OSError:
            return True
        if free < size:
            self.full_notice.refused("free space", f"{free} octets, {size} needed")
            return False
        return True

    # -- what administrators (CLI, ETRN) do ----------------------------------

    def held(self, queue_name: str) -> bool:
        return self.policy.held(*parse_queue_name(queue_name))

    async def release(self, queue_name: str) -> int:
        count = await self.db(release_queue, self.store, queue_name)
        self.submitted.set()
        return count

    async def flush(self, queue: str | None = None) -> int:
        count = await self.db(flush_queue, self.store, queue)
        self.submitted.set()
        return count

    async def delete(self, message_id: str) -> None:
        await self.db(self.store.queue_delete, message_id)

    async def list(self) -> list[QueuedMessage]:
        return await self.db(self.store.queue_list)

    async def show(self, message_id: str) -> QueuedMessage:
        return await self.db(self.store.queue_get, message_id)

    async def close(self) -> None:
        """Commit what was already submitted, then stop the worker threads."""
        self._closing = True
        self._wake.set()
        if self._committer is not None and not self._committer.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._committer), 30)
        for entry in self._pending:
            _finish(entry.done, RuntimeError("the queue is shutting down"))
        self._pending.clear()
        self._db_pool.shutdown(wait=False)
        self._blob_pool.shutdown(wait=False)


def _finish(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
