"""Domain and account rules at local delivery (rules.md §1, §5).

For each queued message and account, ``services/delivery/local.py`` asks
:meth:`DeliveryRules.plan` which copies to store and which recipients to refuse. The
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

:class:`DeliveryRules` is built once with what it needs (the mailbox
rights, the mail store service, the rule book, the Enqueuer for generated
messages, the client trust, the worker threads); every copy it plans comes from the message's
:class:`~waypost.services.mailstore.StoredCopies`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from waypost.services.delivery.outbound import Outcome
from waypost.services.mailaccess.rights import MailboxAccess
from waypost.services.mailstore import Mailstore, StoredCopies
from waypost.services.rules import actions
from waypost.services.rules.book import RuleBook
from waypost.services.rules.engine import CompiledRules, Decision, MessageView, evaluate
from waypost.services.rules.enqueue import (
    MARK_PARAM,
    Enqueuer,
    Generation,
    chain_of,
    is_rule_copy,
    sources,
)
from waypost.services.rules.model import Level
from waypost.services.trust import ClientTrust
from waypost.storage.interface import (
    INBOX,
    MailboxExists,
    NewMailMessage,
    NotFound,
    QueuedRecipient,
    StoreError,
    canonical_mailbox,
)

log = logging.getLogger("waypost.rules")

Offload = Callable[..., Awaitable[Any]]  # runs blocking work on a worker thread


@dataclass
class Plan:
    """What one message does in one account: ``copies`` to store while
    settling ``delivered`` as delivered; ``outcomes`` for the others."""

    copies: list[NewMailMessage] = field(default_factory=list)
    delivered: tuple[QueuedRecipient, ...] = ()
    outcomes: list[Outcome] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryRules:
    """Domain and account rules of the accounts local delivery stores into.

    ``access`` resolves ``Store in`` names and rights (the mail-access
    service's rules); ``mail`` looks up and creates mailboxes (under the
    mail-access name rules); ``enqueuer`` sends what the rules generate;
    ``files`` runs blocking work (store reads, header work) off the event loop.
    """

    access: MailboxAccess
    mail: Mailstore
    book: RuleBook
    enqueuer: Enqueuer
    trust: ClientTrust
    files: Offload

    async def account_rules(self, account: str) -> tuple[CompiledRules, dict[str, str]]:
        """The account's compiled rules (domain's first) and preferences; none on error."""
        try:
            return await asyncio.to_thread(self.book.account, account)
        except Exception:
            log.exception("cannot load the rules of %s; delivering without them", account)
            return CompiledRules(), {}

    async def plan(
        self, account: str, copies: StoredCopies, *, rules: CompiledRules,
        prefs: dict[str, str],
    ) -> Plan:
        message = copies.message
        copy_rcpts = tuple(r for r in message.recipients if is_rule_copy(r.address, r.mailbox))
        normal = tuple(r for r in message.recipients if not is_rule_copy(r.address, r.mailbox))
        server_flags = tuple(message.params.get(MARK_PARAM, "").split())
        result = Plan(delivered=message.recipients)
        if copy_rcpts:
            await self.files(
                self._create_mailboxes, account, sorted({r.mailbox or INBOX for r in copy_rcpts})
            )
            result.copies += copies.flagged(
                await self.files(copies.for_recipients, account, copy_rcpts), server_flags
            )
        if not normal:
            return result
        base = await self.files(copies.for_recipients, account, normal)
        if not rules:
            result.copies += copies.flagged(base, server_flags)
            return result
        try:
            result.copies += await self._with_rules(
                account, copies, normal, base, rules, prefs, server_flags
            )
        except _Rejected as exc:
            result.outcomes += [Outcome(r.key, "failed", 550, "5.7.1", exc.text) for r in normal]
            result.delivered = copy_rcpts
        except Exception:
            log.exception("rules of %s failed on %s; delivered without them", account, message.id)
            result.copies += copies.flagged(base, server_flags)
        return result

    async def _with_rules(
        self,
        account: str,
        copies: StoredCopies,
        recipients: Sequence[QueuedRecipient],
        base: list[NewMailMessage],
        rules: CompiledRules,
        prefs: dict[str, str],
        server_flags: Sequence[str],
    ) -> list[NewMailMessage]:
        message, body = copies.message, copies.body

        def exists(box: str) -> bool:
            try:
                self.mail.mailbox(account, box)
            except (NotFound, StoreError):
                return False
            return True

        view = MessageView.of_message(
            body,
            mail_from=message.mail_from,
            recipients=[r.address for r in recipients],
            routes=[
                f"LOCAL({r.queue}){('#' + r.mailbox) if r.mailbox else r.route_address}"
                for r in recipients
            ],
            sources=sources(message.protocol, message.trusted, message.auth_user,
                            self.trust.is_trusted(message.client_ip)),
            submit_address=message.client_ip or None,
            preferences=prefs,
            mailbox_exists=exists,
        )
        decision = await asyncio.to_thread(evaluate, rules, view)
        for line in decision.log:
            log.info("%s (%s)", line, account)
        if not decision.matched:
            return copies.flagged(base, server_flags)
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
        targets, failed = await self.files(self._store_targets, account, decision)
        edited = body
        if decision.changes_message and (decision.generate or decision.execute):
            edited = await self.files(actions.rewrite, body, decision.headers, decision.tags)
        sent = await self.enqueuer.generate(
            decision.generate,
            Generation(
                view=view,
                body=edited,
                mail_from=message.mail_from,
                chain=tuple(chain_of(message.params)),
                owner=account,
                owner_address=account,
                server_rules=True,
                exclude_account=account,
                id_base=message.id,
            ),
        )
        keep = not decision.discard or failed or not sent
        if decision.discard and keep:
            log.error(
                "rules of %s: Discard ignored for %s: %s failed, the message stays in INBOX",
                account,
                message.id,
                "a Store in" if failed else "a generated message",
            )
        flags = [*server_flags, *decision.flags]
        out: list[NewMailMessage] = []
        kept_boxes: set[tuple[str, str, str]] = set()
        for copy in base if keep else []:
            out.append(copies.edited(copy, prefix, omit, flags))
            kept_boxes.add((copy.domain.lower(), copy.account.lower(),
                            canonical_mailbox(copy.mailbox)))
        keys = tuple(r.key for r in recipients)
        for t_domain, t_account, box in targets:
            key = (t_domain.lower(), t_account.lower(), canonical_mailbox(box))
            if key in kept_boxes:
                continue  # INBOX once, even if Store in INBOX ran too
            kept_boxes.add(key)
            out.append(copies.edited(copies.copy(t_domain, t_account, box, keys),
                                     prefix, omit, flags))
        self.enqueuer.execute(
            decision.execute, edited, message.mail_from, [r.address for r in recipients]
        )
        return out

    def _create_mailboxes(self, account: str, boxes: Sequence[str]) -> None:
        for box in boxes:
            if canonical_mailbox(box) == INBOX:
                continue
            try:
                self.mail.create_mailbox(account, box)
            except MailboxExists:
                pass
            except StoreError as exc:  # stored in INBOX instead (fallback_inbox)
                log.error("cannot create mailbox %r of %s for a rule copy: %s", box, account, exc)

    def _store_targets(
        self, account: str, decision: Decision
    ) -> tuple[list[tuple[str, str, str]], bool]:
        """(domain, account, mailbox) of every Store in, mailboxes created where
        allowed; and whether one of them failed."""
        access = self.access
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
                        self.mail.create_mailbox(f"{ref[1]}@{ref[0]}", ref[2])
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


class _Rejected(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


__all__ = ["DeliveryRules", "Plan"]
