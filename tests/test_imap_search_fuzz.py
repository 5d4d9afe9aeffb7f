"""Fuzz targets for the SEARCH-family parsers (issue 12): any ``SEARCH
RETURN (...)``, ``SORT`` or ``THREAD`` argument text is parsed or refused
with a :class:`ParseError` (BAD, or NO [BADCHARSET]), never another
exception, and what parses round-trips its options."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from waypost.protocols.imap import wire
from waypost.protocols.imap.wire import ParseError

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PIECES = st.sampled_from([
    "(", ")", " ", "RETURN", "MIN", "MAX", "ALL", "COUNT", "SAVE", "CHARSET", "UTF-8", "KOI8-R",
    "REVERSE", "DATE", "SUBJECT", "ARRIVAL", "DISPLAYFROM", "REFERENCES", "ORDEREDSUBJECT",
    "OLDER", "YOUNGER", "0", "5", "4294967296", "$", "1:*", "UNSEEN", "NOT", "OR", '"x"',
    "{1+}\r\nx", "\xff", "~",
])  # fmt: skip
ARGS = st.one_of(st.text(max_size=50), st.lists(PIECES, max_size=14).map("".join))


def parse(line: str) -> wire.Command | None:
    try:
        return wire.parse(line.encode("utf-8", "surrogateescape"))
    except ParseError as exc:
        assert exc.status in ("BAD", "NO")
        assert exc.status == "BAD" or (exc.code or "").startswith("BADCHARSET")
        return None


@SETTINGS
@given(st.sampled_from(["SEARCH", "UID SEARCH", "SORT", "UID SORT", "THREAD", "UID THREAD"]), ARGS)
def test_search_sort_thread_parse_or_are_refused(command: str, args: str) -> None:
    parsed = parse(f"a {command} {args}")
    if parsed is None:
        return
    if isinstance(parsed.args, wire.Search) and parsed.args.returns is not None:
        assert parsed.args.returns and set(parsed.args.returns) <= wire.SEARCH_RETURN
    if isinstance(parsed.args, wire.Sort):
        assert parsed.args.criteria
        assert {name for name, _ in parsed.args.criteria} <= wire.SORT_KEYS
    if isinstance(parsed.args, wire.Thread):
        assert parsed.args.algorithm in wire.THREAD_ALGORITHMS


@SETTINGS
@given(st.lists(st.sampled_from(["MIN", "max", "All", "COUNT", "save"]), max_size=6))
def test_return_options_round_trip(options: list[str]) -> None:
    parsed = parse(f"a SEARCH RETURN ({' '.join(options)}) ALL")
    assert parsed is not None
    want = list(dict.fromkeys(o.upper() for o in options)) or ["ALL"]
    assert list(parsed.args.returns) == want
