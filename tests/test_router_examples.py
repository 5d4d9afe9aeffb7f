"""Every worked example of router.md §10, on the spec fixture built through the
public Directory API and a real SQLite store."""

from __future__ import annotations

import pytest
from tests.support.directory import build_spec_fixture
from tests.support.router_table import SPEC_TABLE

from waypost.services.container import Services, open_services

T, U, ANY = "trusted", "untrusted", "any"
RELAY = "error: relaying prohibited"

# (row, kind, source, input, expected first line of the result)
EXAMPLES = [
    (1, "mail", ANY, "alice@domain.dom", "LOCAL(alice@domain.dom)"),
    (2, "mail", ANY, "ALICE@Domain.Dom", "LOCAL(alice@domain.dom)"),
    (3, "mail", ANY, "ali@domain.dom", "LOCAL(alice@domain.dom)"),
    (4, "mail", ANY, "info@domain.dom", "LOCAL(alice@domain.dom)"),
    (5, "mail", U, "aname@domain.dom", "SMTP(otherserver.dom)aname@domain.dom"),
    (6, "mail", U, "nobody@client.dom", "error: unknown user account nobody@client.dom"),
    (7, "mail", ANY, "john@main.dom", "LOCAL(john@main.dom)"),
    (8, "mail", ANY, "john", "LOCAL(john@main.dom)"),
    (9, "mail", ANY, "john@[192.0.2.10]", "LOCAL(john@main.dom)"),
    (10, "mail", ANY, "<@main.dom:john@domain.dom>", "LOCAL(john@domain.dom)"),
    (11, "mail", U, "bob%evil.example@main.dom", RELAY),
    (12, "mail", T, "bob%evil.example@main.dom", "SMTP(evil.example)bob@evil.example"),
    (13, "mail", U, "bob@friend.com", "SMTP(friend.com)bob@friend.com"),
    (14, "mail", U, "bob@friend2.com", "SMTP(firewall.friend2.com)bob@friend2.com"),
    (15, "mail", U, "bob@client.com", "SMTP(relay.domain:25)bob@client.com"),
    (16, "mail", T, "x@filtered.com", "SMTP(127.0.0.1:26)x@filtered.com"),
    (17, "mail", U, "x@filtered.com", RELAY),
    (18, "mail", U, "report-q3@main.dom", "SMTP(reports.example)report-q3@reports.example"),
    (19, "mail", U, "anything@dd-customer.com", "LOCAL(dd-customer@main.dom)"),
    (20, "mail", U, "x@customer2.com", "LOCAL(dd-customer@client.dom)"),
    (21, "mail", T, "aname%domain.dom@otherserver.dom._via", "SMTP(otherserver.dom)aname@domain.dom"),
    (22, "mail", T, "aname%domain.dom@[11.22.33.44]", "SMTP([11.22.33.44])aname@domain.dom"),
    (23, "mail", T, "bob@unknown-remote.example",
     "SMTP(unknown-remote.example)bob@unknown-remote.example"),
    (24, "mail", U, "bob@unknown-remote.example", RELAY),
    (25, "mail", ANY, "bob@nodots", "error: unqualified domain name 'nodots'"),
    (26, "access", ANY, "LoginPage@john.domain.dom", "LOCAL(john@domain.dom)"),
    (27, "access", ANY, "LoginPage@john.main.dom", "LOCAL(john@main.dom)"),
    (28, "access", ANY, "LoginPage@www.client.dom", "DOMAIN(client.dom)"),
    (29, "mail", T, "x@john.domain.dom", "SMTP(john.domain.dom)x@john.domain.dom"),
    (29, "mail", U, "x@john.domain.dom", RELAY),
    (30, "signal", U, "sip:bob@sipfriend.com", RELAY),
    (31, "signal", T, "sip:bob@sipfriend.com", "SIP(sip.provider.com:5060)bob@sipfriend.com"),
    (32, "mail", T, "bob@sipfriend.com", "SMTP(sipfriend.com)bob@sipfriend.com"),
    (33, "access", ANY, "ali%domain.dom", "LOCAL(alice@domain.dom)"),
    (34, "mail", U, "fwd@domain.dom", "SMTP(friend.com)bob@friend.com"),
    # "any"-source rows whose route is remote are open to trusted sources
    # only: an untrusted client naming a relay host directly is refused.
    (21, "mail", U, "aname%domain.dom@otherserver.dom._via", RELAY),
    (22, "mail", U, "aname%domain.dom@[11.22.33.44]", RELAY),
]


def _sources(source: str) -> list[bool]:
    return {T: [True], U: [False], ANY: [True, False]}[source]


@pytest.fixture(scope="module")
def spec_services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    svc = open_services(tmp_path_factory.mktemp("spec") / "data", create=True)
    build_spec_fixture(svc.directory)
    svc.router.set_table(SPEC_TABLE)
    yield svc
    svc.close()


@pytest.mark.parametrize(
    ("row", "kind", "trusted", "address", "expected"),
    [
        pytest.param(row, kind, trusted, address, expected,
                     id=f"{row}-{kind}-{'trusted' if trusted else 'untrusted'}-{address}")
        for row, kind, source, address, expected in EXAMPLES
        for trusted in _sources(source)
    ],
)
def test_spec_example(spec_services: Services, row: int, kind: str, trusted: bool,
                      address: str, expected: str) -> None:
    result = spec_services.router.route(address, kind, trusted=trusted)
    assert result.lines()[0] == expected, (row, result.lines())


@pytest.mark.parametrize(
    ("address", "real_to", "queue"),
    [
        ("anything@dd-customer.com", "anything@dd-customer.com", "dd-customer@main.dom"),
        ("x@customer2.com", "x@customer2.com", "dd-customer@client.dom"),
    ],
)
def test_unified_accounts_keep_the_original_recipient(
    spec_services: Services, address: str, real_to: str, queue: str
) -> None:
    (route,) = spec_services.router.route(address, "mail").routes
    assert (route.module, route.queue, route.real_to) == ("LOCAL", queue, real_to)


def test_row_35_routing_loop(tmp_path) -> None:
    svc = open_services(tmp_path / "data", create=True)
    build_spec_fixture(svc.directory)
    svc.router.set_table("<a> = b\n<b> = a\n")
    result = svc.router.route("a", "mail", trusted=True, explain=True)
    assert result.lines() == ["error: routing loop: more than 10 rewrites"]
    assert result.error is not None and result.error.smtp == (554, "5.4.6")
    assert sum("Router record" in step for step in result.steps) == 10
    svc.close()


def test_relay_refusal_keeps_the_denied_route_for_backup_checks(spec_services: Services) -> None:
    result = spec_services.router.route("bob@unknown-remote.example", "mail", trusted=False)
    assert result.error is not None
    assert result.error.smtp == (550, "5.7.1")
    assert str(result.error.denied_route) == "SMTP(unknown-remote.example)bob@unknown-remote.example"


def test_mail_to_unknown_follows_objects_that_exist_now(tmp_path) -> None:
    """Gradual migration: once bob exists, his mail stays local."""
    svc = open_services(tmp_path / "data", create=True)
    build_spec_fixture(svc.directory)
    assert svc.router.route("bob@domain.dom").lines() == ["SMTP(otherserver.dom)bob@domain.dom"]
    svc.directory.create_account("bob@domain.dom", password="pw-bob-123")
    assert svc.router.route("bob@domain.dom").lines() == ["LOCAL(bob@domain.dom)"]
    svc.close()
