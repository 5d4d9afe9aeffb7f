"""Local delivery (smtp.md §7): queued messages into their account's mailboxes.

Never twice, never lost: the mailbox rows and the "delivered" mark of the
queue recipients they serve are written in ONE transaction
(``Store.mail_store``), so a crash before it leaves the recipients pending
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
Their copies are stored in the same single transaction. Quotas come with a
later issue.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from waypost import mime
from waypost.services.delivery.outbound import Outcome
from waypost.services.mailstore import assemble, field_ranges, split_account, summarize
from waypost.services.rules import delivery as rules_delivery
from waypost.storage.interface import (
    INBOX,
    NewMailMessage,
    NotFound,
    QueuedMessage,
    RecipientUpdate,
    StoreError,
)

if TYPE_CHECKING:
    from waypost.services.queue import Queue

log = logging.getLogger("waypost.delivery.local")

DEFAULT_REAL_TO = "X-Real-To"


def plan_copies(
    account: str, message: QueuedMessage, body: bytes, *, real_to_header: str = DEFAULT_REAL_TO,
    now: float | None = None,
) -> list[NewMailMessage]:
    """The mailbox copies one queued message makes in one account."""
    domain, name = split_account(account)
    now = time.time() if now is None else now
    return_path = f"Return-Path: <{_one_line(message.mail_from)}>\r\n".encode()
    plain_omit = field_ranges(body, ["Return-Path"])
    unified_omit = field_ranges(body, ["Return-Path", real_to_header])
    summary = summarize(body)
    # (mailbox, unified?) -> (original recipients for the header, queue keys)
    groups: dict[tuple[str, bool], tuple[list[str], list[int]]] = {}
    for r in message.recipients:
        real_to = _one_line(r.real_to).strip().strip("<>") if r.real_to else None
        names, keys = groups.setdefault((r.mailbox or INBOX, real_to is not None), ([], []))
        keys.append(r.key)
        if real_to and real_to.lower() not in {n.lower() for n in names}:
            names.append(real_to)
    copies = []
    for (target, _), (real_to, keys) in groups.items():
        prefix, omit = return_path, plain_omit
        if real_to:
            prefix += f"{real_to_header}: {', '.join(real_to)}\r\n".encode()
            omit = unified_omit
        copies.append(NewMailMessage(
            domain=domain, account=name, mailbox=target, blob=message.blob,
            blob_size=len(body), internal_date=now, prefix=prefix, omit=omit, summary=summary,
            fallback_inbox=True, queue_keys=tuple(keys),
        ))
    return copies


def with_structure(copies: Sequence[NewMailMessage], body: bytes) -> list[NewMailMessage]:
    """Parse each copy once, here (design.md: at delivery), so IMAP's first
    ENVELOPE or BODYSTRUCTURE of it reads the cache instead of the body."""
    return [dataclasses.replace(c, structure=mime.parse(assemble(c.prefix, body, c.omit))
                                .to_json()) for c in copies]


async def deliver(
    queue: Queue, account: str, messages: Sequence[QueuedMessage], *,
    real_to_header: str = DEFAULT_REAL_TO,
) -> list[Outcome]:
    """Deliver the given recipients (all routed ``LOCAL(account)``).

    Delivered recipients are committed here, with their copies; the outcomes
    of the others (failed, deferred) are for the runner to apply.
    """
    outcomes: list[Outcome] = []
    planned: list[tuple[QueuedMessage, list[NewMailMessage]]] = []
    rules, prefs = await rules_delivery.account_rules(queue, account)

    def planner(acct: str, message: QueuedMessage, body: bytes) -> list[NewMailMessage]:
        return plan_copies(acct, message, body, real_to_header=real_to_header)

    for message in messages:
        try:
            body = await queue.files(queue.store.blob_get, message.blob)
            plan = await rules_delivery.plan(queue, account, message, body, planner,
                                             rules=rules, prefs=prefs)
        except StoreError as exc:
            log.error("cannot read the body of %s: %s", message.id, exc)
            outcomes += _all(message, "deferred", 451, "4.3.0", f"message body unreadable: {exc}")
            continue
        outcomes += plan.outcomes
        if plan.delivered:
            copies = await queue.files(with_structure, plan.copies, body)
            planned.append((dataclasses.replace(message, recipients=plan.delivered), copies))
    if planned:
        outcomes += await _store(queue, account, planned)
    return outcomes


async def _store(
    queue: Queue, account: str, planned: list[tuple[QueuedMessage, list[NewMailMessage]]]
) -> list[Outcome]:
    copies = [c for _, cs in planned for c in cs]
    settle = [RecipientUpdate(r.key, "delivered", error="")
              for m, _ in planned for r in m.recipients]
    try:
        uids = await queue.db(queue.store.mail_store, copies, settle)
    except NotFound as exc:
        log.warning("LOCAL(%s): %s", account, exc)
        return [o for m, _ in planned
                for o in _all(m, "failed", 550, "5.1.1", f"unknown user account: {exc}")]
    except StoreError as exc:
        if len(planned) > 1:  # find the one that fails; deliver the others
            outcomes = []
            for one in planned:
                outcomes += await _store(queue, account, [one])
            return outcomes
        log.error("LOCAL(%s): cannot store %s: %s", account, planned[0][0].id, exc)
        return _all(planned[0][0], "deferred", 451, "4.3.0", f"local store error: {exc}")
    for copy, uid in zip(copies, uids, strict=True):
        if uid is not None:
            queue.services.events.publish((copy.domain, copy.account, copy.mailbox))
            log.info("delivered to LOCAL(%s)%s uid %d", account,
                     "" if copy.mailbox == INBOX else f"#{copy.mailbox}", uid)
    return [o for m, _ in planned for o in _all(m, "delivered", 250, "2.0.0", "delivered")]


def _one_line(text: str) -> str:
    return text.replace("\r", "").replace("\n", "")


def _all(
    message: QueuedMessage, status: str, code: int, enhanced: str, text: str
) -> list[Outcome]:
    return [Outcome(r.key, status, code, enhanced, text) for r in message.recipients]
