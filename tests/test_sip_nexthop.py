"""The next hop of a SIP request (RFC 3263 §4, sip.md §3) against the loopback
test DNS server named by the ``DNSServers`` setting: SRV before A/AAAA, an
explicit port that skips SRV, RFC 2782 priorities and weights, IP literals,
transports, and the statuses of DNS failures (404, 503 in bounded time)."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.dns_server import TestDNSServer
from tests.support.sip_world import sip_world

from waypost.services.container import Services
from waypost.services.delivery.dns import Resolver, srv_order
from waypost.services.signals.nexthop import Hop, NextHopError, resolve

ZONE: dict[str, dict[str, Any]] = {
    "_sip._udp.friend.com": {"SRV": [(10, 0, 5070, "sip1.friend.com")]},
    "friend.com": {"A": ["127.0.0.9"]},
    "sip1.friend.com": {"A": ["127.0.0.2"]},
    "sip.friend.com": {"A": ["127.0.0.3"]},
    "_sip._tcp.tcponly.com": {"SRV": [(5, 0, 5080, "pbx.tcponly.com")]},
    "tcponly.com": {"A": ["127.0.0.9"]},
    "pbx.tcponly.com": {"A": ["127.0.0.4"]},
    "_sip._udp.both.com": {"SRV": [(10, 0, 5060, "u.both.com")]},
    "_sip._tcp.both.com": {"SRV": [(10, 0, 5061, "t.both.com")]},
    "u.both.com": {"A": ["127.0.0.5"]},
    "t.both.com": {"A": ["127.0.0.6"]},
    "plain.com": {"A": ["127.0.0.7"]},
    "_sip._udp.prio.com": {"SRV": [(20, 0, 5062, "low.prio.com"), (10, 0, 5061, "high.prio.com")]},
    "low.prio.com": {"A": ["127.0.1.2"]},
    "high.prio.com": {"A": ["127.0.1.1"]},
    "_sip._udp.weights.com": {"SRV": [(10, 90, 5060, "heavy.weights.com"),
                                      (10, 10, 5060, "light.weights.com")]},
    "heavy.weights.com": {"A": ["127.0.2.1"]},
    "light.weights.com": {"A": ["127.0.2.2"]},
    "_sip._udp.ghost.com": {"SRV": [(10, 0, 5060, "nowhere.ghost.com"),
                                    (20, 0, 5090, "there.ghost.com")]},
    "there.ghost.com": {"A": ["127.0.3.1"]},
    "_sips._tcp.secure.com": {"SRV": [(10, 0, 5091, "tls.secure.com")]},
    "_sip._udp.secure.com": {"SRV": [(10, 0, 5060, "udp.secure.com")]},
    "tls.secure.com": {"A": ["127.0.4.1"]},
    "udp.secure.com": {"A": ["127.0.4.2"]},
    "tlsplain.com": {"A": ["127.0.4.3"]},
    "v6.com": {"AAAA": ["::1"]},
    "dual.com": {"A": ["127.0.5.1"], "AAAA": ["::1"]},
    "_sip._udp.noservice.com": {"SRV": [(0, 0, 0, ".")]},
    "noservice.com": {"A": ["127.0.6.1"]},
    "broken.com": {"RCODE": "SERVFAIL"},
    "_sip._udp.broken-srv.com": {"RCODE": "SERVFAIL"},
    "broken-srv.com": {"A": ["127.0.6.2"]},
    "slow.com": {"DROP": True},
    "_sip._udp.slow.com": {"DROP": True},
    "_sip._tcp.slow.com": {"DROP": True},
    "noaddr.com": {"TXT": ["nothing"]},
}


@pytest.fixture
def dns() -> Iterator[TestDNSServer]:
    with TestDNSServer(ZONE) as server:
        yield server


@pytest.fixture
def svc(tmp_path: Path, dns: TestDNSServer) -> Iterator[Services]:
    with sip_world(tmp_path / "var") as services:
        services.set_setting("DNSServers", dns.address)
        services.set_setting("SIPDNSTimeout", "2")
        yield services


def hops(svc: Services, host: str, port: int | None = None, transport: str | None = None,
         secure: bool = False) -> list[Hop]:
    async def run() -> list[Hop]:
        async with asyncio.timeout(20):
            return await resolve(svc, host, port, transport, secure=secure)
    return asyncio.run(run())


def refusal(svc: Services, host: str, port: int | None = None,
            transport: str | None = None) -> tuple[int, str]:
    with pytest.raises(NextHopError) as caught:
        hops(svc, host, port, transport)
    return caught.value.status, caught.value.reason


def srv_asked(dns: TestDNSServer) -> list[str]:
    return [name for name, rtype in dns.queries if rtype == "SRV"]


def test_srv_records_give_the_target_and_port(svc: Services) -> None:
    assert hops(svc, "friend.com") == [Hop("udp", "127.0.0.2", 5070, "sip1.friend.com")]


def test_srv_over_tcp_only_picks_tcp(svc: Services) -> None:
    assert hops(svc, "tcponly.com") == [Hop("tcp", "127.0.0.4", 5080, "pbx.tcponly.com")]


def test_udp_srv_targets_come_before_tcp_ones(svc: Services) -> None:
    assert hops(svc, "both.com") == [Hop("udp", "127.0.0.5", 5060, "u.both.com"),
                                     Hop("tcp", "127.0.0.6", 5061, "t.both.com")]


def test_the_uri_transport_asks_only_that_srv_service(svc: Services, dns: TestDNSServer) -> None:
    assert hops(svc, "both.com", transport="TCP") == [Hop("tcp", "127.0.0.6", 5061, "t.both.com")]
    assert srv_asked(dns) == ["_sip._tcp.both.com"]


def test_without_srv_the_a_record_on_the_default_port(svc: Services) -> None:
    assert hops(svc, "plain.com") == [Hop("udp", "127.0.0.7", 5060, "plain.com")]
    svc.set_setting("SIPDefaultRemotePort", "5099")
    assert hops(svc, "plain.com") == [Hop("udp", "127.0.0.7", 5099, "plain.com")]


def test_an_explicit_port_skips_srv_even_when_there_is_a_record(
        svc: Services, dns: TestDNSServer) -> None:
    assert hops(svc, "friend.com", 5060) == [Hop("udp", "127.0.0.9", 5060, "friend.com")]
    assert srv_asked(dns) == []
    assert hops(svc, "friend.com", 5075, "tcp") == [Hop("tcp", "127.0.0.9", 5075, "friend.com")]


def test_srv_priorities_lowest_first(svc: Services) -> None:
    assert hops(svc, "prio.com") == [Hop("udp", "127.0.1.1", 5061, "high.prio.com"),
                                     Hop("udp", "127.0.1.2", 5062, "low.prio.com")]


def test_srv_weights_share_the_first_place_in_proportion(svc: Services) -> None:
    firsts = [hops(svc, "weights.com")[0].host for _ in range(150)]
    heavy = firsts.count("heavy.weights.com")
    assert 100 <= heavy < 150  # expected 135; both appear, the heavy one far more often
    assert set(firsts) == {"heavy.weights.com", "light.weights.com"}


def test_srv_order_follows_rfc_2782_with_a_given_draw() -> None:
    class Draw(random.Random):
        def __init__(self, values: list[int]) -> None:
            super().__init__(0)
            self.values = values

        def randint(self, a: int, b: int) -> int:
            assert a == 0
            value = self.values.pop(0)
            assert value <= b
            return value

    records = [(1, 30, 1, "b"), (1, 0, 1, "zero"), (0, 5, 1, "first"), (1, 70, 1, "c")]
    # priority 0 alone; then running sums zero=0, b=30, c=100: a draw of 0 picks
    # the weight-0 record, 31 picks c, then b is left
    assert [r[3] for r in srv_order(records, Draw([0, 0, 31, 0]))] == ["first", "zero", "c", "b"]
    assert [r[3] for r in srv_order(records, Draw([5, 20, 0, 0]))] == ["first", "b", "zero", "c"]


def test_an_srv_target_without_address_is_skipped(svc: Services) -> None:
    assert hops(svc, "ghost.com") == [Hop("udp", "127.0.3.1", 5090, "there.ghost.com")]


def test_sips_uses_tls_srv_and_the_tls_default_port(svc: Services) -> None:
    assert hops(svc, "secure.com", secure=True) == [Hop("tls", "127.0.4.1", 5091,
                                                        "tls.secure.com")]
    assert hops(svc, "secure.com", transport="udp", secure=True)[0].transport == "tls"
    assert hops(svc, "tlsplain.com", secure=True) == [Hop("tls", "127.0.4.3", 5061,
                                                          "tlsplain.com")]
    assert hops(svc, "secure.com", transport="tls") == [Hop("tls", "127.0.4.1", 5091,
                                                            "tls.secure.com")]


def test_ip_literals_are_used_as_they_are(svc: Services, dns: TestDNSServer) -> None:
    assert hops(svc, "127.0.0.5") == [Hop("udp", "127.0.0.5", 5060, "127.0.0.5")]
    assert hops(svc, "[::1]", 5080, "tcp") == [Hop("tcp", "::1", 5080, "::1")]
    assert hops(svc, "::1", secure=True) == [Hop("tls", "::1", 5061, "::1")]
    assert dns.queries == []


def test_aaaa_records_are_used_after_a(svc: Services) -> None:
    assert hops(svc, "v6.com") == [Hop("udp", "::1", 5060, "v6.com")]
    assert hops(svc, "dual.com", 5060) == [Hop("udp", "127.0.5.1", 5060, "dual.com"),
                                           Hop("udp", "::1", 5060, "dual.com")]


def test_nxdomain_is_404(svc: Services) -> None:
    assert refusal(svc, "nosuch.example") == (404, "Not Found")
    assert refusal(svc, "nosuch.example", 5060) == (404, "Not Found")


def test_a_name_without_address_or_srv_is_404(svc: Services) -> None:
    assert refusal(svc, "noaddr.com") == (404, "Not Found")


def test_srv_target_dot_means_no_sip_service_and_no_a_fallback(svc: Services) -> None:
    assert refusal(svc, "noservice.com") == (404, "Not Found")


def test_a_dns_server_failure_is_503(svc: Services) -> None:
    assert refusal(svc, "broken.com") == (503, "Service Unavailable")
    assert refusal(svc, "broken-srv.com") == (503, "Service Unavailable")


def test_an_unanswered_query_is_503_within_the_dns_timeout(svc: Services) -> None:
    started = time.monotonic()
    assert refusal(svc, "slow.com") == (503, "Service Unavailable")
    assert time.monotonic() - started < 5  # SIPDNSTimeout is 2


def test_a_dns_server_that_never_answers_is_503_within_the_dns_timeout(
        svc: Services) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        svc.set_setting("DNSServers", f"127.0.0.1:{silent.getsockname()[1]}")
        svc.set_setting("SIPDNSTimeout", "1")
        started = time.monotonic()
        assert refusal(svc, "friend.com") == (503, "Service Unavailable")
        assert refusal(svc, "friend.com", 5060) == (503, "Service Unavailable")
        assert time.monotonic() - started < 5


def test_an_unsupported_transport_is_503(svc: Services) -> None:
    assert refusal(svc, "plain.com", transport="sctp") == (503, "Service Unavailable")


def test_resolver_srv_records_keep_dot_and_are_empty_for_a_missing_name(
        dns: TestDNSServer) -> None:
    async def run() -> tuple[list[tuple[int, int, int, str]], ...]:
        resolver = Resolver([dns.address], timeout=2)
        return (await resolver.srv_records("_sip._udp.noservice.com"),
                await resolver.srv_records("_sip._udp.nosuch.example"),
                await resolver.srv_records("_sip._udp.prio.com"))
    dot, missing, prio = asyncio.run(run())
    assert dot == [(0, 0, 0, ".")]
    assert missing == []
    assert prio == [(10, 0, 5061, "high.prio.com"), (20, 0, 5062, "low.prio.com")]
