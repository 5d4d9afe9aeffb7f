"""A small SIP user agent for the tests: UDP, TCP or TLS from a loopback
address, blocking sockets with timeouts. It builds REGISTER, OPTIONS and
INVITE requests and answers digest challenges (MD5 and SHA-256) with
``services/signals/digest.response_for``."""

from __future__ import annotations

import itertools
import re
import secrets
import socket
import ssl
import time

from waypost.protocols.sip.headers import Headers
from waypost.protocols.sip.uri import parse_uri
from waypost.protocols.sip.wire import (
    SipLimits,
    SipMessage,
    SipRequest,
    SipResponse,
    StreamFramer,
    new_branch,
    new_tag,
    parse_message,
)
from waypost.services.signals.digest import response_for

BIG = SipLimits(max_header_bytes=1 << 20, max_headers=10_000, max_body_bytes=1 << 22)


def challenge_params(value: str) -> dict[str, str]:
    """The auth-params of a ``WWW-Authenticate`` value (test-grade parser)."""
    return {k.lower(): v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', value)}


class SipUA:
    def __init__(self, port: int, *, transport: str = "udp", host: str = "127.0.0.1",
                 local: str = "127.0.0.1", timeout: float = 5.0,
                 rport: bool = False) -> None:
        self.server = (host, port)
        self.transport = transport
        self.timeout = timeout
        self.rport = rport
        self.framer = StreamFramer(BIG)
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((local, 0))
        else:
            raw = socket.create_connection(self.server, timeout=timeout,
                                           source_address=(local, 0))
            if transport == "tls":
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                raw = context.wrap_socket(raw)
            self.sock = raw
        self.sock.settimeout(timeout)
        self.local = self.sock.getsockname()[:2]
        self.cseq = itertools.count(1)
        self.call_id = f"{secrets.token_hex(8)}@test"
        self.tag = new_tag()
        self.nc = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SipUA:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- building ------------------------------------------------------------

    def via(self, branch: str | None = None) -> str:
        proto = self.transport.upper()
        rport = ";rport" if self.rport else ""
        return f"SIP/2.0/{proto} {self.local[0]}:{self.local[1]};branch={branch or new_branch()}{rport}"

    def request(self, method: str, uri: str, *, to: str | None = None,
                from_: str | None = None, cseq: int | None = None,
                call_id: str | None = None, branch: str | None = None,
                extra: tuple[tuple[str, str], ...] = (), body: bytes = b"",
                max_forwards: int = 70) -> SipRequest:
        to = to or uri
        from_ = from_ or to
        headers = Headers()
        headers.add("Via", self.via(branch))
        headers.add("Max-Forwards", str(max_forwards))
        headers.add("From", f"<{from_}>;tag={self.tag}")
        headers.add("To", f"<{to}>")
        headers.add("Call-ID", call_id or self.call_id)
        headers.add("CSeq", f"{cseq if cseq is not None else next(self.cseq)} {method}")
        for name, value in extra:
            headers.add(name, value)
        return SipRequest(method, parse_uri(uri), headers, body)

    def contact(self, user: str = "phone") -> str:
        transport = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"<sip:{user}@{self.local[0]}:{self.local[1]}{transport}>"

    # -- the wire ------------------------------------------------------------

    def send(self, message: SipMessage | bytes) -> None:
        data = message if isinstance(message, bytes) else message.to_bytes()
        if self.transport == "udp":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def receive(self, timeout: float | None = None) -> SipMessage:
        """The next message; TimeoutError when none comes in ``timeout``."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no SIP message")
            self.sock.settimeout(left)
            if self.transport == "udp":
                try:
                    data, _ = self.sock.recvfrom(70_000)
                except TimeoutError:
                    raise TimeoutError("no SIP message") from None
                return parse_message(data, limits=BIG)
            item = self.framer.next()
            if isinstance(item, SipMessage):
                return item
            if item is not None:
                continue
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no SIP message") from None
            if not data:
                raise ConnectionError("server closed the connection")
            self.framer.feed(data)

    def response(self, timeout: float | None = None) -> SipResponse:
        while True:
            message = self.receive(timeout)
            if isinstance(message, SipResponse):
                return message

    def final(self, timeout: float | None = None) -> SipResponse:
        """The next final response (provisional ones skipped)."""
        while True:
            response = self.response(timeout)
            if response.status >= 200:
                return response

    def ask(self, request: SipRequest, timeout: float | None = None) -> SipResponse:
        self.send(request)
        return self.final(timeout)

    # -- digest --------------------------------------------------------------

    def authorization(self, challenge: SipResponse, request: SipRequest, username: str,
                      password: str, *, algorithm: str = "SHA-256",
                      nc: int | None = None, header: str = "WWW-Authenticate") -> str:
        """Credentials for ``request`` answering ``challenge``'s ``header``
        (``Proxy-Authenticate`` for a 407) with ``algorithm``."""
        offers = [challenge_params(v) for v in challenge.headers.fields(header)]
        offer = next(o for o in offers if o.get("algorithm", "MD5").upper() == algorithm)
        count = f"{nc if nc is not None else next(self.nc):08x}"
        cnonce = secrets.token_hex(8)
        uri = str(request.uri)
        answer = response_for(algorithm, username, offer["realm"], password, request.method,
                              uri, offer["nonce"], count, cnonce)
        return (f'Digest username="{username}", realm="{offer["realm"]}", '
                f'nonce="{offer["nonce"]}", uri="{uri}", response="{answer}", '
                f'algorithm={algorithm}, qop=auth, nc={count}, cnonce="{cnonce}"')

    def register(self, aor: str, password: str, *, username: str | None = None,
                 contact: str | None = None, expires: int | None = 600,
                 algorithm: str = "SHA-256",
                 extra: tuple[tuple[str, str], ...] = ()) -> SipResponse:
        """REGISTER ``aor`` (``user@domain``), answering one 401; ``contact``
        ``""`` sends none (a query, RFC 3261 §10.2.3)."""
        user, _, domain = aor.partition("@")
        contact = self.contact(user) if contact is None else contact
        headers = [*((("Contact", contact),) if contact else ()), *extra]
        if expires is not None:
            headers.append(("Expires", str(expires)))
        first = self.request("REGISTER", f"sip:{domain}", to=f"sip:{aor}",
                             extra=tuple(headers))
        answer = self.ask(first)
        if answer.status != 401:
            return answer
        self.nc = itertools.count(1)
        second = self.request("REGISTER", f"sip:{domain}", to=f"sip:{aor}", extra=(
            *headers, ("Authorization", self.authorization(
                answer, first, username or user, password, algorithm=algorithm))))
        return self.ask(second)


# -- an in-process stack on loopback (transaction-layer tests) -----------------


class Recorder:
    """A transaction user that records what it is given and answers with
    ``answer`` (a status, None for no answer) after ``delay`` seconds."""

    def __init__(self, answer: int | None = 200, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.requests: list[SipRequest] = []
        self.acks: list[SipRequest] = []
        self.strays: list[SipResponse] = []

    async def on_request(self, request, transaction, source) -> None:  # type: ignore[no-untyped-def]
        import asyncio

        from waypost.protocols.sip.wire import response_for

        if transaction is None:
            self.acks.append(request)
            return
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.answer is not None:
            await transaction.respond(response_for(request, self.answer, "Test"))

    async def on_stray_response(self, response, source) -> None:  # type: ignore[no-untyped-def]
        self.strays.append(response)


async def loopback_stack(user: object, *, t1: float = 0.01, t2: float = 0.04, t4: float = 0.05,
                         total: int = 10_000, per_address: int = 500,
                         idle: float = 30.0):  # type: ignore[no-untyped-def]
    """Transports (UDP and TCP on one free port of 127.0.0.1) and a layer
    with small timers; close with ``await stack.close()``."""
    import asyncio

    from waypost.protocols.sip.listener import SipServer
    from waypost.protocols.sip.transaction import Timers, TransactionLayer, TransactionLimits
    from waypost.protocols.sip.transport import Transports

    box: list[TransactionLayer] = []
    transports = Transports(SipLimits(), lambda m, s: box[0].receive(m, s), idle_timeout=idle)
    for _ in range(50):
        await transports.start_udp("127.0.0.1", 0)
        port = transports.local["udp"][1]
        try:
            tcp = await asyncio.start_server(
                lambda r, w: transports.serve_stream("tcp", r, w), "127.0.0.1", port)
            break
        except OSError:
            assert transports.udp is not None
            transports.udp.close()
    else:  # pragma: no cover
        raise RuntimeError("no free port")
    layer = TransactionLayer(transports, host="127.0.0.1", ports={"udp": port, "tcp": port},
                             timers=Timers(t1, t2, t4),
                             limits=TransactionLimits(total, per_address),
                             user=user)  # type: ignore[arg-type]
    box.append(layer)

    class Stack(SipServer):
        async def close(self) -> None:
            tcp.close()
            await super().close()

    return Stack(transports, layer, None)  # type: ignore[arg-type]
