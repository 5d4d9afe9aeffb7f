"""Router behaviour beyond the worked examples: objects, Unknown settings,
relaying, parsing. Uses the Router's own input type, a DirectorySnapshot."""

from __future__ import annotations

import pytest

from waypost.services.router import compile_table, route
from waypost.services.router.address import AddressError, parse_address
from waypost.services.router.view import (
    DirectorySnapshot,
    DirObject,
    DomainView,
    ObjectKind,
    UnknownMode,
    UnknownPolicy,
)

A = ObjectKind.ACCOUNT


def snapshot(**changes) -> DirectorySnapshot:
    base = dict(
        main_domain="main.dom",
        domains={
            "main.dom": DomainView("main.dom"),
            "sec.dom": DomainView("sec.dom"),
            "drop.dom": DomainView("drop.dom", mail_unknown=UnknownPolicy(UnknownMode.DISCARDED)),
            "bounce.dom": DomainView("bounce.dom",
                                     mail_unknown=UnknownPolicy(UnknownMode.BOUNCED)),
        },
        domain_aliases={"mail.main.dom": "main.dom", "alias.sec.dom": "sec.dom"},
        objects={
            ("main.dom", "postmaster"): DirObject(A, "postmaster"),
            ("main.dom", "boss"): DirObject(A, "Boss"),
            ("sec.dom", "ann"): DirObject(A, "ann"),
            ("sec.dom", "staff"): DirObject(ObjectKind.GROUP, "staff",
                                             ("ann@sec.dom", "boss", "x@remote.example")),
            ("sec.dom", "loop"): DirObject(ObjectKind.GROUP, "loop", ("loop@sec.dom", "ann@sec.dom")),
            ("sec.dom", "news"): DirObject(ObjectKind.LIST, "news"),
            ("sec.dom", "fwd"): DirObject(ObjectKind.FORWARDER, "fwd", ("ann@sec.dom",)),
        },
        own_ips=frozenset({"192.0.2.1"}),
        ip_domains={"192.0.2.7": "sec.dom"},
    )
    base.update(changes)
    return DirectorySnapshot(**base)


def lines(address: str, kind: str = "mail", trusted: bool = False, table: str = "",
          snap: DirectorySnapshot | None = None) -> list[str]:
    compiled = compile_table(table, ["main.dom", "mail.main.dom"])
    return route(address, kind, trusted, compiled, snap or snapshot()).lines()


def test_group_expands_to_one_route_per_member_and_members_may_be_remote() -> None:
    assert lines("staff@sec.dom") == [
        "LOCAL(ann@sec.dom)", "LOCAL(boss@main.dom)", "SMTP(remote.example)x@remote.example"]


def test_group_that_contains_itself_still_delivers_to_the_others() -> None:
    assert lines("loop@sec.dom") == ["LOCAL(ann@sec.dom)"]


def test_list_forwarder_and_access_kinds() -> None:
    assert lines("news@sec.dom") == ["LIST(news@sec.dom)"]
    assert lines("fwd@sec.dom") == ["LOCAL(ann@sec.dom)"]
    assert lines("fwd@sec.dom", "access")[0].startswith("error: fwd@sec.dom is a forwarder")
    assert lines("staff@sec.dom", "access")[0].startswith("error: staff@sec.dom is a group")


def test_discarded_and_accepted_and_bounced() -> None:
    assert lines("who@drop.dom") == ["DISCARD()"]
    assert lines("who@bounce.dom") == ["BOUNCE()who@bounce.dom"]


def test_postmaster_of_a_secondary_domain_falls_back_to_the_main_domain() -> None:
    assert lines("postmaster@sec.dom") == ["LOCAL(postmaster@main.dom)"]
    assert lines("PostMaster@Sec.Dom.") == ["LOCAL(postmaster@main.dom)"]


def test_domain_aliases_and_assigned_ips() -> None:
    assert lines("ann@alias.sec.dom") == ["LOCAL(ann@sec.dom)"]
    assert lines("boss@mail.main.dom") == ["LOCAL(boss@main.dom)"]
    assert lines("ann@[192.0.2.7]") == ["LOCAL(ann@sec.dom)"]
    assert lines("boss@[127.0.0.1]") == ["LOCAL(boss@main.dom)"]


def test_direct_mailbox_addressing() -> None:
    assert lines("ann#Reports@sec.dom") == ["LOCAL(ann@sec.dom)#Reports"]


def test_held_domains_may_be_relayed_to_by_anyone() -> None:
    snap = snapshot(hold_domains=("mail.client.com",))
    assert lines("x@client.com", table="client.com = mail.client.com._via", snap=snap) == [
        "SMTP(mail.client.com)x@mail.client.com"]
    assert lines("x@client.com", table="client.com = client.com@mail.client.com._via",
                 snap=snap) == ["SMTP(mail.client.com)x@client.com"]
    assert lines("x@other.com", snap=snap) == ["error: relaying prohibited"]


def test_ip_via_hosts_with_and_without_port() -> None:
    assert lines("x@a.com", trusted=True, table="a.com = a.com@10.0.0.5._via") == [
        "SMTP([10.0.0.5])x@a.com"]
    assert lines("x@a.com", trusted=True, table="a.com = a.com@10.0.0.5.26._via") == [
        "SMTP(10.0.0.5:26)x@a.com"]
    assert lines("x@a.com", trusted=True, table="a.com = a.com@relay.b.com.2525._via") == [
        "SMTP(relay.b.com:2525)x@a.com"]


def test_relay_permission_survives_further_records() -> None:
    table = "Relay: client57.com = client57.com@other-port\nother-port = 127.0.0.1.26._via\n"
    assert lines("x@client57.com", table=table) == ["SMTP(127.0.0.1:26)x@client57.com"]


RELAY_TRICKS = [
    "bob%evil.example@main.dom",
    "bob%evil.example@[192.0.2.1]",
    "bob%evil.example@[127.0.0.1]",
    "evil.example!bob",
    "main.dom!evil.example!bob",
    "<@main.dom:bob@evil.example>",
    "<@main.dom,@evil.example:bob@evil2.example>",
    '"bob@evil.example"@main.dom',
    '"bob%evil.example"@main.dom',
    "bob@[198.51.100.9]",
    "bob@evil.example.",
    "BOB%EVIL.EXAMPLE@MAIN.DOM",
    "postmaster%evil.example@main.dom",
    "postmaster@evil.example",
    "bob%evil.example",
    "bob@evil.example@main.dom",
]


@pytest.mark.parametrize("address", RELAY_TRICKS)
def test_relay_tricks_from_untrusted_sources_are_refused(address: str) -> None:
    assert lines(address, trusted=False) == ["error: relaying prohibited"]


@pytest.mark.parametrize("address", RELAY_TRICKS)
def test_relay_tricks_from_trusted_sources_are_remote(address: str) -> None:
    (only,) = lines(address, trusted=True)
    assert only.startswith("SMTP("), only


@pytest.mark.parametrize(
    ("text", "local", "domain"),
    [
        ("xxx@yyy", "xxx", "yyy"),
        ("<@zzz:xxx@yyy>", "xxx%yyy", "zzz"),
        ("zzz!yyy!xxx", "xxx%yyy", "zzz"),
        ("xxx%yyy@zzz", "xxx%yyy", "zzz"),
        ("xxx", "xxx", ""),
        ("a@b@C.Com.", "a%b", "c.com"),
        ('"a b"@c.com', "a b", "c.com"),
    ],
)
def test_parsing(text: str, local: str, domain: str) -> None:
    address = parse_address(text)
    assert (address.local, address.domain) == (local, domain)


@pytest.mark.parametrize("text", ["", "<>", "<a@b", "a@", "@b.com", "a b@c.com", "a@b\r\n.com",
                                  '"unterminated@x.com'])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text)
    assert lines(text)[0].startswith("error: invalid address")
