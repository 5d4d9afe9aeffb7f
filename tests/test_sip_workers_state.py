"""SIP state shared by several processes on one data directory (issue 15
point 3), in one test process: two store objects on one data directory
stand for two workers (each keeps its own caches, as a process would).

* a REGISTER handled by one is seen by the other's very next routing read,
  although that one kept the account's (empty) bindings a moment before;
* a nonce is accepted only by the book that issued it: another book calls
  it stale (the phone is challenged again with stale=true), never fresh, so
  its counts cannot be replayed there;
* a worker sharing the SIP port sends requests from its private client
  port and responses from the shared port; alone, both from the shared one.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from tests.support.sip_world import ALICE, request, sip_world

from waypost.protocols.sip.transport import Destination, Transports
from waypost.protocols.sip.wire import SipLimits
from waypost.services.container import open_services
from waypost.services.signals.nonces import NonceBook, NonceState
from waypost.services.signals.registrar import live_bindings, register, unregister

DESK = "sip:alice@192.0.2.7:5062"


def test_a_register_in_one_process_is_seen_at_once_by_another(tmp_path: Path) -> None:
    data = tmp_path / "var"
    with sip_world(data) as first:
        second = open_services(data)
        try:
            now = time.time()
            assert live_bindings(second, ALICE, now) == []
            # kept: the routing decision would be made from memory
            assert live_bindings(second, ALICE, now, block=False) == []
            assert register(first, request(DESK), now=now).status == 200
            # the kept (empty) bindings are no longer trusted: read again
            assert live_bindings(second, ALICE, now, block=False) is None
            assert [b.contact for b in live_bindings(second, ALICE, now) or []] == [DESK]
            assert live_bindings(second, ALICE, now, block=False) is not None
            assert unregister(first, ALICE, now=now) == 1
            assert live_bindings(second, ALICE, now) == []
        finally:
            second.close()


def test_a_nonce_is_fresh_only_where_it_was_issued() -> None:
    issuer, other = NonceBook(), NonceBook()
    nonce = issuer.issue("domain.dom")
    state, issued = issuer.check(nonce, "domain.dom", 300)
    assert state is NonceState.FRESH and issuer.use(nonce, 1, issued)
    assert other.check(nonce, "domain.dom", 300) == (NonceState.STALE, 0.0)
    assert not issuer.use(nonce, 1, issued)  # never reused where it counts
    assert issuer.check(nonce, "other.dom", 300)[0] is NonceState.FORGED


def _sources(reuse_port: bool) -> tuple[int, int | None, int, int]:
    """The listening port, the client port, and the source ports a request
    and a response sent through a Transports arrive from."""

    async def run() -> tuple[int, int | None, int, int]:
        transports = Transports(SipLimits(), lambda message, source: None)
        await transports.start_udp("127.0.0.1", 0, reuse_port=reuse_port)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
                peer.bind(("127.0.0.1", 0))
                peer.settimeout(5)
                to = Destination("udp", "127.0.0.1", peer.getsockname()[1])
                transports.send_now(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n\r\n", to)
                transports.send_now(b"SIP/2.0 200 OK\r\n\r\n", to)
                seen = {}
                for _ in range(2):
                    data, (_, port) = await asyncio.get_running_loop().run_in_executor(
                        None, peer.recvfrom, 1024)
                    seen[data[:3]] = port
            return (transports.local["udp"][1], transports.client_port, seen[b"OPT"],
                    seen[b"SIP"])
        finally:
            await transports.close()

    return asyncio.run(run())


def test_a_worker_sends_requests_from_its_client_port_and_responses_from_the_shared_one(
        ) -> None:
    shared, client, request, response = _sources(reuse_port=True)
    assert client is not None and client != shared
    assert (request, response) == (client, shared)
    # alone: no client port, everything from the listening port, as before
    shared, client, request, response = _sources(reuse_port=False)
    assert client is None and request == response == shared
