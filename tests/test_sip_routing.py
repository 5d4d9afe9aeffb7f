"""Where a SIP request goes (``services/signals/routing.decide``): the Router
with kind ``signal`` over the router.md §10 fixture and Router table, a real
SQLite store and registrations made through the registrar; relaying (403)
and the challenge of local callers (407); the shared SIP URI helper that
the registrar's address of record and the Router use; and agreement with
``waypost route --kind signal``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cli import Waypost
from tests.support.router_table import SPEC_TABLE
from tests.support.sip_world import ALICE, JOHN, request, sip_world

from waypost.services.container import Services
from waypost.services.router.address import strip_sip_uri
from waypost.services.signals.registrar import Contact, aor, register
from waypost.services.signals.routing import (
    Decision,
    Itself,
    Local,
    Refuse,
    Remote,
    SignalRequest,
    decide,
    decide_now,
)

OUTSIDER = "203.0.113.5"  # not in ClientIPAddresses (127.0.0.0/8); never connected to
INSIDER = "127.0.0.1"
DESK = "sip:alice@192.0.2.7:5062"
SOFT = "sip:alice@192.0.2.8:5070;transport=tcp"
FORBIDDEN = Refuse(403, "Forbidden")
NOT_FOUND = Refuse(404, "Not Found")
UNAVAILABLE = Refuse(480, "Temporarily Unavailable")


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    with sip_world(tmp_path / "var") as services:
        services.router.set_table(SPEC_TABLE)
        yield services


def ask(svc: Services, uri: str, *, source: str = OUTSIDER, sender: str = "sip:carol@example.net",
        authenticated: str | None = None, method: str = "INVITE") -> Decision:
    return decide(svc, SignalRequest(method, uri, sender, source, authenticated))


def registered(svc: Services, *contacts: str | Contact, account: str = ALICE,
               at: float | None = None, call_id: str = "reg-1") -> None:
    out = register(svc, request(*contacts, to=f"sip:{account}", account=account,
                                call_id=call_id), now=time.time() if at is None else at)
    assert out.status == 200, out


# -- local accounts -------------------------------------------------------------------


def test_a_registered_account_forks_to_its_contacts_highest_q_first(svc: Services) -> None:
    registered(svc, Contact(DESK, q="0.5"), Contact(SOFT, q="0.9"),
               Contact("sip:alice@192.0.2.9", q="0.1"))
    assert ask(svc, "sip:alice@domain.dom") == Local(
        ALICE, (SOFT, DESK, "sip:alice@192.0.2.9"))


def test_a_contact_without_q_counts_as_one_and_rings_before_lower_ones(svc: Services) -> None:
    registered(svc, Contact(DESK, q="0.7"), Contact(SOFT))
    assert ask(svc, "sip:alice@domain.dom") == Local(ALICE, (SOFT, DESK))


def test_equal_q_rings_the_most_recent_registration_first(svc: Services) -> None:
    now = time.time()
    registered(svc, DESK, at=now - 100, call_id="desk")
    registered(svc, SOFT, at=now - 10, call_id="soft")
    assert ask(svc, "sip:alice@domain.dom") == Local(ALICE, (SOFT, DESK))


def test_an_account_without_registrations_is_temporarily_unavailable(svc: Services) -> None:
    assert ask(svc, "sip:john@domain.dom") == UNAVAILABLE


def test_expired_registrations_are_not_contacts(svc: Services) -> None:
    registered(svc, DESK, at=time.time() - 8000)  # SIPMaxExpires is 7200
    assert ask(svc, "sip:alice@domain.dom") == UNAVAILABLE
    registered(svc, SOFT, call_id="fresh")
    assert ask(svc, "sip:alice@domain.dom") == Local(ALICE, (SOFT,))


def test_registrations_of_one_account_do_not_ring_another(svc: Services) -> None:
    registered(svc, DESK)
    assert ask(svc, "sip:john@domain.dom") == UNAVAILABLE
    registered(svc, "sip:john@192.0.2.20", account=JOHN)
    assert ask(svc, "sip:john@domain.dom") == Local(JOHN, ("sip:john@192.0.2.20",))


@pytest.mark.parametrize("uri", [
    "sip:ali@domain.dom",                           # account alias
    "sip:info@domain.dom",                          # address record
    "sip:ALICE@Domain.Dom",                         # names are case-insensitive
    "sip:alice@domain.dom:5060;transport=tcp",      # a phone's port and parameters
    "sips:alice:secret@domain.dom?subject=hi",      # password and headers
    "<sip:%61lice@domain.dom>",                     # %-escapes undone
    "sip:alice%25domain.dom@main.dom",              # escaped user%domain form
    "sip:alice%domain.dom@main.dom",                # the same written raw
    "sip:alice@domain.dom.",                        # trailing dot
])
def test_every_name_of_a_local_account_reaches_its_registrations(svc: Services,
                                                                  uri: str) -> None:
    registered(svc, DESK)
    assert ask(svc, uri) == Local(ALICE, (DESK,))


def test_a_group_forks_to_the_registrations_of_its_local_members(svc: Services) -> None:
    svc.directory.create_group("desk@domain.dom", ["alice@domain.dom", "john@domain.dom"])
    registered(svc, Contact(DESK, q="0.2"))
    registered(svc, Contact("sip:john@192.0.2.20", q="0.8"), account=JOHN)
    assert ask(svc, "sip:desk@domain.dom") == Local(ALICE, ("sip:john@192.0.2.20", DESK))


def test_a_group_without_local_contacts_goes_to_its_remote_member(svc: Services) -> None:
    svc.directory.create_group("desk@domain.dom", ["john@domain.dom", "bob@far.example"])
    assert ask(svc, "sip:desk@domain.dom") == Remote(
        "sip:bob@far.example", "far.example", None, None)
    registered(svc, "sip:john@192.0.2.20", account=JOHN)
    assert ask(svc, "sip:desk@domain.dom") == Local(JOHN, ("sip:john@192.0.2.20",))


def test_a_group_of_unregistered_accounts_is_temporarily_unavailable(svc: Services) -> None:
    svc.directory.create_group("desk@domain.dom", ["john@domain.dom", "alice@domain.dom"])
    assert ask(svc, "sip:desk@domain.dom") == UNAVAILABLE


# -- unknown names --------------------------------------------------------------------


def test_an_unknown_name_is_404_by_default_whatever_mail_to_unknown_says(
        svc: Services) -> None:
    # domain.dom reroutes *mail* to unknown names; signals follow SignalToUnknown.
    assert ask(svc, "sip:nobody@domain.dom") == NOT_FOUND
    assert ask(svc, "sip:nobody@client.dom") == NOT_FOUND


def test_signal_to_unknown_rerouted_routes_the_new_address(svc: Services) -> None:
    svc.directory.set_domain_settings("client.dom", {
        "SignalToUnknown": "Rerouted to", "SignalRerouteAddress": "*@sipfriend.com"})
    assert ask(svc, "sip:nobody@client.dom", source=INSIDER) == Remote(
        "sip:nobody@sipfriend.com", "sip.provider.com", 5060, None)
    # a reroute happens after the Router table: local for relaying, open to anyone
    assert ask(svc, "sip:nobody@client.dom") == Remote(
        "sip:nobody@sipfriend.com", "sip.provider.com", 5060, None)


def test_signal_to_unknown_discarded_is_404(svc: Services) -> None:
    svc.directory.set_domain_settings("client.dom", {"SignalToUnknown": "Discarded"})
    assert ask(svc, "sip:nobody@client.dom") == NOT_FOUND


def test_a_mailing_list_cannot_be_called(svc: Services) -> None:
    svc.directory.create_list("staff@domain.dom", "alice")
    assert ask(svc, "sip:staff@domain.dom") == NOT_FOUND


def test_an_unqualified_domain_is_404(svc: Services) -> None:
    assert ask(svc, "sip:bob@nodots", source=INSIDER) == NOT_FOUND


def test_a_routing_loop_in_the_table_is_a_server_error(svc: Services) -> None:
    svc.router.set_table("<a@domain.dom> = b@domain.dom\n<b@domain.dom> = a@domain.dom\n")
    assert ask(svc, "sip:a@domain.dom") == Refuse(500, "Routing Loop")


# -- remote routes --------------------------------------------------------------------


def test_a_signal_via_record_restores_the_host_part_and_keeps_the_explicit_port(
        svc: Services) -> None:
    assert ask(svc, "sip:bob@sipfriend.com", source=INSIDER) == Remote(
        "sip:bob@sipfriend.com", "sip.provider.com", 5060, None)


def test_the_spec_relay_signal_record_relays_for_anyone(svc: Services) -> None:
    svc.router.set_table("Relay:Signal:friend.com = friend.com@sip.friend.com.5060._via\n")
    assert ask(svc, "sip:bob@friend.com") == Remote(
        "sip:bob@friend.com", "sip.friend.com", 5060, None)


def test_a_signal_record_does_not_apply_to_mail(svc: Services) -> None:
    result = svc.router.route("bob@sipfriend.com", "mail", trusted=True)
    assert result.lines() == ["SMTP(sipfriend.com)bob@sipfriend.com"]


def test_an_unrewritten_remote_uri_is_sent_as_it_came_with_its_port_and_transport(
        svc: Services) -> None:
    uri = "sip:bob@far.example:5070;transport=TCP;lr"
    assert ask(svc, uri, source=INSIDER) == Remote(uri, "far.example", 5070, "tcp")
    assert ask(svc, "sips:bob@far.example", source=INSIDER) == Remote(
        "sips:bob@far.example", "far.example", None, None)


def test_ip_literal_uris_go_to_that_address(svc: Services) -> None:
    assert ask(svc, "sip:bob@198.51.100.7:5070", source=INSIDER) == Remote(
        "sip:bob@198.51.100.7:5070", "198.51.100.7", 5070, None)
    assert ask(svc, "sip:bob@[2001:db8::1]", source=INSIDER) == Remote(
        "sip:bob@[2001:db8::1]", "2001:db8::1", None, None)


def test_a_forwarder_to_a_remote_address_is_open_to_any_source(svc: Services) -> None:
    assert ask(svc, "sip:fwd@domain.dom") == Remote(
        "sip:bob@friend.com", "friend.com", None, None)


def test_a_rewritten_user_part_is_escaped_in_the_new_uri(svc: Services) -> None:
    svc.router.set_table("Relay:<odd@domain.dom> = a%20b@far.example\n")
    decision = ask(svc, "sip:odd@domain.dom")
    assert decision == Remote("sip:a%2520b@far.example", "far.example", None, None)


# -- relaying ---------------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["sip:bob@sipfriend.com", "sip:bob@far.example",
                                 "sip:bob%far.example@main.dom", "sip:bob@198.51.100.7"])
def test_an_untrusted_source_may_not_relay_to_a_remote_target(svc: Services, uri: str) -> None:
    assert ask(svc, uri) == FORBIDDEN


def test_a_client_ip_address_may_relay(svc: Services) -> None:
    assert isinstance(ask(svc, "sip:bob@far.example", source=INSIDER), Remote)


def test_an_authenticated_request_may_relay_from_anywhere(svc: Services) -> None:
    decision = ask(svc, "sip:bob@far.example", sender=f"sip:{ALICE}", authenticated=ALICE)
    assert decision == Remote("sip:bob@far.example", "far.example", None, None)


@pytest.mark.parametrize("sender", [f"sip:{ALICE}", "<sip:ali@domain.dom>;tag=1",
                                    "sip:alice%domain.dom@main.dom"])
def test_an_authenticated_request_may_use_any_name_of_its_own_account(
        svc: Services, sender: str) -> None:
    assert isinstance(ask(svc, "sip:bob@far.example", sender=sender, authenticated=ALICE),
                      Remote)


@pytest.mark.parametrize("sender", [f"sip:{JOHN}", "sip:carol@example.net", "sip:nobody@domain.dom"])
@pytest.mark.parametrize("uri", ["sip:bob@far.example", "sip:alice@domain.dom"])
def test_an_authenticated_request_whose_from_is_not_its_account_is_403(
        svc: Services, sender: str, uri: str) -> None:
    """RFC 3261 §22.3 policy: alice's password does not make a call as john
    (or as a stranger), out or in; ACK and CANCEL are never refused so."""
    assert ask(svc, uri, sender=sender, authenticated=ALICE) == FORBIDDEN
    assert ask(svc, uri, sender=sender, authenticated=ALICE, method="ACK") != FORBIDDEN


def test_a_changed_client_ip_list_is_followed(svc: Services) -> None:
    assert isinstance(ask(svc, "sip:bob@far.example", source=INSIDER), Remote)
    svc.set_setting("ClientIPAddresses", "127.0.0.2")
    assert ask(svc, "sip:bob@far.example", source=INSIDER) == FORBIDDEN


def test_an_untrusted_source_may_call_local_users(svc: Services) -> None:
    registered(svc, DESK)
    assert ask(svc, "sip:alice@domain.dom") == Local(ALICE, (DESK,))


@pytest.mark.parametrize("sender", [f"sip:{ALICE}", "<sip:ali@domain.dom>;tag=1",
                                    "sip:alice%domain.dom@main.dom"])
@pytest.mark.parametrize("source", [OUTSIDER, INSIDER])
def test_a_local_user_calling_out_is_challenged_for_the_accounts_domain(
        svc: Services, sender: str, source: str) -> None:
    assert ask(svc, "sip:bob@far.example", sender=sender, source=source) == Refuse(
        407, "Proxy Authentication Required", realm="domain.dom")


def test_a_local_user_calling_a_local_user_is_not_challenged(svc: Services) -> None:
    registered(svc, DESK)
    assert ask(svc, "sip:alice@domain.dom", sender=f"sip:{JOHN}") == Local(ALICE, (DESK,))


def test_a_local_user_calling_a_group_that_rings_locally_is_not_challenged(
        svc: Services) -> None:
    svc.directory.create_group("desk@domain.dom", ["alice@domain.dom", "bob@far.example"])
    registered(svc, DESK)
    assert ask(svc, "sip:desk@domain.dom", sender=f"sip:{JOHN}") == Local(ALICE, (DESK,))


@pytest.mark.parametrize("method", ["ACK", "CANCEL"])
def test_ack_and_cancel_are_never_challenged(svc: Services, method: str) -> None:
    assert ask(svc, "sip:bob@far.example", sender=f"sip:{ALICE}", method=method) == FORBIDDEN
    assert isinstance(ask(svc, "sip:bob@far.example", sender=f"sip:{ALICE}", method=method,
                          source=INSIDER), Remote)


def test_a_remote_sender_is_refused_not_challenged(svc: Services) -> None:
    assert ask(svc, "sip:bob@far.example", sender="sip:eve@domain.dom.evil.example") == FORBIDDEN


# -- the server itself, and bad URIs ----------------------------------------------------


@pytest.mark.parametrize("uri", ["sip:domain.dom", "sip:main.dom", "sips:client.dom:5061",
                                 "sip:127.0.0.1:5060", "sip:192.0.2.10;transport=tcp",
                                 "sip:www.client.dom", "sip:DOMAIN.DOM."])
def test_a_uri_without_user_naming_this_server_is_itself(svc: Services, uri: str) -> None:
    assert ask(svc, uri) == Itself()


def test_a_uri_without_user_naming_another_host_is_remote(svc: Services) -> None:
    assert ask(svc, "sip:sipfriend.com", source=INSIDER) == Remote(
        "sip:sipfriend.com", "sip.provider.com", 5060, None)
    assert ask(svc, "sip:far.example:5070", source=INSIDER) == Remote(
        "sip:far.example:5070", "far.example", 5070, None)
    assert ask(svc, "sip:far.example") == FORBIDDEN


@pytest.mark.parametrize("uri", ["mailto:alice@domain.dom", "tel:+15551234", "alice@domain.dom",
                                 "http://domain.dom/"])
def test_other_uri_schemes_are_416(svc: Services, uri: str) -> None:
    assert ask(svc, uri) == Refuse(416, "Unsupported URI Scheme")


@pytest.mark.parametrize("uri", ["sip:", "sip:@domain.dom", "sip:alice@"])
def test_uris_without_host_or_with_empty_user_are_400(svc: Services, uri: str) -> None:
    assert ask(svc, uri) == Refuse(400, "Bad Request")


# -- the one URI helper ------------------------------------------------------------------


@pytest.mark.parametrize(("uri", "address"), [
    ("sip:alice@domain.dom:5060;transport=tcp", "alice@domain.dom"),
    ("<sips:alice:pw@Domain.Dom:5061?subject=x>", "alice@domain.dom"),
    ("sip:al%69ce@domain.dom", "alice@domain.dom"),
    ("sip:bob%25friend.com@main.dom", "bob%friend.com@main.dom"),
    ("sip:bob%abc.com@main.dom", "bob%abc.com@main.dom"),  # not an escape: kept
    ("sip:bob%0a@main.dom", "bob%0a@main.dom"),            # a control character: kept
    ("sip:bob@[2001:db8::1]:5060", "bob@[2001:db8::1]"),
    ("sip:user;par=x@example.com;lr", "user;par=x@example.com"),
    ("bob@friend.com", "bob@friend.com"),                  # a plain address as it is
])
def test_routing_and_the_registrar_reduce_a_sip_uri_to_the_same_address(
        uri: str, address: str) -> None:
    assert strip_sip_uri(uri) == address
    if uri.lstrip("<").startswith("sip"):
        assert aor(uri) == address


def test_a_phone_registering_with_port_and_escapes_reaches_its_account(svc: Services) -> None:
    out = register(svc, request(DESK, to="<sip:%61li:pw@domain.dom:5060;transport=tcp>"),
                   now=time.time())
    assert (out.status, out.account) == (200, ALICE)
    assert ask(svc, "sip:alice@domain.dom") == Local(ALICE, (DESK,))


# -- the CLI agrees ----------------------------------------------------------------------


@pytest.mark.parametrize(("uri", "source", "line"), [
    ("sip:alice@domain.dom:5060;transport=tcp", "untrusted", "LOCAL(alice@domain.dom)"),
    ("sip:bob@sipfriend.com", "trusted", "SIP(sip.provider.com:5060)bob@sipfriend.com"),
    ("sip:bob@sipfriend.com", "untrusted", "error: relaying prohibited"),
    ("sip:nobody@domain.dom", "untrusted", "error: unknown user account nobody@domain.dom"),
    ("sip:fwd@domain.dom", "untrusted", "SIP(friend.com)bob@friend.com"),
    ("sip:domain.dom", "untrusted", "error: invalid address: a SIP URI without a user part"),
])
def test_waypost_route_kind_signal_agrees_with_decide(
        svc: Services, uri: str, source: str, line: str) -> None:
    proc = Waypost(svc.data_dir)("route", "--kind", "signal", "--source", source, uri,
                                 check=None)
    assert proc.stdout.splitlines() == [line]
    decision = ask(svc, uri, source=INSIDER if source == "trusted" else OUTSIDER)
    if line.startswith("LOCAL("):
        assert decision == UNAVAILABLE  # the account, with no registration yet
    elif line.startswith("SIP("):
        assert isinstance(decision, Remote)
        queue, _, address = line[len("SIP("):].partition(")")
        host, _, port = queue.partition(":")
        assert (decision.target, decision.host, decision.port) == (
            f"sip:{address}", host, int(port) if port else None)
    elif "relaying" in line:
        assert decision == FORBIDDEN
    elif "without a user part" in line:
        assert decision == Itself()  # decide() answers what the Router cannot show
    else:
        assert decision == NOT_FOUND


# -- the decision from memory (decide_now, the proxy's first try) -----------------


def test_decide_now_never_reads_the_store_and_sees_a_change_made_here_at_once(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """decide_now answers from memory only: None until the bindings were read
    (by decide, in a thread), then the same decision as decide; a REGISTER
    made through the registrar drops what was kept, so the next call sees
    the new contact at once, never a stale one."""
    registered(svc, DESK)
    reads: list[str] = []
    real = svc.store.sip_bindings

    def counting(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        reads.append("read")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(svc.store, "sip_bindings", counting)
    invite = SignalRequest("INVITE", "sip:alice@domain.dom", "sip:carol@example.net",
                           OUTSIDER, None)
    assert decide_now(svc, invite) is None and reads == []  # would have to read
    assert decide(svc, invite) == Local(ALICE, (DESK,)) and reads == ["read"]
    assert decide_now(svc, invite) == Local(ALICE, (DESK,)) and reads == ["read"]
    registered(svc, Contact(SOFT, q="0.9"), Contact(DESK, q="0.5"), call_id="reg-2")
    assert decide_now(svc, invite) is None  # dropped by the change
    assert decide(svc, invite) == Local(ALICE, (SOFT, DESK))
    assert decide_now(svc, invite) == Local(ALICE, (SOFT, DESK))
