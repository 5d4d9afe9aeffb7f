"""The pure connection table of ``protocols/connlimits.py``: which limit
refuses, what is counted where (IPv4 /24, IPv6 /64, IPv4-mapped IPv6 as
IPv4, trusted addresses), the refusal texts, the rate of refusal log lines,
and a property test over random admit/release sequences."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from waypost.protocols.connlimits import (
    ConnectionLimits,
    ConnectionTable,
    Refusal,
    RefusalLog,
    Scope,
    Ticket,
    client_keys,
)
from waypost.settings import ServerSettings

LIMITS = ConnectionLimits(per_address=2, per_network=3, overall=5, per_trusted_address=4,
                          is_trusted=lambda ip: ip == "192.0.2.200")


def admit(table: ConnectionTable, ip: str) -> Ticket:
    ticket = table.admit(ip)
    assert isinstance(ticket, Ticket), (ip, ticket)
    return ticket


def refused(table: ConnectionTable, ip: str) -> Scope:
    refusal = table.admit(ip)
    assert isinstance(refusal, Refusal), (ip, refusal)
    return refusal.scope


def test_client_keys() -> None:
    assert client_keys("192.0.2.7") == ("192.0.2.7", "192.0.2.0/24")
    assert client_keys("::ffff:192.0.2.7") == ("192.0.2.7", "192.0.2.0/24")
    assert client_keys("2001:db8:1:2:3:4:5:6") == ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64")
    assert client_keys("fe80::1%eth0") == ("fe80::1", "fe80::/64")
    assert client_keys("") == ("", "")


def test_per_address_limit_and_release() -> None:
    table = ConnectionTable(LIMITS)
    first = admit(table, "192.0.2.1")
    admit(table, "192.0.2.1")
    assert refused(table, "192.0.2.1") is Scope.ADDRESS
    assert refused(table, "::ffff:192.0.2.1") is Scope.ADDRESS  # the same client
    admit(table, "192.0.2.2")  # another address of the network
    table.release(first)
    admit(table, "192.0.2.1")
    assert table.count("192.0.2.1") == (2, 3)


def test_per_network_limit_ipv4_and_ipv6() -> None:
    table = ConnectionTable(LIMITS)
    for ip in ("192.0.2.1", "192.0.2.1", "192.0.2.2"):
        admit(table, ip)
    assert refused(table, "192.0.2.3") is Scope.NETWORK
    admit(table, "192.0.3.1")  # the next /24
    six = ConnectionTable(LIMITS)
    for ip in ("2001:db8::1", "2001:db8::2", "2001:db8::ffff:3"):
        admit(six, ip)
    assert refused(six, "2001:db8::4") is Scope.NETWORK
    admit(six, "2001:db8:0:1::1")  # the next /64


def test_overall_limit() -> None:
    table = ConnectionTable(LIMITS)
    tickets = [admit(table, f"198.51.{n}.1") for n in range(5)]
    assert len(table) == 5
    assert refused(table, "203.0.113.1") is Scope.SERVER
    table.release(tickets[0])
    admit(table, "203.0.113.1")


def test_trusted_address_has_its_own_limit_and_no_network() -> None:
    table = ConnectionTable(LIMITS)
    trusted = [admit(table, "192.0.2.200") for _ in range(4)]
    assert refused(table, "192.0.2.200") is Scope.ADDRESS
    assert table.count("192.0.2.200") == (4, 0)
    admit(table, "192.0.2.1")  # its neighbours still have the whole /24
    for ticket in trusted:
        table.release(ticket)
    assert len(table) == 1


def test_zero_is_no_limit_except_overall() -> None:
    settings = ServerSettings.from_store({
        "MaxConnectionsPerAddress": "0", "MaxConnectionsPerNetwork": "0",
        "MaxConnectionsPerTrustedAddress": "0", "MaxConnections": "3",
        "ClientIPAddresses": "10.0.0.0/8"})
    limits = ConnectionLimits.from_settings(settings)
    assert (limits.per_address, limits.per_network, limits.per_trusted_address,
            limits.overall) == (None, None, None, 3)
    assert limits.is_trusted("10.1.2.3") and not limits.is_trusted("192.0.2.1")
    table = ConnectionTable(limits)
    for _ in range(3):
        admit(table, "192.0.2.1")
    assert refused(table, "192.0.2.1") is Scope.SERVER


def test_defaults() -> None:
    limits = ConnectionLimits.from_settings(ServerSettings.from_store({}))
    assert (limits.per_address, limits.per_network, limits.per_trusted_address,
            limits.overall) == (30, 100, 250, 500)
    assert limits.is_trusted("127.0.0.1")


def test_refusal_texts() -> None:
    assert Refusal(Scope.ADDRESS, "x", 1).text == (
        "Too many connections from your address, try later")
    assert Refusal(Scope.NETWORK, "x", 1).text == (
        "Too many connections from your network, try later")
    assert Refusal(Scope.SERVER, "x", 1).text == "Too many connections, try later"


def test_refusal_log_once_per_interval_per_address() -> None:
    log = RefusalLog(interval=60)
    assert log.note("a", 0.0) == 1
    assert [log.note("a", t) for t in (1.0, 2.0, 59.9)] == [None, None, None]
    assert log.note("b", 30.0) == 1  # another address has its own minute
    assert log.note("a", 60.0) == 4  # three suppressed, and this one
    assert log.note("a", 61.0) is None


def test_refusal_log_stays_bounded() -> None:
    log = RefusalLog(interval=60, max_entries=10)
    for n in range(10):
        log.note(str(n), 0.0)
    assert log.note("new", 100.0) == 1
    assert len(log._seen) == 1  # the stale ones were dropped


IPS = st.one_of(
    st.sampled_from(["192.0.2.1", "192.0.2.2", "::ffff:192.0.2.1", "192.0.2.200",
                     "198.51.100.1", "2001:db8::1", "2001:db8::2", "2001:db8:0:1::1"]),
    st.text(max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), IPS, st.integers(0, 20)), max_size=60))
def test_counts_never_exceed_limits_and_return_to_zero(
        steps: list[tuple[bool, str, int]]) -> None:
    table = ConnectionTable(LIMITS)
    held: list[Ticket] = []
    for is_admit, ip, which in steps:
        if is_admit or not held:
            result = table.admit(ip)
            if isinstance(result, Ticket):
                held.append(result)
        else:
            table.release(held.pop(which % len(held)))
        assert len(table) == len(held) <= 5
        per_address: dict[str, int] = {}
        for ticket in held:
            per_address[ticket.address] = per_address.get(ticket.address, 0) + 1
        for address, count in per_address.items():
            assert count <= (4 if address == "192.0.2.200" else 2)
            assert table.count(address)[0] == count
        for ticket in held:
            if ticket.network is not None:
                assert sum(t.network == ticket.network for t in held) <= 3
    for ticket in held:
        table.release(ticket)
    assert len(table) == 0 and not table._addresses and not table._networks
