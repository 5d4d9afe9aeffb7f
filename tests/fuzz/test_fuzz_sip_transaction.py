"""Fuzz target for the SIP transaction layer (``protocols/sip/transaction.py``):
random sequences of requests (retransmitted, ACKed, CANCELled, from a few
sources, over UDP and TCP), responses (matching client transactions or
not, with our Via or another), client requests sent by the layer, sender
failures, and time passing, against a transaction user that answers at
random, late or never.

Properties: no exception escapes the layer or reaches the event loop;
every timer is bounded (``INVITE_LIFETIME`` at most); a client
transaction's responses end with exactly one final response; answered
UDP transactions leave the tables after their timers, and closing the
layer leaves nothing (no transaction, no task).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from tests.support.fuzz import TARGET

from waypost.protocols.sip.headers import Headers
from waypost.protocols.sip.transaction import (
    INVITE_LIFETIME,
    ClientTransaction,
    Timers,
    TransactionLayer,
    TransactionLimits,
)
from waypost.protocols.sip.transport import Destination, TransportError
from waypost.protocols.sip.uri import parse_uri
from waypost.protocols.sip.wire import SipRequest, SipResponse, response_for

HOST, PORT = "127.0.0.1", 5060
SOURCES = [Destination("udp", "192.0.2.1", 5062), Destination("udp", "192.0.2.2", 5062),
           Destination("tcp", "192.0.2.3", 40000, object())]
BRANCHES = ["z9hG4bKa", "z9hG4bKb", "z9hG4bKc", "old-2543", ""]
METHODS = ["INVITE", "ACK", "CANCEL", "OPTIONS", "BYE", "REGISTER", "MESSAGE"]
STATUSES = [100, 180, 183, 200, 202, 302, 404, 408, 486, 487, 500, 503, 603]


class FakeSender:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.sent = 0

    def ready(self, destination: Destination) -> bool:
        return destination.transport == "udp" or destination.connection is not None

    def send_now(self, data: bytes, destination: Destination) -> None:
        if self.fail and self.sent % 7 == 3:
            self.sent += 1
            raise TransportError("fuzz")
        self.sent += 1

    async def send(self, data: bytes, destination: Destination) -> None:
        await asyncio.sleep(0)
        self.send_now(data, destination)


class RandomUser:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    async def on_request(self, request: SipRequest, transaction: Any, source: Destination
                         ) -> None:
        if transaction is None:
            return
        choice = self.rng.random()
        if choice < 0.2:
            return  # never answers
        if choice < 0.5:
            await asyncio.sleep(self.rng.choice([0.0, 0.001, 0.005]))
        for _ in range(self.rng.randrange(0, 3)):
            await transaction.respond(response_for(request, self.rng.choice([100, 180]),
                                                   "Progress"))
        await transaction.respond(response_for(request, self.rng.choice(STATUSES[3:]), "F"))

    async def on_stray_response(self, response: SipResponse, source: Destination) -> None:
        return None


def request(method: str, branch: str, source: Destination, cseq: int = 1,
            via_host: str | None = None) -> SipRequest:
    headers = Headers()
    transport = source.transport.upper()
    host = via_host or source.address
    branch_param = f";branch={branch}" if branch else ""
    headers.add("Via", f"SIP/2.0/{transport} {host}:{source.port}{branch_param}")
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:a@domain.dom>;tag=f1")
    headers.add("To", "<sip:b@domain.dom>")
    headers.add("Call-ID", "fuzz@test")
    headers.add("CSeq", f"{cseq} {method}")
    return SipRequest(method, parse_uri("sip:b@domain.dom"), headers)


ACTION = st.one_of(
    st.tuples(st.just("request"), st.sampled_from(METHODS), st.sampled_from(BRANCHES),
              st.integers(0, len(SOURCES) - 1), st.integers(1, 3)),
    st.tuples(st.just("send"), st.sampled_from([m for m in METHODS if m != "ACK"]),
              st.sampled_from(["udp", "tcp"])),
    st.tuples(st.just("response"), st.sampled_from(STATUSES), st.integers(0, 5),
              st.booleans()),
    st.tuples(st.just("wait"), st.sampled_from([0.0, 0.001, 0.01, 0.05])),
)


@TARGET
@given(st.lists(ACTION, max_size=40), st.integers(0, 2**16), st.booleans())
def test_random_sequences_never_escape_and_leave_nothing(actions: list[tuple[Any, ...]],
                                                         seed: int, fail: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        layer = TransactionLayer(FakeSender(fail), host=HOST, ports={"udp": PORT, "tcp": PORT},
                                 timers=Timers(0.0005, 0.002, 0.003),
                                 limits=TransactionLimits(total=20, per_address=5),
                                 user=RandomUser(seed))
        clients: list[ClientTransaction] = []
        readers: list[asyncio.Task[list[int]]] = []

        async def read(txn: ClientTransaction) -> list[int]:
            return [r.status async for r in txn.responses()]

        for action in actions:
            kind = action[0]
            if kind == "request":
                _, method, branch, source_at, cseq = action
                layer.receive(request(method, branch, SOURCES[source_at], cseq),
                              SOURCES[source_at])
            elif kind == "send":
                _, method, transport = action
                dest = Destination(transport, "198.51.100.1", 5060)
                txn = layer.send_request(request(method, "", SOURCES[0]), dest)
                clients.append(txn)
                readers.append(loop.create_task(read(txn)))
            elif kind == "response":
                _, status, which, ours = action
                if clients and ours:
                    target = clients[which % len(clients)].request
                    layer.receive(response_for(target, status, "R", to_tag="t"), SOURCES[0])
                else:
                    other = request("INVITE", "z9hG4bKx", SOURCES[which % len(SOURCES)])
                    layer.receive(response_for(other, status, "R"), SOURCES[0])
            else:
                await asyncio.sleep(action[1])
            now = loop.time()
            for table in (layer.server, layer.client):
                for txn_any in table.values():
                    assert all(h.when() - now <= INVITE_LIFETIME + 1
                               for h in txn_any._handles)
        await asyncio.sleep(0.06)  # 64*T1 is 32 ms: non-INVITE and answered ones end
        for txn_any in layer.server.values():
            assert txn_any.invite or txn_any.final is None, txn_any
        for txn in clients:
            if not txn.invite:
                assert txn.terminated, txn
        await layer.close()
        for reader in readers:
            statuses = await asyncio.wait_for(reader, 1)
            finals = [s for s in statuses if s >= 200]
            assert len(finals) <= 1 and (not finals or statuses[-1] == finals[0])
        assert layer.pending == 0 and layer._per_address == {}
        assert not errors, errors

    asyncio.run(main())
