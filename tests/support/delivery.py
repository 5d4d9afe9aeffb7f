"""Driving the queue and the delivery runner from a test, over a real store.

The relay is the one stand-in: :class:`FakeRelay` takes the place of
services/delivery/relay.py (remote SMTP), answering per envelope address, so
tests see every outbound call without a network peer. Local delivery, the
queue and the store are always the real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from waypost.services.container import Services
from waypost.services.delivery.outbound import OutboundMessage, Outcome
from waypost.services.delivery.runner import DeliveryRunner
from waypost.services.mailstore import Mailstore
from waypost.services.queue import Queue

T = TypeVar("T")


def run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one async test body in a fresh event loop."""
    return asyncio.run(factory())


class FakeRelay:
    """Stands in for services/delivery/relay.py: answers per envelope address."""

    def __init__(self, answers: dict[str, str] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[str, list[OutboundMessage]]] = []

    def make_relay_context(self, services: Services) -> str:
        return "ctx"

    async def deliver(self, queue: str, messages: Sequence[OutboundMessage], ctx: Any
                      ) -> list[Outcome]:
        assert ctx == "ctx"
        self.calls.append((queue, list(messages)))
        out = []
        for m in messages:
            for r in m.recipients:
                status = self.answers.get(r.address, "delivered")
                code = {"delivered": 250, "deferred": 451, "failed": 550}[status]
                out.append(Outcome(r.key, status, code, f"{str(code)[0]}.0.0", f"said {status}",
                                   "mx.remote.example"))
        return out


async def harness(svc: Services, relay: Any = None) -> tuple[Queue, DeliveryRunner]:
    """A queue with its policy loaded and a runner over it (no ``relay``: no remote)."""
    queue = Queue(svc)
    await queue.refresh_policy()
    return queue, DeliveryRunner(svc, queue, relay=relay)


def dsns(svc: Services) -> list[tuple[str, bytes]]:
    """Queued DSNs (null sender) as (recipient, body)."""
    return [(m.recipients[0].address, svc.store.blob_get(m.blob))
            for m in svc.store.queue_list() if m.mail_from == ""]


def pending_dsns_and_inbox(svc: Services, account: str) -> list[bytes]:
    """Every message in ``account``'s INBOX, oldest first."""
    store = Mailstore(svc.store)
    return [store.read_message(account, "INBOX", m.uid) for m in store.list_messages(account)]
