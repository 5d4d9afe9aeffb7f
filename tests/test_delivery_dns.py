"""smtp.md §2.1 target resolution against a loopback DNS server."""

from __future__ import annotations

import asyncio

import pytest
from dnslib import QTYPE
from tests.support.dns_server import TestDNSServer, query

from waypost.services.delivery.dns import (
    PermanentDNSError,
    Resolver,
    Target,
    TemporaryDNSError,
    parse_queue,
)

ZONE = {
    "otherserver.dom": {"MX": [(20, "mx2.otherserver.dom"), (10, "mx1.otherserver.dom")]},
    "mx1.otherserver.dom": {"A": ["127.0.0.2"], "AAAA": ["::2"]},
    "mx2.otherserver.dom": {"A": ["127.0.0.3", "127.0.0.33"]},
    "equal.dom": {
        "MX": [(10, "a.equal.dom"), (10, "b.equal.dom"), (10, "c.equal.dom"), (5, "top.equal.dom")]
    },
    "a.equal.dom": {"A": ["127.0.1.1"]},
    "b.equal.dom": {"A": ["127.0.1.2"]},
    "c.equal.dom": {"A": ["127.0.1.3"]},
    "top.equal.dom": {"A": ["127.0.1.9"]},
    "implicit.dom": {"A": ["127.0.0.4"], "TXT": ["v=spf1 -all"]},
    "relay.dom": {"MX": [(10, "mx1.otherserver.dom")], "A": ["127.0.0.5"]},
    "nullmx.dom": {"MX": [(0, ".")], "A": ["127.0.0.6"]},
    "broken.dom": {"RCODE": "SERVFAIL"},
    "refused.dom": {"RCODE": "REFUSED"},
    "slow.dom": {"DROP": True},
    "noaddr.dom": {"TXT": ["nothing to see"]},
    "ghostmx.dom": {"MX": [(10, "ghost.dom")]},
    "tempmx.dom": {"MX": [(10, "broken.dom")]},
    "mixed.dom": {"MX": [(10, "ghost.dom"), (20, "mx2.otherserver.dom")]},
    "mixedtemp.dom": {"MX": [(10, "broken.dom"), (20, "mx2.otherserver.dom")]},
    "us.dom": {"A": ["127.0.0.9"]},
    "loop.dom": {"MX": [(10, "us.dom"), (20, "mx2.otherserver.dom")]},
    "backup.dom": {
        "MX": [
            (10, "mx2.otherserver.dom"),
            (20, "us.dom"),
            (20, "b.equal.dom"),
            (30, "a.equal.dom"),
        ]
    },
    "alias.dom": {"CNAME": "mx2.otherserver.dom"},
    "cname.dom": {"MX": [(10, "alias.dom")]},
}


@pytest.fixture
def dns(dns_server):
    dns_server.load(ZONE)
    return dns_server


def resolve(dns: TestDNSServer, queue: str, **kw) -> list[Target]:
    resolver = Resolver([dns.address], timeout=2, cache=False)
    return asyncio.run(resolver.resolve_targets(queue, **kw))


def failure(dns: TestDNSServer, queue: str, **kw) -> Exception:
    with pytest.raises((PermanentDNSError, TemporaryDNSError)) as info:
        resolve(dns, queue, **kw)
    return info.value


def test_server_answers_udp_and_tcp(dns):
    for tcp in (False, True):
        reply = query(dns.address, "mx1.otherserver.dom", "A", tcp=tcp)
        assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.2"]
        assert QTYPE[reply.q.qtype] == "A"
    assert query(dns.address, "nowhere.dom").header.rcode == 3  # NXDOMAIN


def test_mx_lowest_preference_first_with_a_then_aaaa(dns):
    targets = resolve(dns, "otherserver.dom")
    assert targets == [
        Target("mx1.otherserver.dom", "127.0.0.2", 25, 10),
        Target("mx1.otherserver.dom", "::2", 25, 10),
        Target("mx2.otherserver.dom", "127.0.0.3", 25, 20),
        Target("mx2.otherserver.dom", "127.0.0.33", 25, 20),
    ]
    assert resolve(dns, "OtherServer.Dom.", default_port=10025)[0].port == 10025


def test_ipv6_can_be_left_out(dns):
    resolver = Resolver([dns.address], timeout=2, cache=False, ipv6=False)
    targets = asyncio.run(resolver.resolve_targets("otherserver.dom"))
    assert [t.ip for t in targets] == ["127.0.0.2", "127.0.0.3", "127.0.0.33"]


def test_equal_preferences_are_shuffled(dns):
    resolver = Resolver([dns.address], timeout=2, cache=False)

    async def many() -> set[tuple[str, ...]]:
        orders = set()
        for _ in range(25):
            targets = await resolver.resolve_targets("equal.dom")
            assert targets[0].host == "top.equal.dom"
            assert [t.preference for t in targets] == [5, 10, 10, 10]
            orders.add(tuple(t.host for t in targets[1:]))
        return orders

    orders = asyncio.run(many())
    assert len(orders) > 1
    assert all(sorted(o) == ["a.equal.dom", "b.equal.dom", "c.equal.dom"] for o in orders)


def test_implicit_mx(dns):
    assert resolve(dns, "implicit.dom") == [Target("implicit.dom", "127.0.0.4", 25, 0)]


def test_explicit_port_skips_mx(dns):
    assert resolve(dns, "relay.dom:25") == [Target("relay.dom", "127.0.0.5", 25, 0)]
    assert resolve(dns, "relay.dom:2525") == [Target("relay.dom", "127.0.0.5", 2525, 0)]
    assert ("relay.dom", "MX") not in dns.queries
    # without a port the same name goes through its MX
    assert resolve(dns, "relay.dom")[0].host == "mx1.otherserver.dom"
    assert ("relay.dom", "MX") in dns.queries


def test_explicit_port_host_without_address_is_permanent(dns):
    err = failure(dns, "otherserver.dom:25")  # has MX, but no A: MX is not consulted
    assert isinstance(err, PermanentDNSError)


@pytest.mark.parametrize(
    "queue, ip, port",
    [
        ("[127.0.0.1]", "127.0.0.1", 25),
        ("127.0.0.1", "127.0.0.1", 25),
        ("127.0.0.1:26", "127.0.0.1", 26),
        ("[127.0.0.1]:26", "127.0.0.1", 26),
        ("[IPv6:::1]", "::1", 25),
        ("[IPv6:::1]:2526", "::1", 2526),
    ],
)
def test_ip_literals_need_no_dns(dns, queue, ip, port):
    assert resolve(dns, queue) == [Target(ip, ip, port, 0)]
    assert dns.queries == []


def test_nxdomain_is_permanent(dns):
    err = failure(dns, "nowhere.dom")
    assert isinstance(err, PermanentDNSError) and err.enhanced == "5.1.2"
    assert isinstance(failure(dns, "nowhere.dom:25"), PermanentDNSError)


def test_no_address_records_is_permanent(dns):
    err = failure(dns, "noaddr.dom")
    assert isinstance(err, PermanentDNSError) and err.enhanced == "5.4.4"
    assert isinstance(failure(dns, "ghostmx.dom"), PermanentDNSError)


def test_null_mx_is_permanent(dns):
    err = failure(dns, "nullmx.dom")
    assert isinstance(err, PermanentDNSError) and err.enhanced == "5.1.10"
    # an explicit port still goes to the host's A record
    assert resolve(dns, "nullmx.dom:25")[0].ip == "127.0.0.6"


def test_servfail_and_refused_are_temporary(dns):
    for queue in ("broken.dom", "broken.dom:25", "refused.dom", "tempmx.dom"):
        err = failure(dns, queue)
        assert isinstance(err, TemporaryDNSError), queue
        assert err.enhanced.startswith("4.")


def test_timeout_is_temporary(dns):
    resolver = Resolver([dns.address], timeout=0.3, cache=False)
    with pytest.raises(TemporaryDNSError):
        asyncio.run(resolver.resolve_targets("slow.dom"))


def test_broken_exchanges_are_skipped(dns):
    assert [t.host for t in resolve(dns, "mixed.dom")] == ["mx2.otherserver.dom"] * 2
    assert [t.host for t in resolve(dns, "mixedtemp.dom")] == ["mx2.otherserver.dom"] * 2


def test_cname_is_followed(dns):
    assert [t.ip for t in resolve(dns, "cname.dom")] == ["127.0.0.3", "127.0.0.33"]


def test_mx_walk_stops_at_this_server(dns):
    err = failure(dns, "loop.dom", self_names=["US.dom."])
    assert isinstance(err, PermanentDNSError) and err.enhanced == "5.4.6"
    err = failure(dns, "loop.dom", self_ips=["127.0.0.9"])
    assert err.enhanced == "5.4.6"
    # as a backup MX (pref 20) we pass mail only up the list: to pref 10
    targets = resolve(dns, "backup.dom", self_names=["us.dom"])
    assert {t.host for t in targets} == {"mx2.otherserver.dom"}
    # an explicit host is used even when it is us
    assert resolve(dns, "us.dom:26", self_names=["us.dom"])[0].ip == "127.0.0.9"
    # implicit MX pointing at us is a loop too
    assert failure(dns, "us.dom", self_names=["us.dom"]).enhanced == "5.4.6"


def test_mx_hosts(dns):
    resolver = Resolver([dns.address], timeout=2, cache=False)
    assert asyncio.run(resolver.mx_hosts("otherserver.dom")) == [
        (10, "mx1.otherserver.dom"),
        (20, "mx2.otherserver.dom"),
    ]
    assert asyncio.run(resolver.mx_hosts("implicit.dom")) == []
    assert asyncio.run(resolver.mx_hosts("nowhere.dom")) == []
    assert asyncio.run(resolver.mx_hosts("nullmx.dom")) == [(0, ".")]
    with pytest.raises(TemporaryDNSError):
        asyncio.run(resolver.mx_hosts("broken.dom"))


def test_records_change_at_runtime(dns):
    assert resolve(dns, "implicit.dom")[0].ip == "127.0.0.4"
    dns.set("implicit.dom", "A", ["127.0.0.40"])
    assert resolve(dns, "implicit.dom")[0].ip == "127.0.0.40"
    dns.set("implicit.dom", "MX", [(5, "mx2.otherserver.dom")])
    assert resolve(dns, "implicit.dom")[0].host == "mx2.otherserver.dom"
    dns.remove("implicit.dom", "MX")
    assert resolve(dns, "implicit.dom")[0].host == "implicit.dom"
    dns.remove("implicit.dom")
    assert isinstance(failure(dns, "implicit.dom"), PermanentDNSError)


def test_cache_honours_ttl(dns):
    dns.load({"cached.dom": {"A": ["127.0.0.7"], "TTL": 300}})
    resolver = Resolver([dns.address], timeout=2)

    async def twice() -> tuple[str, str]:
        first = await resolver.addresses("cached.dom")
        dns.set("cached.dom", "A", ["127.0.0.8"])
        return first[0], (await resolver.addresses("cached.dom"))[0]

    assert asyncio.run(twice()) == ("127.0.0.7", "127.0.0.7")


def test_server_stop_and_restart():
    server = TestDNSServer({"x.dom": {"A": ["127.0.0.1"]}}).start()
    assert resolve(server, "x.dom")[0].ip == "127.0.0.1"
    server.stop()
    with pytest.raises(TemporaryDNSError):  # nobody answers any more
        asyncio.run(Resolver([server.address], timeout=0.3).addresses("x.dom"))
    with TestDNSServer({"x.dom": {"A": ["127.0.0.2"]}}) as again:
        assert resolve(again, "x.dom")[0].ip == "127.0.0.2"


@pytest.mark.parametrize(
    "queue, expected",
    [
        ("Friend.COM", ("friend.com", None, False)),
        ("friend.com.", ("friend.com", None, False)),
        ("relay.domain:25", ("relay.domain", 25, False)),
        ("[11.22.33.44]", ("11.22.33.44", None, True)),
        ("[11.22.33.44]:26", ("11.22.33.44", 26, True)),
        ("127.0.0.1:26", ("127.0.0.1", 26, True)),
        ("10.0.0.5", ("10.0.0.5", None, True)),
        ("[IPv6:2001:db8::1]", ("2001:db8::1", None, True)),
        ("[IPv6:2001:db8::1]:26", ("2001:db8::1", 26, True)),
        ("2001:db8::1", ("2001:db8::1", None, True)),
    ],
)
def test_parse_queue(queue, expected):
    assert parse_queue(queue) == expected


@pytest.mark.parametrize(
    "queue", ["", "host:", "host:0", "host:70000", "host:x", "[1.2.3]", "[1.2.3.4", "[1.2.3.4]x"]
)
def test_parse_queue_errors(queue):
    with pytest.raises(ValueError):
        parse_queue(queue)


def test_resolver_server_forms():
    Resolver(["127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:5353"])
    with pytest.raises(ValueError):
        Resolver(["dns.example"])
