"""The registrar's rules (RFC 3261 §10.3 steps 4-8) against a real SQLite
store, Directory and Router table: routing of the To URI, ``*``, expiry
bounds, Call-ID/CSeq ordering, q, the per-account limit, expired bindings,
and bindings that follow their account and survive a restart."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.support.sip_world import ALICE, JOHN, open_sip_world, request, sip_world

from waypost.services.container import Services, open_services
from waypost.services.signals.registrar import (
    Contact,
    RegisterOutcome,
    challenge_realm,
    register,
    registrations,
    target_account,
    unregister,
)

NOW = 1_800_000_000.0
DESK = "sip:alice@192.0.2.7:5062"
SOFT = "sip:alice@192.0.2.8:5070;transport=tcp"


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    with sip_world(tmp_path / "var") as services:
        yield services


def contacts(outcome: RegisterOutcome) -> dict[str, int]:
    return {b.contact: b.expires for b in outcome.bindings}


def test_register_stores_the_contact_with_the_default_expiry(svc: Services) -> None:
    out = register(svc, request(DESK), now=NOW)
    assert (out.status, out.reason, out.account) == (200, "OK", ALICE)
    assert contacts(out) == {DESK: 3600}
    [stored] = svc.store.sip_bindings("domain.dom", "alice", now=NOW)
    assert (stored.contact, stored.expires, stored.call_id, stored.cseq) == (
        DESK, NOW + 3600, "call-1@phone", 1)
    assert (stored.transport, stored.address, stored.port, stored.user_agent) == (
        "UDP", "192.0.2.7", 5062, "TestPhone/1.0")
    assert stored.registered == NOW and stored.q is None


@pytest.mark.parametrize("to", ["sip:ali@domain.dom", "sip:ali%domain.dom@main.dom",
                                "<sip:ALICE@Domain.Dom:5060;user=phone>", "sips:alice@domain.dom"])
def test_every_name_of_the_account_registers_the_same_account(svc: Services, to: str) -> None:
    register(svc, request(DESK), now=NOW)
    out = register(svc, request(SOFT, to=to, cseq=2), now=NOW + 10)
    assert (out.status, out.account) == (200, ALICE)
    assert contacts(out) == {DESK: 3590, SOFT: 3600}


@pytest.mark.parametrize("to", ["sip:nobody@domain.dom", "sip:bob@friend.com",
                                "sip:fwd@domain.dom", "sip:domain.dom", "sip:@"])
def test_a_to_that_is_not_one_local_account_is_404(svc: Services, to: str) -> None:
    out = register(svc, request(DESK, to=to), now=NOW)
    assert (out.status, out.reason) == (404, "Not Found")
    assert target_account(svc, to) is None
    assert svc.store.sip_bindings(now=0) == []


def test_the_challenge_realm_is_the_domain_of_the_to(svc: Services) -> None:
    svc.directory.add_domain_alias("domain.dom", "sip.domain.dom")
    assert challenge_realm(svc, "sip:ali%domain.dom@main.dom") == "domain.dom"
    assert challenge_realm(svc, "sip:john@main.dom") == "main.dom"
    # unknown names of our domains are challenged like known ones (no enumeration)
    assert challenge_realm(svc, "sip:nobody@Domain.Dom") == "domain.dom"
    assert challenge_realm(svc, "sip:nobody@sip.domain.dom:5060") == "domain.dom"
    assert challenge_realm(svc, "sip:bob@friend.com") is None


def test_another_users_to_is_403(svc: Services) -> None:
    out = register(svc, request(DESK, to=f"sip:{JOHN}"), now=NOW)
    assert (out.status, out.reason) == (403, "Forbidden")
    assert svc.store.sip_bindings(now=0) == []


def test_an_account_without_sip_access_is_403(svc: Services) -> None:
    svc.directory.set_account_settings(ALICE, {"AccessModes": "Mail,IMAP"})
    assert register(svc, request(DESK), now=NOW).status == 403


def test_star_removes_every_binding_only_with_expires_0_and_alone(svc: Services) -> None:
    register(svc, request(DESK, SOFT), now=NOW)
    for bad in (request("*", cseq=2), request("*", cseq=2, expires=3600),
                request("*", DESK, cseq=2, expires=0),
                request(Contact("*", expires=60), cseq=2, expires=0)):
        assert (register(svc, bad, now=NOW).status, len(contacts(register(
            svc, request(cseq=3), now=NOW)))) == (400, 2), bad
    out = register(svc, request("*", cseq=4, expires=0), now=NOW)
    assert (out.status, out.bindings) == (200, ())
    assert svc.store.sip_bindings(now=0) == []


def test_expires_param_then_header_then_default(svc: Services) -> None:
    out = register(svc, request(Contact(DESK, expires=120), SOFT, expires=600), now=NOW)
    assert contacts(out) == {DESK: 120, SOFT: 600}
    out = register(svc, request("sip:alice@192.0.2.9", cseq=2), now=NOW)
    assert contacts(out)["sip:alice@192.0.2.9"] == 3600


def test_too_brief_is_423_with_min_expires_and_changes_nothing(svc: Services) -> None:
    out = register(svc, request(SOFT, Contact(DESK, expires=30)), now=NOW)
    assert (out.status, out.reason, out.min_expires) == (423, "Interval Too Brief", 60)
    assert svc.store.sip_bindings(now=0) == []
    svc.set_setting("SIPMinExpires", "300")
    assert register(svc, request(DESK, expires=200), now=NOW).min_expires == 300
    # RFC 3261 §10.3 step 7: an hour or more is never "too brief"
    svc.set_setting("SIPMinExpires", "5000")
    assert register(svc, request(DESK, expires=3599), now=NOW).status == 423
    assert contacts(register(svc, request(DESK, expires=3600), now=NOW)) == {DESK: 3600}


def test_too_long_is_shortened_to_the_maximum(svc: Services) -> None:
    out = register(svc, request(DESK, expires=100_000), now=NOW)
    assert contacts(out) == {DESK: 7200}
    out = register(svc, request(DESK, cseq=2, expires=2**40), now=NOW)
    assert contacts(out) == {DESK: 7200}


def test_expires_0_removes_one_binding(svc: Services) -> None:
    register(svc, request(DESK, SOFT), now=NOW)
    out = register(svc, request(Contact(DESK, expires=0), cseq=2), now=NOW + 5)
    assert contacts(out) == {SOFT: 3595}
    out = register(svc, request("sip:alice@192.0.2.99", cseq=3, expires=0), now=NOW + 5)
    assert (out.status, contacts(out)) == (200, {SOFT: 3595})


def test_contact_uris_compare_as_rfc_3261_says(svc: Services) -> None:
    register(svc, request(SOFT), now=NOW)
    same = "SIP:alice@192.0.2.8:5070;Transport=TCP"
    out = register(svc, request(same, cseq=2, expires=900), now=NOW)
    assert list(contacts(out).values()) == [900] and len(out.bindings) == 1
    other_user = "sip:ALICE@192.0.2.8:5070;transport=tcp"  # the user part is case-sensitive
    assert len(register(svc, request(other_user, cseq=3), now=NOW).bindings) == 2


def test_same_call_id_with_a_cseq_not_higher_is_500_and_changes_nothing(svc: Services) -> None:
    register(svc, request(DESK, cseq=5, expires=600), now=NOW)
    for cseq in (5, 4):
        out = register(svc, request(DESK, SOFT, cseq=cseq, expires=900), now=NOW)
        assert (out.status, out.reason) == (500, "Server Internal Error")
    out = register(svc, request("*", cseq=5, expires=0), now=NOW)
    assert out.status == 500
    assert contacts(register(svc, request(cseq=6), now=NOW)) == {DESK: 600}
    # another Call-ID (another phone, or the phone after a reboot) may use any CSeq
    out = register(svc, request(DESK, call_id="other@phone", cseq=1, expires=900), now=NOW)
    assert contacts(out) == {DESK: 900}


def test_q_is_kept_and_checked(svc: Services) -> None:
    out = register(svc, request(Contact(DESK, q="0.5"), Contact(SOFT, q="1")), now=NOW)
    assert [(b.contact, b.q_text) for b in out.bindings] == [(SOFT, "1.0"), (DESK, "0.5")]
    for bad in ("1.5", "0.1234", "-1", "x", ""):
        out = register(svc, request(Contact(DESK, q=bad), cseq=2), now=NOW)
        assert out.status == 400, bad
    assert [b.q for b in registrations(svc, ALICE, now=NOW)] == [1000, 500]


def test_concurrent_registers_never_pass_the_limit_together(svc: Services) -> None:
    svc.set_setting("SIPMaxRegistrations", "3")
    phones = [request(f"sip:alice@192.0.2.{n}", call_id=f"phone-{n}") for n in range(12)]
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda r: register(svc, r, now=NOW).status, phones))
    assert sorted(statuses) == [200] * 3 + [403] * 9
    assert len(registrations(svc, ALICE, now=NOW)) == 3


def test_bad_contact_uri_or_negative_expiry_is_400(svc: Services) -> None:
    for bad in (request("no-scheme"), request("sip:"), request(Contact(DESK, expires=-1))):
        assert register(svc, bad, now=NOW).status == 400
    assert svc.store.sip_bindings(now=0) == []


def test_limit_of_bindings_per_account(svc: Services) -> None:
    svc.set_setting("SIPMaxRegistrations", "2")
    register(svc, request(DESK, SOFT), now=NOW)
    out = register(svc, request("sip:alice@192.0.2.9", cseq=2), now=NOW)
    assert (out.status, out.reason) == (403, "Too Many Registrations")
    assert len(registrations(svc, ALICE, now=NOW)) == 2
    # refreshing, or replacing one by another in one request, is within the limit
    assert register(svc, request(DESK, cseq=3), now=NOW).status == 200
    out = register(svc, request(Contact(DESK, expires=0), "sip:alice@192.0.2.9", cseq=4),
                   now=NOW)
    assert out.status == 200 and len(out.bindings) == 2
    # removed and added again in one request: still the same two
    nine = "sip:alice@192.0.2.9"
    out = register(svc, request(Contact(nine, expires=0), nine, cseq=5), now=NOW)
    assert out.status == 200 and len(out.bindings) == 2
    out = register(svc, request(Contact(nine, expires=0), nine, "sip:alice@192.0.2.10",
                                cseq=6), now=NOW)
    assert out.status == 403 and len(registrations(svc, ALICE, now=NOW)) == 2
    svc.set_setting("SIPMaxRegistrations", "1")  # lowered: refreshes still work
    assert register(svc, request(SOFT, cseq=7), now=NOW).status == 200


def test_instance_and_reg_id_identify_the_binding(svc: Services) -> None:
    phone = dict(instance="<urn:uuid:00000000-0000-1000-8000-000a95a0e128>", reg_id=1)
    register(svc, request(Contact(DESK, **phone)), now=NOW)
    out = register(svc, request(Contact("sip:alice@198.51.100.4:40000", **phone), cseq=2),
                   now=NOW)
    assert contacts(out) == {"sip:alice@198.51.100.4:40000": 3600}
    assert (out.bindings[0].instance, out.bindings[0].reg_id) == (phone["instance"], 1)


def test_a_request_without_contacts_lists_the_bindings(svc: Services) -> None:
    register(svc, request(DESK, expires=600), now=NOW)
    out = register(svc, request(cseq=2), now=NOW + 100)
    assert (out.status, contacts(out)) == (200, {DESK: 500})


def test_expired_bindings_are_never_returned_and_are_purged(svc: Services) -> None:
    register(svc, request(Contact(DESK, expires=60), SOFT), now=NOW)
    assert contacts(register(svc, request(cseq=2), now=NOW + 60)) == {SOFT: 3540}
    assert [b.contact for b in registrations(svc, now=NOW + 61)] == [SOFT]
    assert [b.contact for b in svc.store.sip_bindings(now=0)] == [SOFT]  # the row is gone
    # a REGISTER of any account purges everyone's expired bindings
    register(svc, request(DESK, to=f"sip:{JOHN}", account=JOHN), now=NOW + 4000)
    assert [b.account for b in svc.store.sip_bindings(now=0)] == ["john"]


def test_bindings_follow_a_renamed_account_and_go_with_a_deleted_one(svc: Services) -> None:
    register(svc, request(DESK), now=NOW)
    svc.directory.rename_account(ALICE, "alicia")
    [binding] = registrations(svc, "alicia@domain.dom", now=NOW)
    assert (binding.account, binding.domain, binding.contact) == ("alicia", "domain.dom", DESK)
    assert registrations(svc, "ali@domain.dom", now=NOW) == [binding]  # the alias follows
    svc.directory.delete_account("alicia@domain.dom")
    assert svc.store.sip_bindings(now=0) == []


def test_bindings_survive_closing_and_reopening_the_store(tmp_path: Path) -> None:
    data = tmp_path / "var"
    svc = open_sip_world(data)
    try:
        register(svc, request(Contact(DESK, q="0.7"), SOFT, expires=900), now=NOW)
    finally:
        svc.close()
    again = open_services(data)
    try:
        got = registrations(again, ALICE, now=NOW + 100)
        assert [(b.contact, b.expires - NOW, b.q) for b in got] == [
            (SOFT, 900, None), (DESK, 900, 700)]  # no q sorts as 1.0
        out = register(again, request(DESK, cseq=1), now=NOW + 100)
        assert out.status == 500  # the stored CSeq was kept too
    finally:
        again.close()


def test_unregister_one_contact_or_all(svc: Services) -> None:
    register(svc, request(DESK, SOFT), now=NOW)
    assert unregister(svc, "ali@domain.dom", "SIP:alice@192.0.2.7:5062", now=NOW) == 1
    assert [b.contact for b in registrations(svc, ALICE, now=NOW)] == [SOFT]
    assert unregister(svc, ALICE, DESK, now=NOW) == 0
    assert unregister(svc, ALICE, now=NOW) == 1
    assert registrations(svc, now=NOW) == []
