"""Domain and account rules at local delivery (rules.md §1, §5).

For each queued message and account, ``services/delivery/local.py`` asks
:func:`plan` which copies to store and which recipients to refuse. The
domain's rules and then the account's run as one ordered list; their
decision becomes mailbox copies (``NewMailMessage``) that local delivery
stores in ONE transaction with the settling of the queue recipients, as
without rules:

* implicit final step: a copy in INBOX (or the ``account#mailbox`` of Direct
  Mailbox Addressing) unless Discard or Reject -- once, even if ``Store in
  INBOX`` ran too;
* ``Store in box`` (account rule): a copy in that mailbox of the account,
  created if missing; a foreign name ``~owner/box`` needs the mailbox to
  exist and the account to have the insert (``i``) right on it. ``Store in
  ~owner[@domain]/box`` (domain rule): created if missing. A Store in that
  fails is logged and the message is kept in INBOX even if discarded, so a
  failing action never loses it;
* ``Mark``: flags of every copy (with the ``RulesMark`` of server rules);
  ``Add Header``/``Tag Subject``: the copies' per-copy prefix, the shared
  body blob is not copied;
* ``Reject with``: the recipients fail with ``550 5.7.1 text`` and the
  delivery runner returns a DSN with the text to the sender;
* ``Redirect/Forward/Mirror/Reply``: sent through the Enqueuer (server rules
  apply, source ``RULES``) *before* the copies are committed, with
  deterministic queue ids, so a repeated delivery does not send them twice.

Recipients created by a server-wide ``Store in`` (see enqueue.py) are
stored into their mailbox, created if missing, and see no domain or account
rules. Any error in the rules themselves is logged and the message is
delivered as if there were none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from waypost.services.delivery.outbound import Outcome
from waypost.services.mailstore import (
    assemble,
    field_ranges,
    header_block,
    split_account,
    summarize,
)
from waypost.services.rules import actions
from waypost.services.rules.engine import CompiledRules, Decision, MessageView, evaluate
from waypost.services.rules.enqueue import (
    MARK_PARAM,
    chain_of,
    enqueuer_for,
    is_rule_copy,
    rule_book,
    sources,
)
from waypost.services.rules.model import Level
from waypost.storage.interface import (
    INBOX,
    MailboxExists,
    NewMailMessage,
    NotFound,
    QueuedMessage,
    QueuedRecipient,
    StoreError,
    canonical_mailbox,
    normalize_flags,
)

if TYPE_CHECKING:
    from waypost.services.queue import Queue

log = logging.getLogger("waypost.rules")

Planner = Callable[[str, QueuedMessage, bytes], list[NewMailMessage]]


@dataclass
class Plan:
    """What one message does in one account: ``copies`` to store while
    settling ``delivered`` as delivered; ``outcomes`` for the others."""

    copies: list[NewMailMessage] = field(default_factory=list)
    delivered: tuple[QueuedRecipient, ...] = ()
    outcomes: list[Outcome] = field(default_factory=list)


async def account_rules(queue: Queue, account: str) -> tuple[CompiledRules, dict[str, str]]:
    """The account's compiled rules (domain's first) and preferences; none on error."""
    try:
        return await asyncio.to_thread(rule_book(queue.services).account, account)
    except Exception:
        log.exception("cannot load the rules of %s; delivering without them", account)
        return CompiledRules(), {}


async def plan(
    queue: Queue,
    account: str,
    message: QueuedMessage,
    body: bytes,
    planner: Planner,
    *,
    rules: CompiledRules,
    prefs: dict[str, str],
) -> Plan:
    copy_rcpts = tuple(r for r in message.recipients if is_rule_copy(r.address, r.mailbox))
    normal = tuple(r for r in message.recipients if not is_rule_copy(r.address, r.mailbox))
    server_flags = tuple(message.params.get(MARK_PARAM, "").split())
    result = Plan(delivered=message.recipients)
    if copy_rcpts:
        await queue.files(
            _create_mailboxes, queue, account, sorted({r.mailbox or INBOX for r in copy_rcpts})
        )
        result.copies += _flagged(
            await queue.files(
                planner, account, dataclasses.replace(message, recipients=copy_rcpts), body
            ),
            server_flags,
        )
    if not normal:
        return result
    subset = dataclasses.replace(message, recipients=normal)
    base = await queue.files(planner, account, subset, body)
    if not rules:
        result.copies += _flagged(base, server_flags)
        return result
    try:
        result.copies += await _with_rules(
            queue, account, subset, body, base, rules, prefs, server_flags
        )
    except _Rejected as exc:
        result.outcomes += [Outcome(r.key, "failed", 550, "5.7.1", exc.text) for r in normal]
        result.delivered = copy_rcpts
    except Exception:
        log.exception("rules of %s failed on %s; delivered without them", account, message.id)
        result.copies += _flagged(base, server_flags)
    return result


async def _with_rules(
    queue: Queue,
    account: str,
    message: QueuedMessage,
    body: bytes,
    base: list[NewMailMessage],
    rules: CompiledRules,
    prefs: dict[str, str],
    server_flags: Sequence[str],
) -> list[NewMailMessage]:
    domain, name = split_account(account)
    store = queue.store

    def exists(box: str) -> bool:
        try:
            store.mail_mailbox(domain, name, box)
        except (NotFound, StoreError):
            return False
        return True

    settings = queue.settings
    client = (
        bool(message.client_ip)
        and settings is not None
        and message.client_ip in settings.client_ips()
    )
    view = MessageView.of_message(
        body,
        mail_from=message.mail_from,
        recipients=[r.address for r in message.recipients],
        routes=[
            f"LOCAL({r.queue}){('#' + r.mailbox) if r.mailbox else r.route_address}"
            for r in message.recipients
        ],
        sources=sources(message.protocol, message.trusted, message.auth_user, client),
        submit_address=message.client_ip or None,
        preferences=prefs,
        mailbox_exists=exists,
    )
    decision = await asyncio.to_thread(evaluate, rules, view)
    for line in decision.log:
        log.info("%s (%s)", line, account)
    if not decision.matched:
        return _flagged(base, server_flags)
    if decision.reject is not None:
        log.info(
            "rules of %s (%s) rejected %s from <%s>: %s",
            account,
            ", ".join(decision.matched),
            message.id,
            message.mail_from,
            decision.reject,
        )
        raise _Rejected(decision.reject)
    prefix, omit = actions.delivery_edit(body, decision.headers, decision.tags)
    targets, failed = await queue.files(_store_targets, queue, account, decision)
    enqueuer = enqueuer_for(queue)
    edited = body
    if decision.changes_message and (decision.generate or decision.execute):
        edited = await queue.files(actions.rewrite, body, decision.headers, decision.tags)
    sent = await enqueuer.generate(
        decision.generate,
        view=view,
        body=edited,
        mail_from=message.mail_from,
        chain=chain_of(message.params),
        owner=account,
        owner_address=account,
        server_rules=True,
        exclude_account=account,
        id_base=message.id,
    )
    keep = not decision.discard or failed or not sent
    if decision.discard and keep:
        log.error(
            "rules of %s: Discard ignored for %s: %s failed, the message stays in INBOX",
            account,
            message.id,
            "a Store in" if failed else "a generated message",
        )
    flags = normalize_flags([*server_flags, *decision.flags])
    copies: list[NewMailMessage] = []
    kept_boxes: set[tuple[str, str, str]] = set()
    for copy in base if keep else []:
        copies.append(_edited(copy, body, prefix, omit, flags))
        kept_boxes.add((copy.domain.lower(), copy.account.lower(), canonical_mailbox(copy.mailbox)))
    keys = tuple(r.key for r in message.recipients)
    return_path = f"Return-Path: <{message.mail_from}>\r\n".encode("utf-8", "replace")
    summary = base[0].summary if base else summarize(header_block(body))
    for t_domain, t_account, box in targets:
        key = (t_domain.lower(), t_account.lower(), canonical_mailbox(box))
        if key in kept_boxes:
            continue  # INBOX once, even if Store in INBOX ran too
        kept_boxes.add(key)
        copy = NewMailMessage(
            domain=t_domain,
            account=t_account,
            mailbox=box,
            blob=message.blob,
            blob_size=len(body),
            internal_date=base[0].internal_date if base else time.time(),
            prefix=return_path,
            omit=field_ranges(body, ["Return-Path"]),
            summary=summary,
            fallback_inbox=True,
            queue_keys=keys,
        )
        copies.append(_edited(copy, body, prefix, omit, flags))
    enqueuer.execute(
        decision.execute, edited, message.mail_from, [r.address for r in message.recipients]
    )
    return copies


class _Rejected(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _flagged(copies: list[NewMailMessage], flags: Sequence[str]) -> list[NewMailMessage]:
    if not flags:
        return copies
    return [dataclasses.replace(c, flags=normalize_flags([*c.flags, *flags])) for c in copies]


def _edited(
    copy: NewMailMessage,
    body: bytes,
    prefix: bytes,
    omit: tuple[tuple[int, int], ...],
    flags: Sequence[str],
) -> NewMailMessage:
    if not prefix and not omit and not flags:
        return copy
    new_prefix = copy.prefix + prefix
    new_omit = tuple(sorted(set(copy.omit) | set(omit)))
    summary = copy.summary
    if prefix or omit:
        head = header_block(body)
        summary = summarize(
            assemble(new_prefix, head, [r for r in new_omit if r[1] <= len(head)]) + b"\r\n"
        )
    return dataclasses.replace(
        copy,
        prefix=new_prefix,
        omit=new_omit,
        summary=summary,
        flags=normalize_flags([*copy.flags, *flags]),
    )


def _create_mailboxes(queue: Queue, account: str, boxes: Sequence[str]) -> None:
    from waypost.services.mailaccess.names import check_create  # the name rules

    domain, name = split_account(account)
    for box in boxes:
        if canonical_mailbox(box) == INBOX:
            continue
        try:
            queue.store.mail_create_mailbox(domain, name, check_create(box))
        except MailboxExists:
            pass
        except StoreError as exc:  # stored in INBOX instead (fallback_inbox)
            log.error("cannot create mailbox %r of %s for a rule copy: %s", box, account, exc)


def _store_targets(
    queue: Queue, account: str, decision: Decision
) -> tuple[list[tuple[str, str, str]], bool]:
    """(domain, account, mailbox) of every Store in, mailboxes created where
    allowed; and whether one of them failed."""
    from waypost.services.mailaccess.names import check_create
    from waypost.services.mailaccess.rights import MailboxAccess

    access = MailboxAccess(queue.services)
    out: list[tuple[str, str, str]] = []
    failed = False
    for copy in decision.store:
        try:
            target = access.resolve(account, copy.mailbox)
            if not target.mailbox_name:
                raise StoreError(f"{copy.mailbox!r} names no mailbox")
            ref = target.ref
            own = target.owner.lower() == account.lower()
            if own or copy.level is not Level.ACCOUNT:
                try:
                    queue.store.mail_create_mailbox(ref[0], ref[1], check_create(ref[2]))
                except MailboxExists:
                    pass
            else:  # a user's rule: only into a mailbox he may insert into
                rights = access.rights(account, target)
                if "i" not in rights:
                    raise StoreError(f"{account} has no insert right on {copy.mailbox!r}")
            out.append(ref)
        except Exception as exc:
            failed = True
            log.error(
                "rule %r of %s: Store in %r failed: %s; kept in INBOX",
                copy.rule,
                account,
                copy.mailbox,
                exc,
            )
    return out, failed


__all__ = ["Plan", "account_rules", "plan"]
