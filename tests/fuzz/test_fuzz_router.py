"""Fuzz targets for the Router (``services/router``): the address parser,
the Router Table text and the routing algorithm over any table.

Properties: any text is an address or an :class:`AddressError`, and an
address written without quotes parses back from its canonical form to
itself; any table text compiles or raises :class:`TableError` naming a line
of the text, and the records' own lines compile to the same records; with
any table that compiles, over the router.md §10 Directory, every address of
every kind routes to routes or an error, never an exception, within the
step limit; the CLI escaping of a table round-trips.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.directory import build_spec_fixture
from tests.support.fuzz import TARGET, seed_ids, text_mutants, text_seeds
from tests.support.router_table import SPEC_TABLE

from waypost.services.container import Services, open_services
from waypost.services.router import Kind, TableError, compile_table, route
from waypost.services.router.address import AddressError, parse_address
from waypost.services.router.table import cli_escape, cli_unescape
from waypost.services.router.view import DirectorySnapshot

ADDRESSES = text_seeds("router/addresses.lines")
LINES = text_seeds("router/tables.lines")
TOKENS = ["@", "%", "!", "<", ">", ":", ",", ";", "=", "*", '"', "\\", " ", ".", "[", "]",
          "Relay:", "NoRelay:", "RelayAll:", "Mail:", "Signal:", "Access:", "._via", ".25",
          "main.dom", "domain.dom", "sip:", "\n", "\t", "\x00", "é"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectorySnapshot]:
    svc: Services = open_services(tmp_path_factory.mktemp("router") / "data", create=True)
    build_spec_fixture(svc.directory)
    svc.router.set_table(SPEC_TABLE)
    yield svc.router.current()[1]
    svc.close()


def check_address(text: str) -> None:
    try:
        addr = parse_address(text)
    except AddressError:
        return
    assert addr.local or '""' in text  # RFC 5321 allows an empty quoted local part
    assert addr.domain == addr.domain.strip().rstrip(".").lower()
    if '"' not in text:
        assert parse_address(addr.canonical()) == addr


@pytest.mark.parametrize("text", ADDRESSES, ids=seed_ids(ADDRESSES))
def test_address_seeds(text: str) -> None:
    check_address(text)


@TARGET
@given(text_mutants(ADDRESSES, TOKENS))
def test_addresses(text: str) -> None:
    check_address(text)


def check_table(text: str) -> None:
    try:
        table = compile_table(text, ["main.dom"])
    except TableError as exc:
        assert 1 <= exc.line <= len(text.splitlines())
        return
    again = compile_table("\n".join(r.text for r in table.records), ["main.dom"])
    strip = [(r.left, r.right, r.is_address, r.kinds, r.relay, r.no_relay) for r in table.records]
    assert strip == [(r.left, r.right, r.is_address, r.kinds, r.relay, r.no_relay)
                     for r in again.records]
    assert compile_table(cli_unescape(cli_escape(text)), ["main.dom"]).records == table.records


@pytest.mark.parametrize("line", LINES, ids=seed_ids(LINES))
def test_table_line_seeds(line: str) -> None:
    check_table(line)


tables = st.lists(text_mutants(LINES, TOKENS, most=3), max_size=12).map("\n".join)


@TARGET
@given(tables)
def test_tables(text: str) -> None:
    check_table(text)


@TARGET
@given(st.one_of(tables, st.just(SPEC_TABLE)), text_mutants(ADDRESSES, TOKENS),
       st.sampled_from(list(Kind)), st.booleans())
def test_routing_never_raises(world: DirectorySnapshot, text: str, address: str, kind: Kind,
                              trusted: bool) -> None:
    try:
        table = compile_table(text, ["main.dom"])
    except TableError:
        table = compile_table(SPEC_TABLE, ["main.dom"])
    result = route(address, kind, trusted, table, world, explain=True)
    assert result.routes or result.error is not None
    assert not (result.routes and result.error)


def test_a_source_route_hop_holding_an_at_sign_is_not_an_address() -> None:
    """Found by test_addresses: ``<@m@main.dom:john@domain.dom>`` gave the
    domain ``m@main.dom``, which its canonical form did not parse back to."""
    with pytest.raises(AddressError, match="'@' inside a hop"):
        parse_address("<@m@main.dom:john@domain.dom>")
    assert parse_address("<@a.example,@b.example:x@y.example>").domain == "a.example"
