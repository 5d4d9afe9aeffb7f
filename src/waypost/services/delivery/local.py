"""Local delivery (smtp.md §7): queued messages into their account's mailboxes.

Never twice, never lost: the mailbox rows and the "delivered" mark of the
queue recipients they serve are written in ONE transaction
(``Mailstore.deliver``), so a crash before it leaves the recipients pending
and a crash after it leaves nothing to redo; a re-run skips copies whose
recipients are no longer pending.

The stored copy is the queued blob itself (never copied) under a small
per-copy prefix:

* ``Return-Path: <sender>`` -- added at final delivery (RFC 5321 §4.4);
  any Return-Path already in the message is omitted from the copy.
* For unified domain-wide accounts (``.local``/``.domain`` routes, which
  carry ``real_to``): one copy per message and account, with one
  ``X-Real-To:`` field (name from setting RealToHeader) listing every
  original recipient (RCPT TO address) routed into that account, comma
  separated. Issue 4 asks for this over smtp.md §7.1's one copy per
  recipient: a multidrop poller (fetchmail ``envelope X-Real-To``) reads
  every address of that one field and hands the single copy to each
  recipient. Any X-Real-To the sender put in the message is omitted, so it
  cannot be forged; recipients of other accounts never appear in a copy.
* Ordinary recipients routed to the same account and mailbox get one copy.

``account#mailbox`` stores into that mailbox when it exists, else INBOX.

Domain and account rules (rules.md) decide per message which of these
copies are made, where else copies go, with which flags and header
changes, and which recipients are refused: ``services/rules/delivery.py``.
Their copies are stored in the same single transaction.

Quota (smtp.md §7, ``services/mailaccess/quota.py``): a message whose copies
would take an account over its ``MaxAccountSize`` is stored nowhere and
deferred (``452 4.2.2``, RFC 3463 "mailbox full"), retried with the queue's
backoff, and bounced (``552 4.2.2`` as a permanent failure) once it has
waited the setting ``OverQuotaLifetime`` (one day, [waypost]). The copies of one run
count against each other, so a batch never overshoots the limit.

A full disk (:class:`StorageFull`) stores nothing and defers the whole batch
with ``452 4.3.1``; the runner retries it once space returns
(``storage_full.py``).

Every copy, with or without rules, is built by the message's
``mailstore.StoredCopies``. :class:`LocalDelivery` is one service, built
once by the delivery runner with its dependencies (the mail store
service, the mailbox change events, the rules at delivery with their Enqueuer, the client
trust, the queue's worker threads); the runner hands it each new settings
snapshot (:meth:`LocalDelivery.use_settings`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence

from waypost.services.delivery.deliverylog import record
from waypost.services.delivery.outbound import Outcome
from waypost.services.mail_events import MailEvents
from waypost.services.mailaccess.quota import Quotas
from waypost.services.mailstore import Mailstore, StoredCopies
from waypost.services.rules.delivery import DeliveryRules, Offload
from waypost.services.storage_full import SMTP_REPLY
from waypost.services.trust import ClientTrust
from waypost.settings import ServerSettings
from waypost.storage.interface import (
    INBOX,
    NewMailMessage,
    NotFound,
    QueuedMessage,
    RecipientUpdate,
    StorageFull,
    StoreError,
)

log = logging.getLogger("waypost.delivery.local")

DEFAULT_REAL_TO = "X-Real-To"

Planned = list[tuple[QueuedMessage, list[NewMailMessage]]]


@dataclasses.dataclass(kw_only=True)
class LocalDelivery:
    """Queued messages into their account's mailboxes (``LOCAL(account)``).

    ``files`` runs blob and parsing work, ``db`` the store transaction, each
    on its worker thread (the queue's), never on the event loop. ``trust``
    is shared with ``rules`` and its Enqueuer: :meth:`use_settings` keeps it
    current.
    """

    mail: Mailstore
    events: MailEvents
    rules: DeliveryRules
    trust: ClientTrust
    files: Offload
    db: Offload
    quotas: Quotas | None = None
    settings: dataclasses.InitVar[ServerSettings | None] = None
    real_to_header: str = dataclasses.field(default=DEFAULT_REAL_TO, init=False)
    over_quota_lifetime: float = dataclasses.field(default=86400.0, init=False)
    _settings: ServerSettings | None = dataclasses.field(default=None, init=False)

    def __post_init__(self, settings: ServerSettings | None) -> None:
        self.use_settings(settings)

    def use_settings(self, settings: ServerSettings | None) -> None:
        """Follow a settings change (RealToHeader, OverQuotaLifetime, ClientIPAddresses);
        cheap when unchanged."""
        if settings is None or settings is self._settings:
            return
        self._settings = settings
        self.real_to_header = settings.text("RealToHeader")
        self.over_quota_lifetime = settings.number("OverQuotaLifetime")
        self.trust.update(settings)

    async def deliver(
        self, account: str, messages: Sequence[QueuedMessage], *, owner: str | None = None,
    ) -> list[Outcome]:
        """Deliver the given recipients (all routed ``LOCAL(account)``).

        Delivered recipients are committed here, with their copies; the
        outcomes of the others (failed, deferred) are for the runner to apply.
        ``owner``: the runner's claim on them (issue 15). A copy is stored
        only while it still holds them, in the transaction that settles them,
        so a runner whose lease ran out and was taken over stores nothing.
        """
        outcomes: list[Outcome] = []
        planned: Planned = []
        rules, prefs = await self.rules.account_rules(account)
        for message in messages:
            try:
                body = await self.files(self.mail.queued_body, message.blob)
                copies = StoredCopies(message, body, real_to_header=self.real_to_header)
                plan = await self.rules.plan(account, copies, rules=rules, prefs=prefs)
            except StoreError as exc:
                log.error("cannot read the body of %s: %s", message.id, exc)
                outcomes += _all(message, "deferred", 451, "4.3.0",
                                 f"message body unreadable: {exc}")
                continue
            outcomes += plan.outcomes
            if plan.delivered:
                parsed = await self.files(copies.with_structure, plan.copies)
                planned.append((dataclasses.replace(message, recipients=plan.delivered), parsed))
        if planned:
            outcomes += await self._store(account, planned, owner)
        return outcomes

    async def _store(self, account: str, planned: Planned, owner: str | None) -> list[Outcome]:
        if self.quotas is not None:
            planned, refused = await self.db(self._over_quota, planned)
            if not planned:
                return refused
            return refused + await self._stored(account, planned, owner)
        return await self._stored(account, planned, owner)

    def _over_quota(self, planned: Planned) -> tuple[Planned, list[Outcome]]:
        """(the messages whose copies fit their accounts' quotas, the outcomes
        of the others). Blocking: runs on the store's worker thread."""
        assert self.quotas is not None
        adding: dict[tuple[str, str], int] = {}
        fitting: Planned = []
        refused: list[Outcome] = []
        now = time.time()
        for message, copies in planned:
            wanted = dict(adding)
            for copy in copies:
                owner = (copy.domain, copy.account)
                wanted[owner] = wanted.get(owner, 0) + copy.size
            grown = [o for o, size in wanted.items() if size > adding.get(o, 0)]
            full = next((o for o in grown if not self._fits(*o, wanted[o])), None)
            if full is None:
                adding = wanted
                fitting.append((message, copies))
                continue
            text = f"mailbox full: {full[1]}@{full[0]} is over its quota"
            if now - message.created >= self.over_quota_lifetime:
                refused += _all(message, "failed", 552, "5.2.2", text)
            else:
                refused += _all(message, "deferred", 452, "4.2.2", text)
            log.info("LOCAL: %s not stored: %s", message.id, text)
        return fitting, refused

    def _fits(self, domain: str, account: str, size: int) -> bool:
        """Whether ``size`` more octets fit; an account that is gone (or a
        store that cannot answer) is left to the store call, which reports it."""
        assert self.quotas is not None
        try:
            return self.quotas.fits(domain, account, size)
        except (NotFound, StoreError):
            return True

    async def _stored(
        self, account: str, planned: Planned, owner: str | None,
    ) -> list[Outcome]:
        copies = [dataclasses.replace(c, queue_owner=owner) for _, cs in planned for c in cs]
        now = time.time()  # the history row goes in with the copies (the runner logs the line)
        settle = [RecipientUpdate(r.key, "delivered", error="", owner=owner,
                                  history=record(m, r, Outcome(r.key, *_DELIVERED)).attempt(now))
                  for m, _ in planned for r in m.recipients]
        try:
            uids = await self.db(self.mail.deliver, copies, settle)
        except NotFound as exc:
            log.warning("LOCAL(%s): %s", account, exc)
            return [o for m, _ in planned
                    for o in _all(m, "failed", 550, "5.1.1", f"unknown user account: {exc}")]
        except StorageFull as exc:  # the others would fail alike: all wait for space
            log.debug("LOCAL(%s): %s", account, exc)  # the runner logs the episode
            return [o for m, _ in planned
                    for o in _all(m, "deferred", *SMTP_REPLY[:2], f"{SMTP_REPLY[2]}: {exc}")]
        except StoreError as exc:
            if len(planned) > 1:  # find the one that fails; deliver the others
                outcomes = []
                for one in planned:
                    outcomes += await self._stored(account, [one], owner)
                return outcomes
            log.error("LOCAL(%s): cannot store %s: %s", account, planned[0][0].id, exc)
            return _all(planned[0][0], "deferred", 451, "4.3.0", f"local store error: {exc}")
        for copy, uid in zip(copies, uids, strict=True):
            if uid is not None:
                self.events.publish((copy.domain, copy.account, copy.mailbox))
                log.info("delivered to LOCAL(%s)%s uid %d", account,
                         "" if copy.mailbox == INBOX else f"#{copy.mailbox}", uid)
        return [o for m, _ in planned for o in _all(m, *_DELIVERED)]


_DELIVERED = ("delivered", 250, "2.0.0", "delivered")  # status, code, enhanced, text


def _all(
    message: QueuedMessage, status: str, code: int, enhanced: str, text: str
) -> list[Outcome]:
    return [Outcome(r.key, status, code, enhanced, text) for r in message.recipients]


__all__ = ["DEFAULT_REAL_TO", "LocalDelivery"]
