"""The delivery loop: reads only the queue (design.md, after Postfix).

It wakes when something is submitted and polls the database every second
anyway, so ``waypost queue flush/release`` run from another process take
effect at once. Each tick picks the due recipients and groups them by route
queue, ``MODULE(queue)``; one task per queue delivers its group while the
next ticks skip that queue, so a slow SMTP target never stalls local mail.

What each module does with its group:

* ``LOCAL(account)`` -- the :class:`~local.LocalDelivery` built once here
  (store + mark delivered, one transaction), given each settings snapshot;
* ``DISCARD()`` -- done; ``BOUNCE(..)`` ("Accepted and Bounced") -- failure DSN;
* ``SMTP(target)`` -- ``relay.deliver`` (the relay the runner is given, see
  ``outbound.RelayService``; without one the recipients wait in the queue),
  except in held queues (smtp.md §6.1): those wait unattempted, unless
  released, until the hold expiry;
* ``LIST(..)`` and modules without delivery yet -- kept in the queue with a
  note, never bounced for it.

Outcomes: *failed* bounces now; *deferred* retries with backoff and bounces
after the expiry (smtp.md §2.3). Every outcome, and every look at a held
queue, is logged (one line, ``deliverylog.py``) and kept in the recipient's
history in the same update that applies it. A DSN is submitted together with the
failures it reports (one transaction) and never for a null sender.
A full disk (:class:`StorageFull`) pauses every delivery for
``StorageFullRetry`` seconds; recipients deferred for it lose no attempt,
and outcomes that could not be recorded are kept and recorded first, so a
relayed message is not relayed again (``storage_full.py``).
Forwarders, groups and aliases were expanded by the Router at RCPT time:
queue rows hold final routes, so nothing is re-routed here.

Several processes on one data directory (``serve --worker I/N``, issue 15)
never deliver a recipient twice at once: a tick *claims* what is due
(``Store.queue_claim``: owner = this runner's :func:`claimant_id`, lease =
``QueueLeaseTime``), a route queue's recipients go to one process, a group
renews its lease every third of it while it delivers, and every outcome is
settled only while this runner still holds the claim (``RecipientUpdate.owner``),
which also clears it. LOCAL stores a copy only while it holds the claim, in
the transaction that settles it, so a takeover never stores twice. A process
that dies leaves its claims to expire: then another takes them. For SMTP
this cannot be exactly once: a process killed after the remote 250 and
before its settle commits makes the message go out again once the lease
has run out (Postfix has the same window); the receiver sees a duplicate,
never a loss. A clean stop releases its claims at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from waypost.services import holders
from waypost.services.container import Services
from waypost.services.delivery.deliverylog import logged
from waypost.services.delivery.dsn import DSNRecipient, build_dsn
from waypost.services.delivery.local import LocalDelivery
from waypost.services.delivery.outbound import (
    OUTBOUND_PARAMS,
    OutboundMessage,
    OutboundRecipient,
    Outcome,
    RelayService,
)
from waypost.services.mailaccess.quota import Quotas
from waypost.services.mailaccess.rights import MailboxAccess
from waypost.services.mailstore import Mailstore
from waypost.services.message import Recipient, Submission
from waypost.services.queue import Queue, QueuePolicy, claimant_id, lease_time, queue_label
from waypost.services.rules.delivery import DeliveryRules
from waypost.services.rules.enqueue import Enqueuer
from waypost.services.storage_full import SMTP_REPLY
from waypost.services.trust import ClientTrust
from waypost.storage.interface import (
    QueuedMessage,
    QueuedRecipient,
    RecipientUpdate,
    StorageFull,
    StoreError,
)

log = logging.getLogger("waypost.delivery")

HOLD_RECHECK = 3600.0  # a held recipient's next look (a hold list change flushes at once)
PARKED_RECHECK = 600.0  # LIST and modules without delivery yet
GC_INTERVAL = 600.0
GC_GRACE = 3600.0  # a blob untouched this long and named by no row is garbage
FULL_GC_INTERVAL = 86400.0
MAX_GROUPS = 32  # queues delivered at the same time
SMTP_CHUNK = 20  # messages handed to the relay per call (bodies are in memory)
DESTINATION_CONCURRENCY = 20  # SMTPDestinationConcurrency when there are no settings (tests)
EXPIRED = "5.4.7"  # RFC 3463: delivery time expired
FULL_RETRY = 30.0  # StorageFullRetry when there are no settings (tests)


def local_delivery(services: Services, queue: Queue) -> LocalDelivery:
    """Local delivery with its own Enqueuer (for what account rules generate,
    submitted to ``queue``) and one ClientTrust shared by its rules and that
    Enqueuer."""
    trust = ClientTrust(queue.settings)
    enqueuer = Enqueuer(services, queue, is_client=trust.is_trusted)
    mail = Mailstore(services.store)
    rules = DeliveryRules(access=MailboxAccess(services), mail=mail,
                          book=services.rules, enqueuer=enqueuer, trust=trust,
                          files=queue.files)
    return LocalDelivery(mail=mail, events=services.events, rules=rules, trust=trust,
                         files=queue.files, db=queue.db, settings=queue.settings,
                         quotas=Quotas(services))


class DeliveryRunner:
    def __init__(
        self, services: Services, queue: Queue, *, poll: float = 1.0, batch: int = 500,
        relay: RelayService | None = None, local: LocalDelivery | None = None,
    ) -> None:
        self.services = services
        self.queue = queue
        self.store = services.store
        self.local = local or local_delivery(services, queue)
        self.poll = poll
        self.batch = batch
        self.relay = relay
        self._relay_ctx: Any = None
        self._warned_no_relay = False
        self._relay_version = -1
        self._busy: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(MAX_GROUPS)
        self._policy: QueuePolicy | None = None  # as of the last tick
        self._last_gc = time.time()
        self._last_full_gc = 0.0
        self._full_until = 0.0  # monotonic: no delivery before (the disk was full)
        self.collects_garbage = True
        """Whether this runner removes unused message bodies (one per server)."""
        self._unsettled: list[RecipientUpdate] = []  # outcomes a full disk kept from the queue
        self.owner = claimant_id()  # on the recipients this runner claims

    # -- the loop ---------------------------------------------------------------

    async def run(self) -> None:
        first = True
        try:
            try:
                await self.queue.db(self.release_orphans)
            except Exception as exc:  # their leases run out by themselves
                log.warning("cannot free the claims of stopped processes: %s", exc)
            while True:
                self.queue.submitted.clear()
                try:
                    await self.tick()
                    await self._collect_garbage()
                except StorageFull as exc:
                    self._disk_full("delivery", exc)
                except Exception:
                    log.exception("delivery runner tick failed")
                if first:  # from here on a submission wakes the loop (a sign for observers)
                    log.debug("delivery runner waiting: woken by a submission, else every %s s",
                              self.poll)
                    first = False
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a
                # cancel that lands as the event fires, and the runner never stops
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll):
                        await self.queue.submitted.wait()
                await asyncio.sleep(0.01)  # let a burst of submissions land together
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            try:  # what was claimed and not settled is free for the others at once
                await self.queue.db(self.store.queue_release, self.owner)
            except Exception as exc:
                log.warning("cannot release the queue claims of %s: %s", self.owner, exc)
            await self.queue.close()

    def release_orphans(self) -> int:
        """Free at once the claims of processes of this host that no longer run
        (a ``kill -9`` and restart, a restarted worker) instead of waiting
        out their lease (``holders.gone``); blocking. Returns how many
        recipients were freed."""
        owners = {r.owner for m in self.store.queue_list() for r in m.recipients if r.owner}
        freed = 0
        for owner in sorted(owners):
            if holders.gone(owner, frozenset({self.owner})):
                count = self.store.queue_release(owner)
                log.info("freed %d queue claims of %s, which no longer runs", count, owner)
                freed += count
        return freed

    async def run_once(self) -> None:
        """One tick and every delivery it started (for tests)."""
        await self.tick()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def tick(self) -> None:
        if time.monotonic() < self._full_until and self.queue.full_notice.full:
            return  # paused, unless a submission found space meanwhile
        if self._unsettled:  # first what was delivered while the disk was full
            updates, self._unsettled = self._unsettled, []
            try:
                await self.queue.settle(updates)
            except StorageFull as exc:
                self._unsettled = updates + self._unsettled
                self._disk_full("settling delivered mail", exc)
                return
        policy = await self.queue.refresh_policy()
        self.local.use_settings(self.queue.settings)
        if self._policy is not None and policy.hold != self._policy.hold:
            await self.queue.db(_unhold, self.store, self._policy, policy)
        self._policy = policy
        try:  # a claim is a write: a full disk pauses delivery like a failed settle
            due = await self.queue.db(self.store.queue_claim, self.owner, time.time(),
                                      lease_time(self.queue.settings), self.batch,
                                      sorted(self._busy))
        except StorageFull as exc:
            self._disk_full("claiming due mail", exc)
            return
        self.queue.full_notice.cleared()  # a write went through
        groups: dict[tuple[str, str], list[QueuedMessage]] = {}
        for message in due:
            parts: dict[tuple[str, str], list[QueuedRecipient]] = {}
            for r in message.recipients:
                parts.setdefault((r.module, r.queue), []).append(r)
            for key, rcpts in parts.items():
                groups.setdefault(key, []).append(
                    dataclasses.replace(message, recipients=tuple(rcpts)))
        for key, messages in groups.items():
            self._busy.add(key)
            task = asyncio.create_task(self._group(key, messages, policy),
                                       name=f"deliver {queue_label(*key)}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _group(
        self, key: tuple[str, str], messages: list[QueuedMessage], policy: QueuePolicy
    ) -> None:
        module, queue = key
        renewer = asyncio.create_task(
            self._renew([r.key for m in messages for r in m.recipients]),
            name=f"renew {queue_label(*key)}")
        try:
            async with self._limit:
                outcomes, parked = await self._deliver(module, queue, messages, policy)
                await self._apply(messages, outcomes, parked, policy, self.owner)
        except StorageFull as exc:  # nothing to record it in: retried after the pause
            self._disk_full(f"delivery to {queue_label(module, queue)}", exc)
        except Exception as exc:
            log.exception("delivery to %s failed", queue_label(module, queue))
            now = time.time()
            try:  # back off, or the same recipients come round again every tick
                await self.queue.settle([
                    RecipientUpdate(r.key, "deferred", error=f"internal error: {exc}",
                                    next_attempt=now + policy.backoff(r.attempts + 1),
                                    owner=self.owner)
                    for m in messages for r in m.recipients
                ])
            except Exception:
                log.exception("cannot reschedule %s", queue_label(module, queue))
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            self._busy.discard(key)
            self.queue.submitted.set()  # mail that came for this queue meanwhile is due

    async def _renew(self, keys: list[int]) -> None:
        """Keep a group's claim while it is delivered: every third of the
        lease, so two renewals may fail (a busy database) before it runs out."""
        while keys:
            lease = lease_time(self.queue.settings)
            await asyncio.sleep(lease / 3)
            try:
                held = await self.queue.db(self.store.queue_renew, self.owner, keys,
                                           time.time() + lease)
            except Exception as exc:
                log.warning("cannot renew the queue claims of %s: %s", self.owner, exc)
                continue
            if len(held) < len(keys):  # settled meanwhile, or taken over after a stall
                log.debug("%d of %d claimed recipient(s) no longer held",
                          len(keys) - len(held), len(keys))
            keys = [k for k in keys if k in held]

    # -- per module ---------------------------------------------------------------

    async def _deliver(
        self, module: str, queue: str, messages: list[QueuedMessage], policy: QueuePolicy
    ) -> tuple[list[Outcome], list[RecipientUpdate]]:
        """Outcomes to apply, and updates that just park recipients unattempted."""
        now = time.time()
        if module == "LOCAL":
            return await self.local.deliver(queue, messages, owner=self.owner), []
        if module == "DISCARD":
            return _each(messages, "delivered", 250, "2.0.0", "discarded"), []
        if module == "BOUNCE":
            return _each(messages, "failed", 550, "5.1.1", "unknown user account"), []
        if module == "SMTP":
            return await self._smtp(queue, messages, policy, now)
        note = ("mailing lists are not delivered yet; kept in the queue" if module == "LIST"
                else f"no delivery for module {module} yet; kept in the queue")
        return [], _park(messages, note, now + PARKED_RECHECK)

    async def _smtp(
        self, queue: str, messages: list[QueuedMessage], policy: QueuePolicy, now: float
    ) -> tuple[list[Outcome], list[RecipientUpdate]]:
        outcomes: list[Outcome] = []
        parked: list[RecipientUpdate] = []
        ready: list[QueuedMessage] = []
        held = policy.held("SMTP", queue)
        for m in messages:
            waiting = [r for r in m.recipients if held and not r.released]
            waiting_keys = {r.key for r in waiting}
            expiry = policy.expires(m.created, True)
            for r in waiting:
                if now >= expiry:
                    outcomes.append(Outcome(r.key, "failed", 0, EXPIRED,
                                            f"held mail for {queue} was never collected"))
                else:
                    note = Outcome(r.key, "held", text=f"{queue_label('SMTP', queue)} is held"
                                   " (HoldMailForDomains): waiting for ETRN, ATRN or a release")
                    parked.append(RecipientUpdate(r.key, None, next_attempt=min(
                        expiry, now + HOLD_RECHECK), attempted=False, history=logged(m, r, note)))
            rest = tuple(r for r in m.recipients if r.key not in waiting_keys)
            if rest:
                ready.append(dataclasses.replace(m, recipients=rest))
        if parked:  # the sign, for an observer, that a held queue's turn came and passed
            log.debug("held queue %s: %d recipient(s) left unattempted",
                      queue_label("SMTP", queue), len(parked))
        if not ready:
            return outcomes, parked
        if self.relay is None:
            if not self._warned_no_relay:  # a runner built without one: say so, once
                log.warning("no outbound SMTP relay: mail to %s stays queued",
                            queue_label("SMTP", queue))
                self._warned_no_relay = True
            parked += _park(ready, "remote delivery (SMTP) is not available yet; kept in the "
                            "queue", now + PARKED_RECHECK)
            return outcomes, parked
        ctx = await self._relay_context()
        # SMTPDestinationConcurrency (issue 15 point 7): the queue's messages
        # split evenly over up to that many sessions at once (one relay call,
        # one connection each), at most SMTP_CHUNK per session
        settings = self.queue.settings
        limit = max(1, int(settings.number("SMTPDestinationConcurrency")) if settings
                    else DESTINATION_CONCURRENCY)
        size = max(1, min(SMTP_CHUNK, -(-len(ready) // limit)))
        sessions = asyncio.Semaphore(limit)

        async def session(chunk: list[QueuedMessage]) -> list[Outcome]:
            async with sessions:
                return await self._relay_chunk(queue, chunk, ctx)

        chunks = [ready[start:start + size] for start in range(0, len(ready), size)]
        # every session runs to its end: one that fails must not lose what the
        # others relayed (their outcomes are recorded, so nothing goes twice)
        results = await asyncio.gather(*(session(c) for c in chunks), return_exceptions=True)
        for chunk, result in zip(chunks, results, strict=True):
            if isinstance(result, Exception):
                log.error("relay session to SMTP(%s) failed: %r", queue, result)
                outcomes += _each(chunk, "deferred", 451, "4.3.0", f"internal error: {result}")
            elif isinstance(result, BaseException):
                raise result
            else:
                outcomes += result
        return outcomes, parked

    async def _relay_chunk(
        self, queue: str, messages: list[QueuedMessage], ctx: Any
    ) -> list[Outcome]:
        assert self.relay is not None
        outbound, outcomes = await self._outbound(messages)
        if outbound:
            try:
                outcomes += await self.relay.deliver(queue, outbound, ctx)
            except Exception as exc:
                log.exception("relay to SMTP(%s) failed", queue)
                outcomes += _each(messages, "deferred", 451, "4.4.0", f"relay error: {exc}")
        return outcomes

    async def _outbound(
        self, messages: Sequence[QueuedMessage]
    ) -> tuple[list[OutboundMessage], list[Outcome]]:
        """Messages as the relay sends them; unreadable bodies are deferred."""
        outbound: list[OutboundMessage] = []
        outcomes: list[Outcome] = []
        for m in messages:
            try:
                body = await self.queue.files(self.store.blob_get, m.blob)
            except StoreError as exc:
                outcomes += _each([m], "deferred", 451, "4.3.0", f"message body unreadable: {exc}")
                continue
            outbound.append(OutboundMessage(
                id=m.id, mail_from=m.mail_from, body=body,
                params={k: v for k, v in m.params.items() if k.upper() in OUTBOUND_PARAMS},
                recipients=tuple(OutboundRecipient(r.key, r.route_address or r.address,
                                                   r.notify, r.orcpt) for r in m.recipients),
            ))
        return outbound, outcomes

    async def turn(
        self, queues: Sequence[str], reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter, helo: str, remote: str = "",
    ) -> tuple[int, int]:
        """ATRN/TURN (smtp.md §6.3): deliver every pending recipient of these
        SMTP queues, held or not, over a connection the customer turned
        around. Accepted ones leave the queue; the rest get the ordinary
        retry/bounce handling and stay held. Returns (delivered, attempted).
        """
        assert self.relay is not None, "no relay module"
        wanted = {q.lower() for q in queues}
        keys = {("SMTP", q) for q in queues}
        deadline = time.monotonic() + 60
        while keys & self._busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # a tick is delivering one of them right now
        self._busy |= keys
        try:
            policy = await self.queue.refresh_policy()
            messages = []
            now = time.time()
            # not what another process is delivering right now (its live
            # claim); unclaimed ones are taken without a claim of ours: a
            # tick elsewhere may still race this turn (known, issue 15)
            for m in await self.queue.db(self.store.queue_list):
                rcpts = tuple(r for r in m.recipients
                              if r.module == "SMTP" and r.queue.lower() in wanted
                              and (r.owner in (None, self.owner) or r.lease_until <= now))
                if rcpts:
                    messages.append(dataclasses.replace(m, recipients=rcpts))
            outbound, outcomes = await self._outbound(messages)
            outcomes += await self.relay.deliver_over(reader, writer, outbound, helo,
                                                      remote=remote)
            await self._apply(messages, outcomes, [], policy, None)
            delivered = sum(1 for o in outcomes if o.status == "delivered")
            return delivered, len(outcomes)
        finally:
            self._busy -= keys
            self.queue.submitted.set()

    async def _relay_context(self) -> Any:
        """Built in a thread (it reads the store) and rebuilt after a settings change."""
        version = self.queue.policy_version
        if (self._relay_ctx is None or version != self._relay_version) and self.relay:
            self._relay_ctx = await asyncio.to_thread(self.relay.make_relay_context,
                                                      self.services)
            self._relay_version = version
        return self._relay_ctx

    # -- outcomes ---------------------------------------------------------------

    async def _apply(
        self, messages: list[QueuedMessage], outcomes: list[Outcome],
        parked: list[RecipientUpdate], policy: QueuePolicy, owner: str | None,
    ) -> None:
        """Settle ``outcomes`` (only while ``owner`` holds the recipients'
        claim; None: unclaimed recipients, ATRN) and bounce the failures."""
        now = time.time()
        by_key = {o.key: o for o in outcomes}
        parked_keys = {u.key for u in parked}
        updates = list(parked)
        failures: list[tuple[QueuedMessage, list[tuple[QueuedRecipient, Outcome]]]] = []
        for m in messages:
            failed: list[tuple[QueuedRecipient, Outcome]] = []
            for r in m.recipients:
                if r.key in parked_keys:
                    continue
                o = by_key.get(r.key) or Outcome(r.key, "deferred", 451, "4.3.0",
                                                 "no result from the delivery module")
                if o.status == "delivered":
                    history = logged(m, r, o)
                    if r.module != "LOCAL":
                        # local delivery settled these in the transaction that
                        # stored them; settling again could hit a reused key
                        updates.append(RecipientUpdate(r.key, "delivered", error="",
                                                       history=history))
                elif o.status == "failed":
                    failed.append((r, o))
                elif o.enhanced == SMTP_REPLY[1]:  # a full disk: not the recipient's fault
                    self._disk_full(f"delivery of {m.id}", o.text)
                    updates.append(RecipientUpdate(
                        r.key, "deferred", error=describe(o),
                        next_attempt=now + self._full_retry(), attempted=False,
                        history=logged(m, r, o)))
                elif now >= policy.expires(m.created, policy.held(r.module, r.queue)):
                    failed.append((r, dataclasses.replace(
                        o, status="failed", enhanced=EXPIRED,
                        text=f"delivery time expired; last error: {describe(o)}")))
                else:
                    updates.append(RecipientUpdate(
                        r.key, "deferred", error=describe(o),
                        next_attempt=now + policy.backoff(r.attempts + 1),
                        history=logged(m, r, o)))
            if failed:
                failures.append((m, failed))
        updates = [dataclasses.replace(u, owner=owner) for u in updates]
        try:
            await self.queue.settle(updates)
        except StorageFull as exc:  # kept, so what was relayed is not relayed again
            self._unsettled += updates
            self._disk_full("settling delivered mail", exc)
            return
        for m, failed in failures:
            await self.bounce(m, failed, owner=owner)

    async def bounce(
        self, message: QueuedMessage, failed: Sequence[tuple[QueuedRecipient, Outcome]],
        *, owner: str | None = None,
    ) -> None:
        """Mark recipients failed and report them to the sender in one commit
        (the marks only while ``owner`` holds the claim, see :meth:`_apply`).

        With an owner, the claim is renewed first and only the recipients
        still held are reported: a runner that lost them (a stall longer
        than the lease, then a takeover) must not send a second DSN for what
        the new owner reports. The renewed lease covers the commit below.
        """
        if owner is not None:
            still = await self.queue.db(self.store.queue_renew, owner, [r.key for r, _ in failed],
                                        time.time() + lease_time(self.queue.settings))
            failed = [(r, o) for r, o in failed if r.key in still]
            if not failed:
                return
        updates = [RecipientUpdate(r.key, "failed", error=describe(o),
                                   history=logged(message, r, o), owner=owner)
                   for r, o in failed]
        report = [(r, o) for r, o in failed if _wants_failure_report(r.notify)]
        if not report:
            await self.queue.settle(updates)
            return
        if not message.mail_from:
            log.warning("not bouncing %s: null sender (a bounce is never bounced)", message.id)
            await self.queue.settle(updates)
            return
        result = await self.queue.db(self.services.router.route, message.mail_from, "mail",
                                     trusted=True)
        if not result.routes:
            log.warning("cannot return %s to <%s>: %s", message.id, message.mail_from,
                        result.error or "no route")
            await self.queue.settle(updates)
            return
        try:
            body = await self.queue.files(self.store.blob_get, message.blob)
        except StoreError:
            body = b""
        settings = self.queue.settings
        host = settings.text("MainDomain") if settings else "localhost"
        held = next((r.queue for r, o in report
                     if o.enhanced == EXPIRED and self.queue.policy.held(r.module, r.queue)), None)
        text = await self.queue.files(
            build_dsn, reporting_mta=host, original=body, mail_from=message.mail_from,
            recipients=[DSNRecipient(r.address, o.enhanced or "5.0.0", o.code, o.text,
                                     o.remote, r.orcpt) for r, o in report],
            ret=message.params.get("RET"), envid=message.params.get("ENVID"),
            arrival=datetime.fromtimestamp(message.created, UTC), held_domain=held,
        )
        dsn = Submission(
            mail_from="", body=text, trusted=True, protocol="LOCAL", helo=host,
            recipients=[Recipient(message.mail_from, route) for route in result.routes],
        )
        dsn_id = await self.queue.submit(dsn, settle=updates)
        log.info("returned %s to <%s> as %s", message.id, message.mail_from, dsn_id)

    def _full_retry(self) -> float:
        settings = self.queue.settings
        return float(settings.number("StorageFullRetry")) if settings else FULL_RETRY

    def _disk_full(self, what: str, exc: object) -> None:
        """Pause every delivery for StorageFullRetry seconds (``storage_full.py``)."""
        self._full_until = time.monotonic() + self._full_retry()
        self.queue.full_notice.refused(what, exc)

    async def _collect_garbage(self) -> None:
        now = time.time()
        if not self.collects_garbage or now - self._last_gc < GC_INTERVAL:
            return
        full = now - self._last_full_gc >= FULL_GC_INTERVAL
        removed = await self.queue.files(self.store.blob_gc, GC_GRACE, full=full)
        self._last_gc = now
        if full:
            self._last_full_gc = now
        if removed:
            log.info("removed %d unused message bodies", removed)


async def start_delivery(server: Any, relay: RelayService | None = None) -> None:
    """Create the Queue and the runner over ``server.services``; the server
    keeps the Queue as ``server.queue`` and the runner as a background task.
    ``relay`` (built by the server over its SMTP client) sends SMTP queues."""
    queue = Queue(server.services)
    await queue.refresh_policy()
    runner = DeliveryRunner(server.services, queue, relay=relay)
    # Housekeeping runs once per server: in worker 0 of ``serve --workers N``.
    runner.collects_garbage = getattr(server, "worker", 0) == 0
    server.queue = queue
    server.delivery = runner
    server.background.append(asyncio.create_task(runner.run(), name="waypost-delivery"))


def _unhold(store: Any, old: QueuePolicy, new: QueuePolicy) -> None:
    """Queues the hold list no longer names are due now, not at their next check."""
    freed = {r.queue for m in store.queue_list() for r in m.recipients
             if r.module == "SMTP" and old.held("SMTP", r.queue)
             and not new.held("SMTP", r.queue)}
    now = time.time()
    for name in freed:
        store.queue_schedule(now, module="SMTP", queue=name)


def describe(o: Outcome) -> str:
    text = " ".join(str(p) for p in (o.code or "", o.enhanced, o.text) if p)
    return f"{text} (from {o.remote})" if o.remote else text


def _each(
    messages: Sequence[QueuedMessage], status: str, code: int, enhanced: str, text: str
) -> list[Outcome]:
    return [Outcome(r.key, status, code, enhanced, text) for m in messages for r in m.recipients]


def _park(messages: Sequence[QueuedMessage], note: str, until: float) -> list[RecipientUpdate]:
    return [RecipientUpdate(r.key, "deferred", error=note, next_attempt=until, attempted=False,
                            history=logged(m, r, Outcome(r.key, "deferred", text=note)))
            for m in messages for r in m.recipients]


def _wants_failure_report(notify: Sequence[str]) -> bool:
    """RFC 3461: no NOTIFY means failures are reported; NEVER means nothing."""
    words = {n.upper() for n in notify}
    return not words or ("FAILURE" in words and "NEVER" not in words)
