"""The contract between the delivery runner and the SMTP relay.

The runner hands ``relay.deliver(queue, messages, ctx)`` the messages of one
SMTP queue (one target) and gets one :class:`Outcome` per recipient key
back; it alone changes queue state and sends DSNs. Both sides import these
types from here so neither depends on the other's module.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutboundRecipient:
    key: int  # the queue's recipient row id
    address: str  # envelope recipient to send (Route.address)
    notify: tuple[str, ...] = ()
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    id: str
    mail_from: str
    recipients: tuple[OutboundRecipient, ...]
    body: bytes
    params: dict[str, str]  # SIZE/BODY/SMTPUTF8/RET/ENVID


@dataclass(frozen=True, slots=True)
class Outcome:
    key: int
    status: str  # "delivered" | "deferred" | "failed"
    code: int = 0
    enhanced: str = ""
    text: str = ""
    remote: str = ""  # host that answered


OUTBOUND_PARAMS = ("SIZE", "BODY", "SMTPUTF8", "RET", "ENVID")
"""MAIL FROM parameters passed on when relaying (the rest are ours, e.g. QueueID)."""
