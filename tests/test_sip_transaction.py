"""The SIP transaction layer (RFC 3261 §17) over real loopback sockets, with
timers shrunk (T1 10 ms): retransmissions, Timer F's 408, the ACK of a
non-2xx, 100 Trying, absorbed retransmissions, the switch to TCP for a
large request, the transaction limits, and the tables emptying."""

from __future__ import annotations

import asyncio
import time

from tests.support.sip_ua import Recorder, loopback_stack

from waypost.protocols.sip.headers import Headers
from waypost.protocols.sip.transaction import INVITE_LIFETIME
from waypost.protocols.sip.transport import Destination
from waypost.protocols.sip.uri import parse_uri
from waypost.protocols.sip.wire import (
    SipMessage,
    SipRequest,
    SipResponse,
    StreamFramer,
    new_branch,
    parse_message,
    response_for,
)


class UdpPeer(asyncio.DatagramProtocol):
    """A UDP peer on loopback that records what it gets and may answer."""

    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[SipMessage, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait((parse_message(data), addr))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def send(self, message: SipMessage, to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(message.to_bytes(), to)

    async def next(self, timeout: float = 2.0) -> tuple[SipMessage, tuple[str, int]]:
        return await asyncio.wait_for(self.got.get(), timeout)


async def udp_peer() -> UdpPeer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(UdpPeer, local_addr=("127.0.0.1", 0))
    return peer


def make_request(method: str, *, via_port: int = 5999, body: bytes = b"",
                 branch: str | None = None, cseq: int = 1) -> SipRequest:
    headers = Headers()
    headers.add("Via", f"SIP/2.0/UDP 127.0.0.1:{via_port};branch={branch or new_branch()}")
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:alice@domain.dom>;tag=a1")
    headers.add("To", "<sip:bob@domain.dom>")
    headers.add("Call-ID", f"{new_branch()}@test")
    headers.add("CSeq", f"{cseq} {method}")
    return SipRequest(method, parse_uri("sip:bob@domain.dom"), headers, body)


async def drained(layer: object, timeout: float = 3.0) -> bool:
    """Wait until the layer holds no transaction and runs no task."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if layer.pending == 0:  # type: ignore[attr-defined]
            return True
        await asyncio.sleep(0.01)
    return False


async def collect(txn: object) -> list[SipResponse]:
    return [r async for r in txn.responses()]  # type: ignore[attr-defined]


def test_silent_peer_gets_retransmissions_then_408_after_timer_f() -> None:
    async def main() -> None:
        stack = await loopback_stack(Recorder())
        peer = await udp_peer()
        try:
            request = make_request("OPTIONS")
            start = time.monotonic()
            txn = stack.layer.send_request(request, Destination("udp", "127.0.0.1", peer.port))
            responses = await asyncio.wait_for(collect(txn), 5)
            elapsed = time.monotonic() - start
            assert [r.status for r in responses] == [408]
            assert elapsed >= 64 * 0.01 * 0.9
            copies = []
            while not peer.got.empty():
                copies.append(peer.got.get_nowait()[0].to_bytes())
            # Timer E: 10, 20, 40 then every 40 ms (T2) over 640 ms
            assert len(copies) >= 8 and len(set(copies)) == 1
            assert await drained(stack.layer)
        finally:
            await stack.close()
            assert peer.transport is not None
            peer.transport.close()

    asyncio.run(main())


def test_invite_to_silent_peer_times_out_with_timer_b_and_doubling_retransmissions() -> None:
    async def main() -> None:
        stack = await loopback_stack(Recorder())
        peer = await udp_peer()
        try:
            txn = stack.layer.send_request(make_request("INVITE"),
                                           Destination("udp", "127.0.0.1", peer.port))
            assert [r.status for r in await asyncio.wait_for(collect(txn), 5)] == [408]
            # Timer A doubles: sent at 0, 10, 30, 70, 150, 310 ms (and 630): 6 or 7 copies
            assert 6 <= peer.got.qsize() <= 7
            assert await drained(stack.layer)
        finally:
            await stack.close()
            assert peer.transport is not None
            peer.transport.close()

    asyncio.run(main())


def test_non_2xx_final_to_invite_is_acked_by_the_layer_and_retransmissions_reacked() -> None:
    async def main() -> None:
        stack = await loopback_stack(Recorder())
        peer = await udp_peer()
        try:
            request = make_request("INVITE")
            txn = stack.layer.send_request(request, Destination("udp", "127.0.0.1", peer.port))
            got, addr = await peer.next()
            assert isinstance(got, SipRequest)
            peer.send(response_for(got, 180, "Ringing", to_tag="t9"), addr)
            busy = response_for(got, 486, "Busy Here", to_tag="t9")
            peer.send(busy, addr)
            responses = await asyncio.wait_for(collect(txn), 3)
            assert [r.status for r in responses] == [180, 486]
            while True:
                ack, _ = await peer.next()
                if isinstance(ack, SipRequest) and ack.method == "ACK":
                    break
            assert isinstance(ack, SipRequest)
            assert ack.top_via.branch == got.top_via.branch
            assert str(ack.cseq) == f"{got.cseq.number} ACK" and ack.to.tag == "t9"
            peer.send(busy, addr)  # a retransmitted 486 gets the ACK again (Timer D)
            again, _ = await peer.next()
            assert isinstance(again, SipRequest) and again.method == "ACK"
        finally:
            await stack.close()
            assert peer.transport is not None
            peer.transport.close()

    asyncio.run(main())


def test_request_over_1300_bytes_for_udp_goes_over_tcp_with_its_via_saying_tcp() -> None:
    async def main() -> None:
        stack = await loopback_stack(Recorder())
        received: asyncio.Queue[SipMessage] = asyncio.Queue()
        writers = []

        async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            framer = StreamFramer()
            while data := await reader.read(65536):
                framer.feed(data)
                while (item := framer.next()) is not None:
                    if isinstance(item, SipRequest):
                        await received.put(item)
                        writer.write(response_for(item, 200, "OK").to_bytes())

        server = await asyncio.start_server(peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            request = make_request("MESSAGE", body=b"x" * 2000)
            txn = stack.layer.send_request(request, Destination("udp", "127.0.0.1", port))
            assert txn.destination.transport == "tcp"
            assert [r.status for r in await asyncio.wait_for(collect(txn), 3)] == [200]
            got = await received.get()
            assert isinstance(got, SipRequest) and got.body == b"x" * 2000
            assert got.top_via.transport == "TCP"
            assert got.top_via.port == stack.layer.sent_by("tcp")[1]
            # a second request to the same place reuses the connection
            txn2 = stack.layer.send_request(make_request("MESSAGE", body=b"y" * 2000),
                                            Destination("udp", "127.0.0.1", port))
            assert [r.status for r in await asyncio.wait_for(collect(txn2), 3)] == [200]
            assert len(writers) == 1
        finally:
            await stack.close()
            server.close()

    asyncio.run(main())


def test_transport_failure_yields_a_synthesized_503() -> None:
    async def main() -> None:
        stack = await loopback_stack(Recorder())
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        try:
            txn = stack.layer.send_request(make_request("OPTIONS"),
                                           Destination("tcp", "127.0.0.1", port))
            assert [r.status for r in await asyncio.wait_for(collect(txn), 3)] == [503]
            assert await drained(stack.layer)
        finally:
            await stack.close()

    asyncio.run(main())


def test_retransmitted_request_reaches_the_user_once_and_gets_the_same_answer() -> None:
    async def main() -> None:
        user = Recorder(answer=404)
        stack = await loopback_stack(user)
        peer = await udp_peer()
        try:
            port = stack.layer.sent_by("udp")[1]
            request = make_request("MESSAGE", via_port=peer.port)
            peer.send(request, ("127.0.0.1", port))
            first, _ = await peer.next()
            peer.send(request, ("127.0.0.1", port))
            second, _ = await peer.next()
            assert isinstance(first, SipResponse) and first.status == 404
            assert first.to_bytes() == second.to_bytes()
            assert len(user.requests) == 1
            # Timer J (64*T1 over UDP) then empties the table
            assert await drained(stack.layer)
        finally:
            await stack.close()
            assert peer.transport is not None
            peer.transport.close()

    asyncio.run(main())


def test_slow_invite_gets_100_trying_and_non_2xx_is_retransmitted_until_ack() -> None:
    async def main() -> None:
        user = Recorder(answer=486, delay=0.4)
        stack = await loopback_stack(user)
        peer = await udp_peer()
        try:
            port = stack.layer.sent_by("udp")[1]
            request = make_request("INVITE", via_port=peer.port)
            peer.send(request, ("127.0.0.1", port))
            trying, _ = await peer.next()
            assert isinstance(trying, SipResponse) and trying.status == 100
            busy, addr = await peer.next()
            assert isinstance(busy, SipResponse) and busy.status == 486
            again, _ = await peer.next()  # Timer G
            assert again.to_bytes() == busy.to_bytes()
            ack = make_request("ACK", via_port=peer.port, branch=request.top_via.branch)
            ack.headers.set("Call-ID", request.call_id)
            ack.headers.set("To", busy.single("To"))
            peer.send(ack, addr)
            assert await drained(stack.layer)  # Timer I (T4) ends it
            while not peer.got.empty():
                peer.got.get_nowait()
            await asyncio.sleep(0.1)
            assert peer.got.empty()  # no retransmission after the ACK
            assert user.acks == []  # the layer absorbed the ACK
        finally:
            await stack.close()
            assert peer.transport is not None
            peer.transport.close()

    asyncio.run(main())


def test_too_many_transactions_from_one_address_get_503_with_retry_after() -> None:
    async def main() -> None:
        user = Recorder(answer=200, delay=0.5)
        stack = await loopback_stack(user, per_address=3)
        peer = await udp_peer()
        try:
            port = stack.layer.sent_by("udp")[1]
            for _ in range(5):
                peer.send(make_request("MESSAGE", via_port=peer.port), ("127.0.0.1", port))
            statuses = []
            for _ in range(5):
                message, _ = await peer.next()
                assert isinstance(message, SipResponse)
                statuses.append(message.status)
                if message.status == 503:
                    assert message.headers.get("Retry-After") == "5"
            assert sorted(statuses) == [200, 200, 200, 503, 503]
            assert len(user.requests) == 3
        finally:
            await stack.close()
            assert peer.transport is not None
            peer.transport.close()

    asyncio.run(main())


def test_responses_with_a_via_not_ours_are_dropped_and_unmatched_ones_go_to_the_user() -> None:
    async def main() -> None:
        user = Recorder()
        stack = await loopback_stack(user)
        peer = await udp_peer()
        try:
            port = stack.layer.sent_by("udp")[1]
            foreign = response_for(make_request("INVITE", via_port=peer.port), 200, "OK")
            peer.send(foreign, ("127.0.0.1", port))
            ours = make_request("INVITE", via_port=port)
            peer.send(response_for(ours, 200, "OK"), ("127.0.0.1", port))
            for _ in range(100):
                if user.strays:
                    break
                await asyncio.sleep(0.01)
            assert [r.top_via.port for r in user.strays] == [port]
        finally:
            await stack.close()
            assert peer.transport is not None
            peer.transport.close()

    asyncio.run(main())


def test_cancel_finds_its_invite_and_the_tables_empty_when_all_ends() -> None:
    async def main() -> None:
        user = Recorder(answer=None)
        stack = await loopback_stack(user)
        peer = await udp_peer()
        try:
            port = stack.layer.sent_by("udp")[1]
            invite = make_request("INVITE", via_port=peer.port)
            peer.send(invite, ("127.0.0.1", port))
            for _ in range(100):
                if user.requests:
                    break
                await asyncio.sleep(0.01)
            cancel = make_request("CANCEL", via_port=peer.port, branch=invite.top_via.branch)
            cancel.headers.set("Call-ID", invite.call_id)
            found = stack.layer.invite_for(cancel)
            assert found is not None and found.request.call_id == invite.call_id
            other = make_request("CANCEL", via_port=peer.port)
            assert stack.layer.invite_for(other) is None
            # every timer is bounded, and terminating removes everything
            loop = asyncio.get_running_loop()
            for txn in stack.layer.server.values():
                assert all(h.when() - loop.time() <= INVITE_LIFETIME for h in txn._handles)
            await found.respond(response_for(invite, 487, "Request Terminated"))
            ack = make_request("ACK", via_port=peer.port, branch=invite.top_via.branch)
            peer.send(ack, ("127.0.0.1", port))
            assert await drained(stack.layer)
            assert stack.layer._per_address == {}
        finally:
            await stack.close()
            assert peer.transport is not None
            peer.transport.close()

    asyncio.run(main())


def test_a_stream_closed_before_the_final_response_yields_503_at_once() -> None:
    async def main() -> None:
        stack = await loopback_stack(Recorder(), t1=1.0, t2=4.0, t4=5.0)  # Timer F: 64 s

        async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.close()  # hangs up without an answer

        server = await asyncio.start_server(peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            txn = stack.layer.send_request(make_request("OPTIONS"),
                                           Destination("tcp", "127.0.0.1", port))
            start = time.monotonic()
            assert [r.status for r in await asyncio.wait_for(collect(txn), 5)] == [503]
            assert time.monotonic() - start < 3
            assert await drained(stack.layer)
        finally:
            await stack.close()
            server.close()

    asyncio.run(main())


def test_answered_transactions_waiting_out_timer_j_do_not_refuse_new_ones() -> None:
    """A burst of quickly answered requests twice the size of
    SIPMaxTransactions: all are answered 200 (answered UDP transactions wait
    out Timer J, here 640 ms, but are no work), and the table keeps at most
    the limit of them; a retransmission of a kept one is still absorbed."""
    async def main() -> None:
        user = Recorder(answer=200)
        stack = await loopback_stack(user, total=5)
        peer = await udp_peer()
        try:
            port = stack.layer.sent_by("udp")[1]
            statuses = []
            requests = [make_request("MESSAGE", via_port=peer.port) for _ in range(10)]
            for request in requests:
                peer.send(request, ("127.0.0.1", port))
                message, _ = await peer.next()
                assert isinstance(message, SipResponse)
                statuses.append(message.status)
            assert statuses == [200] * 10
            assert len(stack.layer.server) <= 5
            peer.send(requests[-1], ("127.0.0.1", port))  # absorbed: answered again
            message, _ = await peer.next()
            assert isinstance(message, SipResponse) and message.status == 200
            assert len(user.requests) == 10
        finally:
            await stack.close()
            assert peer.transport is not None
            peer.transport.close()

    asyncio.run(main())
