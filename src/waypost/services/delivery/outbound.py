"""The contract between the delivery runner and the SMTP relay.

The runner hands ``relay.deliver(queue, messages, ctx)`` the messages of one
SMTP queue (one target) and gets one :class:`Outcome` per recipient key
back; it alone changes queue state and sends DSNs. Both sides import these
types from here so neither depends on the other's module: the runner is
given a :class:`RelayService` (``relay.Relay`` over the SMTP client, wired in
``server.py``; a stand-in in tests) and never imports the relay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from waypost.services.container import Services


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
    relay: str = ""  # where, as the delivery log names it: host[address]:port


OUTBOUND_PARAMS = ("SIZE", "BODY", "SMTPUTF8", "RET", "ENVID")
"""MAIL FROM parameters passed on when relaying (the rest are ours, e.g. QueueID)."""


class RelayService(Protocol):
    """What the runner asks of the relay. The context is the relay's own
    configuration: the runner only builds it (in a thread) and passes it back."""

    def make_relay_context(self, services: Services) -> Any:
        """Build the configuration from the store (blocking)."""
        ...

    async def deliver(
        self, queue: str, messages: Sequence[OutboundMessage], ctx: Any
    ) -> list[Outcome]:
        """One outcome per recipient of ``messages``, all of SMTP queue ``queue``."""
        ...

    async def deliver_over(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        messages: Sequence[OutboundMessage], helo: str, *, remote: str = "",
    ) -> list[Outcome]:
        """The same over a connection the peer turned around (ATRN)."""
        ...
