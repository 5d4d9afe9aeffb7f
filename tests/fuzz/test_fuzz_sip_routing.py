"""Fuzz target for SIP routing (``services/signals/routing.decide``): random
Request-URIs and From URIs, any source address, with random Router tables,
over the router.md §10 Directory in a real store where alice@domain.dom has
a registration.

Properties: ``decide`` never raises and answers one of the four decisions;
a :class:`Local` names an account and has contacts; a :class:`Remote` has
a host and a port that is None or a real port; a :class:`Refuse` is a SIP
error status, with a realm exactly when it is 407.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.fuzz import TARGET, seed_ids, text_mutants, text_seeds
from tests.support.router_table import SPEC_TABLE
from tests.support.sip_world import ALICE, open_sip_world, request

from waypost.services.container import Services
from waypost.services.router import TableError, compile_table
from waypost.services.signals.registrar import register
from waypost.services.signals.routing import (
    Decision,
    Itself,
    Local,
    Refuse,
    Remote,
    SignalRequest,
    decide,
)

URIS = text_seeds("sip_routing/uris.lines")
TABLE_LINES = text_seeds("router/tables.lines")
TOKENS = ["sip:", "sips:", "tel:", "@", "%", "%25", "%4", ":", ";", "?", "=", "<", ">", "[", "]",
          ".", ":5060", ";transport=tcp", ";lr", "domain.dom", "main.dom", "127.0.0.1",
          "::1", "._via", ".5060", " ", "\t", "\x00", "é", "Signal:", "Relay:", "*"]
SOURCES = st.one_of(st.sampled_from(["127.0.0.1", "203.0.113.5", "192.0.2.10", "::1", ""]),
                    st.text(max_size=20))


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    services = open_sip_world(tmp_path_factory.mktemp("siprouting") / "var")
    services.router.set_table(SPEC_TABLE)
    out = register(services, request("sip:alice@127.0.0.1:5062"), now=time.time())
    assert out.status == 200
    yield services
    services.close()


def check(decision: Decision) -> None:
    assert isinstance(decision, Local | Remote | Itself | Refuse)
    if isinstance(decision, Local):
        assert "@" in decision.account and decision.contacts
        assert all(decision.contacts)
    elif isinstance(decision, Remote):
        assert decision.host and decision.target.startswith(("sip:", "sips:"))
        assert decision.port is None or 0 < decision.port < 65536
    elif isinstance(decision, Refuse):
        assert 400 <= decision.status < 700 and decision.reason
        assert (decision.realm is not None) == (decision.status == 407)


def ask(svc: Services, uri: str, sender: str = f"sip:{ALICE}", source: str = "203.0.113.5",
        authenticated: str | None = None, method: str = "INVITE") -> Decision:
    return decide(svc, SignalRequest(method, uri, sender, source, authenticated))


@pytest.mark.parametrize("uri", URIS, ids=seed_ids(URIS))
def test_uri_seeds(svc: Services, uri: str) -> None:
    for source in ("127.0.0.1", "203.0.113.5"):
        check(ask(svc, uri, source=source))
        check(ask(svc, uri, sender=uri, source=source, authenticated=ALICE))


@TARGET
@given(text_mutants(URIS, TOKENS), text_mutants(URIS, TOKENS), SOURCES,
       st.sampled_from([None, ALICE]), st.sampled_from(["INVITE", "ACK", "CANCEL", "MESSAGE"]))
def test_decide_never_raises(svc: Services, uri: str, sender: str, source: str,
                             authenticated: str | None, method: str) -> None:
    check(ask(svc, uri, sender, source, authenticated, method))


tables = st.lists(text_mutants(TABLE_LINES, TOKENS, most=3), max_size=8).map("\n".join)


@TARGET
@given(tables, text_mutants(URIS, TOKENS), SOURCES)
def test_decide_never_raises_with_any_table(svc: Services, table: str, uri: str,
                                            source: str) -> None:
    try:
        compile_table(table, ["main.dom"])
    except TableError:
        table = SPEC_TABLE
    svc.router.set_table(table)
    try:
        check(ask(svc, uri, source=source))
        check(ask(svc, uri, sender="sip:carol@example.net", source=source))
    finally:
        svc.router.set_table(SPEC_TABLE)
