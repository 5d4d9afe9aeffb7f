"""In-memory fakes of the siptx transaction layer (common brief: exact names and
signatures) for the proxy's unit tests: they record what the proxy sends and
let a test answer each client transaction as the far end would.

* :class:`FakeLayer` hands out a :class:`FakeClientTransaction` per
  ``send_request`` (kept in ``sent``; :meth:`FakeLayer.next_sent` waits for
  the next one), records ``send_stateless`` in ``stateless``, matches a
  CANCEL to an INVITE server transaction by its top Via branch (§9.2), and
  signs with 127.0.0.1 port 5060 (5061 for TLS).
* :class:`FakeClientTransaction` yields what :meth:`answer` feeds, and ends
  after a final response or :meth:`end` (the layer's Timer B/F is
  ``answer(408)``; a transport error ``answer(503)``).
* :class:`FakeServerTransaction` records every response in ``sent``.
* Every wait takes a timeout: a test never hangs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from waypost.protocols.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    TransactionLayer,
)
from waypost.protocols.sip.transport import Destination
from waypost.protocols.sip.wire import (
    SipMessage,
    SipRequest,
    SipResponse,
    parse_message,
    response_for,
)

WAIT = 5.0
"""Seconds any fake waits at most."""
SENT_BY = {"udp": ("127.0.0.1", 5060), "tcp": ("127.0.0.1", 5060), "tls": ("127.0.0.1", 5061)}


class FakeServerTransaction(ServerTransaction):
    def __init__(self, request: SipRequest, source: Destination) -> None:
        self.request = request
        self.source = source
        self.sent: list[SipResponse] = []
        self._changed = asyncio.Event()

    async def respond(self, response: SipResponse) -> None:
        self.sent.append(response)
        self._changed.set()

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.sent]

    @property
    def finals(self) -> list[SipResponse]:
        return [r for r in self.sent if r.status >= 200]

    async def final(self, timeout: float = WAIT) -> SipResponse:
        """The first final response, waiting at most ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not self.finals:
                self._changed.clear()
                await self._changed.wait()
        return self.finals[0]


class FakeClientTransaction(ClientTransaction):
    def __init__(self, request: SipRequest, destination: Destination) -> None:
        self.request = request
        self.destination = destination
        self._queue: asyncio.Queue[SipResponse | None] = asyncio.Queue()
        self.ended = False

    async def responses(self) -> AsyncIterator[SipResponse]:
        while True:
            response = await self._queue.get()
            if response is None:
                return
            yield response
            if response.status >= 200:
                return

    def feed(self, response: SipResponse) -> None:
        self._queue.put_nowait(response)

    def answer(self, status: int, reason: str = "", *, to_tag: str | None = "uas-tag"
               ) -> SipResponse:
        """The far end's response (§8.2.6: our Via kept on top), fed in."""
        response = response_for(self.request, status, reason or f"Status {status}",
                                to_tag=to_tag)
        self.feed(response)
        return response

    def end(self) -> None:
        """The transaction ends without a (further) response."""
        self._queue.put_nowait(None)


class FakeLayer(TransactionLayer):
    def __init__(self) -> None:
        self.sent: list[FakeClientTransaction] = []
        self.stateless: list[tuple[SipMessage, Destination]] = []
        self.invites: dict[str, FakeServerTransaction] = {}
        self._new = asyncio.Event()
        self._returned: set[int] = set()

    def send_request(self, request: SipRequest, destination: Destination) -> ClientTransaction:
        client = FakeClientTransaction(request, destination)
        self.sent.append(client)
        self._new.set()
        return client

    async def send_stateless(self, message: SipMessage, destination: Destination) -> None:
        self.stateless.append((message, destination))
        self._new.set()

    def invite_for(self, cancel: SipRequest) -> ServerTransaction | None:
        return self.invites.get(cancel.top_via.branch or "")

    def sent_by(self, transport: str) -> tuple[str, int]:
        return SENT_BY[transport.lower()]

    def server_transaction(self, request: SipRequest, source: Destination
                           ) -> FakeServerTransaction:
        """A server transaction for a received request (INVITEs kept for CANCEL)."""
        txn = FakeServerTransaction(request, source)
        if request.method == "INVITE":
            self.invites[request.top_via.branch or ""] = txn
        return txn

    async def next_sent(self, method: str | None = None, timeout: float = WAIT
                        ) -> FakeClientTransaction:
        """The oldest client transaction (of ``method``) not returned before."""
        async with asyncio.timeout(timeout):
            while True:
                for client in self.sent:
                    if id(client) not in self._returned and method in (
                            None, client.request.method):
                        self._returned.add(id(client))
                        return client
                self._new.clear()
                await self._new.wait()

    async def wait_stateless(self, count: int, timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while len(self.stateless) < count:
                self._new.clear()
                await self._new.wait()


def build_request(method: str = "INVITE", uri: str = "sip:bob@domain.dom", *,
                  branch: str = "z9hG4bKcaller1", to_tag: str | None = None,
                  call_id: str = "call-1@192.0.2.7", cseq: int = 1,
                  max_forwards: int = 70, headers: tuple[tuple[str, str], ...] = (),
                  vias: tuple[str, ...] = (), body: bytes = b"") -> SipRequest:
    """A request as a phone at 192.0.2.7:5062 sends it, parsed from its bytes
    (``vias`` go above the phone's own Via; ``headers`` at the end)."""
    to = "<sip:bob@domain.dom>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} {uri} SIP/2.0", *(f"Via: {v}" for v in vias),
             f"Via: SIP/2.0/UDP 192.0.2.7:5062;branch={branch};rport",
             f"Max-Forwards: {max_forwards}",
             "From: \"Alice\" <sip:alice@domain.dom>;tag=caller-tag", f"To: {to}",
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
             "Contact: <sip:alice@192.0.2.7:5062>",
             *(f"{n}: {v}" for n, v in headers)]
    data = ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    return message


PHONE = Destination("udp", "192.0.2.7", 5062)
"""Where :func:`build_request`'s requests come from."""
