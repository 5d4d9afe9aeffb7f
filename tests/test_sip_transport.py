"""SIP transports (RFC 3261 §18, RFC 3581): ``received`` and ``rport`` on
what comes in, where responses go, streams (same connection, keep-alives,
idle timeout, per-address limits), over loopback sockets."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from pathlib import Path

from tests.support.server import free_offset
from tests.support.sip_ua import Recorder, SipUA, loopback_stack
from tests.support.sip_world import sip_world

from waypost import settings as settings_mod
from waypost.protocols.sip.headers import Headers
from waypost.protocols.sip.listener import start_sip_stack, via_host
from waypost.protocols.sip.transport import Destination, response_destination, stamp_via
from waypost.protocols.sip.uri import parse_uri
from waypost.protocols.sip.wire import SipRequest, SipResponse, parse_message, response_for
from waypost.services.container import Services


def request_with_via(via: str) -> SipRequest:
    headers = Headers()
    headers.add("Via", via)
    headers.add("Via", "SIP/2.0/UDP 192.0.2.99;branch=z9hG4bKlower")
    for name, value in (("Max-Forwards", "70"), ("From", "<sip:a@b>;tag=1"),
                        ("To", "<sip:c@d>"), ("Call-ID", "x@y"), ("CSeq", "1 OPTIONS")):
        headers.add(name, value)
    return SipRequest("OPTIONS", parse_uri("sip:d"), headers)


def test_received_is_added_when_the_source_differs_from_sent_by() -> None:
    request = request_with_via("SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK1")
    stamp_via(request, Destination("udp", "198.51.100.7", 40000))
    via = request.top_via
    assert (via.received, via.rport, via.port) == ("198.51.100.7", None, 5062)
    assert len(request.vias) == 2 and request.vias[1].host == "192.0.2.99"
    assert response_destination(request, Destination("udp", "198.51.100.7", 40000)) == (
        Destination("udp", "198.51.100.7", 5062))


def test_an_empty_rport_is_filled_and_responses_go_to_the_source_port() -> None:
    request = request_with_via("SIP/2.0/UDP 10.0.0.5:5062;rport;branch=z9hG4bK1")
    stamp_via(request, Destination("udp", "198.51.100.7", 40000))
    via = request.top_via
    assert (via.received, via.rport) == ("198.51.100.7", 40000)
    assert response_destination(request, Destination("udp", "198.51.100.7", 40000)) == (
        Destination("udp", "198.51.100.7", 40000))


def test_nothing_is_added_when_sent_by_is_the_source() -> None:
    request = request_with_via("SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1")
    before = request.to_bytes()
    stamp_via(request, Destination("udp", "198.51.100.7", 5060))
    assert request.to_bytes() == before
    assert response_destination(request, Destination("udp", "198.51.100.7", 5060)) == (
        Destination("udp", "198.51.100.7", 5060))


def test_a_host_name_in_sent_by_gets_received() -> None:
    request = request_with_via("SIP/2.0/UDP phone.example.com;branch=z9hG4bK1")
    stamp_via(request, Destination("udp", "198.51.100.7", 5060))
    assert request.top_via.received == "198.51.100.7"


def test_stream_responses_go_back_on_the_same_connection() -> None:
    conn = object()
    request = request_with_via("SIP/2.0/TCP 10.0.0.5:5062;branch=z9hG4bK1")
    source = Destination("tcp", "198.51.100.7", 40001, conn)
    assert response_destination(request, source) is source


def test_via_host_is_the_listen_address_or_the_main_domain() -> None:
    assert via_host("", "127.0.0.1", "main.dom") == "127.0.0.1"
    assert via_host("", "0.0.0.0", "main.dom") == "main.dom"
    assert via_host("sip.main.dom", "0.0.0.0", "main.dom") == "sip.main.dom"
    assert via_host("", "::1", "main.dom") == "[::1]"


def test_udp_request_with_rport_is_answered_at_its_source_port_with_both_stamped() -> None:
    async def main() -> None:
        stack = await loopback_stack(Recorder(answer=200))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            port = stack.layer.sent_by("udp")[1]
            # sent-by names a port nobody listens on; rport asks for the source port
            request = request_with_via("SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKr1")
            await loop.sock_sendto(sock, request.to_bytes(), ("127.0.0.1", port))
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 3)
            answer = parse_message(data)
            assert isinstance(answer, SipResponse) and answer.status == 200
            via = answer.top_via
            assert (via.received, via.rport) == ("127.0.0.1", sock.getsockname()[1])
        finally:
            sock.close()
            await stack.close()

    asyncio.run(main())


def test_tcp_keepalive_ping_gets_a_pong_and_an_idle_connection_is_closed() -> None:
    async def main() -> None:
        stack = await loopback_stack(Recorder(answer=200), idle=0.3)
        try:
            port = stack.layer.sent_by("tcp")[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\r\n\r\n")
            assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
            request = request_with_via("SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKt1")
            writer.write(request.to_bytes())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            assert head.startswith(b"SIP/2.0 200 ")
            assert await asyncio.wait_for(reader.read(), 3) == b""  # closed when idle
            writer.close()
        finally:
            await stack.close()

    asyncio.run(main())


@dataclass
class Context:
    """A ``ListenContext`` for starting the real SIP listeners in the test's loop."""

    services: Services
    offset: int
    listen: str = "127.0.0.1"
    tls: None = None
    worker: int = 0
    workers: int = 1

    def port(self, setting: str) -> int:
        return int(settings_mod.lookup(setting).default) + self.offset


def test_tcp_connections_beyond_the_per_address_limit_are_closed(tmp_path: Path) -> None:
    with sip_world(tmp_path / "data") as svc:
        svc.set_setting("MaxConnectionsPerAddress", "2")
        svc.set_setting("MaxConnectionsPerTrustedAddress", "2")  # loopback is trusted
        context = Context(svc, free_offset())

        async def main() -> None:
            stack, listeners = await start_sip_stack(context)
            port = context.port("SIPPort")
            try:
                assert [x.name for x in listeners] == ["SIP/UDP", "SIP/TCP"]
                held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
                await asyncio.sleep(0.1)
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert await asyncio.wait_for(reader.read(), 3) == b""
                writer.close()
                # the admitted ones still work
                r, w = held[0]
                w.write(request_with_via("SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKc1")
                        .to_bytes().replace(b"OPTIONS sip:d", b"OPTIONS sip:domain.dom"))
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 3)
                assert head.startswith(b"SIP/2.0 200 ")
                for _, w in held:
                    w.close()
            finally:
                for listener in listeners:
                    await listener.close()
            assert stack.layer.pending == 0

        asyncio.run(main())


def test_the_test_user_agent_speaks_to_the_in_process_stack() -> None:
    """The UA of tests/support (blocking sockets) against the stack in a thread."""
    async def main() -> None:
        stack = await loopback_stack(Recorder(answer=202))
        try:
            port = stack.layer.sent_by("udp")[1]

            def talk() -> int:
                with SipUA(port, rport=True) as phone:
                    return phone.ask(phone.request("MESSAGE", "sip:bob@domain.dom")).status

            assert await asyncio.to_thread(talk) == 202
        finally:
            await stack.close()

    asyncio.run(main())


def test_a_proxy_factory_given_to_start_sip_gets_what_the_core_does_not_answer(
        tmp_path: Path) -> None:
    """INVITE, a 2xx's ACK and a matching CANCEL reach the plugged-in proxy;
    OPTIONS to the server and an unmatched CANCEL are the core's."""
    seen: list[tuple[str, bool]] = []

    class Proxy:
        def __init__(self, services: Services, layer: object) -> None:
            self.layer = layer

        async def handle(self, request, transaction, source) -> None:  # type: ignore[no-untyped-def]
            seen.append((request.method, transaction is not None))
            if request.method == "CANCEL" and transaction is not None:
                await transaction.respond(response_for(request, 200, "OK"))

        async def on_stray_response(self, response, source) -> None:  # type: ignore[no-untyped-def]
            return None

    with sip_world(tmp_path / "data") as svc:
        context = Context(svc, free_offset())

        async def main() -> None:
            stack, listeners = await start_sip_stack(context, Proxy)
            port = context.port("SIPPort")

            def talk() -> list[int]:
                with SipUA(port) as phone:
                    invite = phone.request("INVITE", "sip:bob@domain.dom")
                    phone.send(invite)
                    trying = phone.response(3)  # 100 Trying after 200 ms: nobody answered
                    cancel = phone.request("CANCEL", "sip:bob@domain.dom",
                                           branch=invite.top_via.branch,
                                           cseq=invite.cseq.number)
                    stray_cancel = phone.request("CANCEL", "sip:bob@domain.dom")
                    options = phone.request("OPTIONS", "sip:domain.dom")
                    ack = phone.request("ACK", "sip:bob@domain.dom", cseq=invite.cseq.number)
                    phone.send(ack)
                    return [trying.status, phone.ask(cancel).status,
                            phone.ask(stray_cancel).status, phone.ask(options).status]

            try:
                assert await asyncio.to_thread(talk) == [100, 200, 481, 200]
                for _ in range(100):
                    if len(seen) >= 3:
                        break
                    await asyncio.sleep(0.01)
                assert sorted(seen) == [("ACK", False), ("CANCEL", True), ("INVITE", True)]
            finally:
                for listener in listeners:
                    await listener.close()
            assert stack.layer.pending == 0

        asyncio.run(main())
