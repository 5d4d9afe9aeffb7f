"""Fuzz targets for the IMAP wire (``protocols/imap/wire.py``): framing
(literals, LITERAL+, over-limit lines), every command's grammar (sequence
sets, search keys, fetch attributes, flags, mailbox names, APPEND and
CATENATE), date-times and the string serialisers.

Properties: any bytes frame into the same events however they are cut into
chunks; every framed command parses or is refused with :class:`ParseError`
whose response is one ``tag BAD`` line (``NO`` only for an unsupported
charset, an over-limit literal or an unknown special use), never another exception; sequence sets,
date-times and strings written by the serialisers parse back to what was
written.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.fuzz import TARGET, cut, mutants, seed_ids, seeds

from waypost.protocols.imap import wire
from waypost.protocols.imap.wire import ParseError, RawCommand, Rejected, SequenceSet

COMMANDS = seeds("imap/commands.lines")
DATES = seeds("imap/dates.lines")
SEQSETS = seeds("imap/seqsets.lines")

TOKENS = [
    " ", "(", ")", "[", "]", "<", ">", ".", '"', "\\", "{3}\r\nabc", "{0+}\r\n", "~{1+}\r\n\x00",
    "{4294967296}\r\n", "*", "%", "$", ":", ",", "1", "0", "4294967295", "4294967296", "NIL",
    "UID ", "FETCH ", "STORE ", "SEARCH ", "SORT ", "THREAD ", "APPEND ", "LIST ", "SELECT ",
    "BODY[", "BODY.PEEK[", "BINARY[", "HEADER.FIELDS (", "MIME", "TEXT", "<0.10>", "FLAGS",
    "+FLAGS.SILENT", "\\Seen", "\\*", "OR ", "NOT ", "CHARSET ", "UTF-8 ", "RETURN (", "SAVE",
    "MODSEQ ", "CHANGEDSINCE ", "UNCHANGEDSINCE ", "1-Feb-1994", "&AMk-", "&Jjo", "é", "\xff",
    "\r\n", "\n", "\r", "\x00", "(" * 70, ")" * 70,
]  # fmt: skip


def check_error(exc: ParseError) -> None:
    response = exc.response()
    assert response.endswith(b"\r\n") and response.count(b"\n") == 1
    assert response.startswith(f"{exc.tag or '*'} {exc.status}".encode())
    if exc.status == "NO":
        # RFC 6855 §3 / 5182, RFC 7888 §4, RFC 6154 §5.1
        assert (exc.code or "").startswith(("BADCHARSET", "TOOBIG", "USEATTR")), exc.code
    else:
        assert exc.status == "BAD"


def check_parse(data: bytes, **limits: int) -> None:
    for utf8 in (False, True):
        try:
            command = wire.parse(data, utf8=utf8, utf8_accept=utf8, **limits)
        except ParseError as exc:
            check_error(exc)
            continue
        assert command.tag and command.name == command.name.upper()
        assert command.name in wire.COMMANDS
        assert not command.uid or command.name in wire.UID_COMMANDS


@pytest.mark.parametrize("data", COMMANDS, ids=seed_ids(COMMANDS))
def test_command_seeds(data: bytes) -> None:
    check_parse(data)


def test_seeds_of_every_command() -> None:
    """The corpus names every command the parser knows (so each grammar has seeds)."""
    named = set()
    for line in COMMANDS:
        words = line.decode("utf-8", "replace").split(" ")
        named.add(words[2] if words[1:2] == ["UID"] and len(words) > 2 else words[1])
    assert set(wire.COMMANDS) <= named


@TARGET
@given(mutants(COMMANDS, TOKENS))
def test_commands(data: bytes) -> None:
    check_parse(data)


@TARGET
@given(mutants(COMMANDS, TOKENS))
def test_commands_under_small_limits(data: bytes) -> None:
    check_parse(data, max_line=80, max_literal=40, max_command=200)


def frame(chunks: list[bytes]) -> list[wire.Event]:
    reader = wire.CommandReader(max_line=120, max_literal=300)
    events: list[wire.Event] = []
    for chunk in chunks:
        events += reader.feed(chunk)
    return events


@TARGET
@given(st.lists(mutants(COMMANDS, TOKENS), min_size=1, max_size=4), st.data())
def test_framing_cuts_anywhere(commands: list[bytes], data: st.DataObject) -> None:
    stream = b"\r\n".join(commands)
    events = frame(cut(stream, data))
    assert events == frame([stream])
    for event in events:
        if isinstance(event, RawCommand):
            assert len(event.literals) in (len(event.lines) - 1, len(event.lines))
            assert all(len(lit) <= 300 for lit in event.literals)
            assert all(len(line) <= 120 for line in event.lines)
            try:
                wire.parse_command(event)
            except ParseError as exc:
                check_error(exc)
        elif isinstance(event, Rejected):
            assert event.response().endswith(b"\r\n")


# -- sequence sets ---------------------------------------------------------------


def seqset_text(seqset: SequenceSet) -> str:
    if seqset.saved:
        return "$"
    def end(n: int | None) -> str:
        return "*" if n is None else str(n)

    return ",".join(end(lo) if lo == hi else f"{end(lo)}:{end(hi)}" for lo, hi in seqset.ranges)


def check_seqset(data: bytes) -> None:
    try:
        seqset = wire.parse_sequence_set(data)
    except ValueError:
        return
    assert all(1 <= n <= wire.MAX_NUMBER for r in seqset.ranges for n in r if n is not None)
    assert wire.parse_sequence_set(seqset_text(seqset)) == seqset
    command = wire.parse(b"a UID FETCH " + data + b" FLAGS")
    assert command.args.seqset == seqset  # type: ignore[union-attr]


@pytest.mark.parametrize("data", SEQSETS, ids=seed_ids(SEQSETS))
def test_seqset_seeds(data: bytes) -> None:
    check_seqset(data)


@TARGET
@given(mutants(SEQSETS, ["1", "*", ":", ",", "$", "0", "4294967295", "9" * 30, "\xef\xbc\x91"]))
def test_sequence_sets(data: bytes) -> None:
    check_seqset(data)


@TARGET
@given(st.lists(st.tuples(st.integers(1, wire.MAX_NUMBER) | st.none(),
                          st.integers(1, wire.MAX_NUMBER) | st.none()), min_size=1, max_size=8))
def test_sequence_sets_round_trip(ranges: list[tuple[int | None, int | None]]) -> None:
    seqset = SequenceSet(tuple(ranges))
    assert wire.parse_sequence_set(seqset_text(seqset)) == seqset


@TARGET
@given(st.sets(st.integers(1, 3000), min_size=1, max_size=200))
def test_compact_sets_round_trip(numbers: set[int]) -> None:
    seqset = wire.parse_sequence_set(wire.compact_set(numbers))
    assert seqset.select(list(range(1, 3001))) == sorted(numbers)


# -- date-times ------------------------------------------------------------------


def check_date(data: bytes) -> None:
    try:
        when = wire.parse_date_time(data)
    except ValueError:
        return
    assert wire.parse_date_time(wire.internal_date(when)) == when
    # APPEND stores the instant; FETCH INTERNALDATE writes it back from there.
    stored = wire.parse_date_time(wire.internal_date(when.timestamp()))
    assert stored == when and stored.utcoffset() == timedelta(0)


@pytest.mark.parametrize("data", DATES, ids=seed_ids(DATES))
def test_date_seeds(data: bytes) -> None:
    check_date(data)


@TARGET
@given(mutants(DATES, ["-", " ", ":", "+", "0", "9", "Feb", '"']))
def test_date_times(data: bytes) -> None:
    check_date(data)


# -- serialisers -----------------------------------------------------------------


@TARGET
@given(st.binary(min_size=1, max_size=60).filter(lambda b: b"\x00" not in b),
       st.binary(max_size=1100).filter(lambda b: b"\x00" not in b))
def test_astrings_round_trip_through_login(user: bytes, password: bytes) -> None:
    """What the serialisers write (atom, quoted string or literal), the parser
    reads back unchanged."""
    command = wire.parse(b"a LOGIN " + wire.astring(user) + b" " + wire.astring(password) + b"\r\n")
    assert command.args == wire.Login(user.decode("utf-8", "surrogateescape"),
                                      password.decode("utf-8", "surrogateescape"))


@TARGET
@given(st.lists(st.sampled_from(["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft",
                                 "$Junk", "$Forwarded", "NonJunk", "a.b", "x_y"]), max_size=6))
def test_flag_lists_round_trip(flags: list[str]) -> None:
    command = wire.parse(b"a STORE 1 FLAGS " + wire.flag_list(flags))
    assert sorted(map(str.lower, command.args.flags)) == sorted(  # type: ignore[union-attr]
        {f.lower() for f in flags})


# -- FETCH attributes ------------------------------------------------------------

FETCH_PIECES = st.sampled_from([
    "FLAGS", "UID", "ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822", "RFC822.SIZE", "RFC822.HEADER",
    "RFC822.TEXT", "INTERNALDATE", "MODSEQ", "ALL", "FAST", "FULL", "BINARY.SIZE[1]",
    "BODY[]", "BODY.PEEK[", "BODY[", "BINARY[", "BINARY.PEEK[", "1", "2", "0", ".", "]",
    "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", " (", "FROM", "X-A", ")", "TEXT", "MIME",
    "<0.10>", "<5.0>", "<4294967295.1>", "<1>", " ", "(", "\"",
])  # fmt: skip


def fetch_att_text(att: wire.FetchAtt) -> str:
    """A parsed FETCH item written back (Section's own ``str``)."""
    name = att.name + (".PEEK" if att.peek and att.name in ("BODY", "BINARY") else "")
    if att.section is not None:
        name += f"[{att.section}]"
    if att.partial is not None:
        name += f"<{att.partial[0]}.{att.partial[1]}>"
    return name


@TARGET
@given(st.lists(FETCH_PIECES, min_size=1, max_size=12).map("".join))
def test_fetch_attributes_round_trip(atts: str) -> None:
    try:
        command = wire.parse(f"a FETCH 1:* ({atts})".encode())
    except ParseError as exc:
        check_error(exc)
        return
    parsed = command.args.atts  # type: ignore[union-attr]
    again = wire.parse(f"a FETCH 1:* ({' '.join(map(fetch_att_text, parsed))})".encode())
    assert again.args.atts == parsed  # type: ignore[union-attr]
    for att in parsed:
        if att.section is not None:
            assert all(n >= 1 for n in att.section.part)


def test_a_tag_longer_than_a_line_is_answered_untagged_however_it_arrives() -> None:
    """Found by test_framing_cuts_anywhere: a tag longer than the line limit
    was cut short in the BAD when the line arrived in pieces."""
    line = b"a" * 130 + b" CAPABILITY\r\n"
    assert frame([line]) == frame([line[:121], line[121:]]) == [
        Rejected(None, "Command line too long (at most 120 octets)")]
