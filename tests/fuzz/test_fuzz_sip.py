"""Fuzz targets for the SIP wire (``protocols/sip/wire.py`` with its
``headers``, ``uri`` and ``syntax`` modules): datagrams, streams, URIs and
name-addrs (seeds in ``corpus/sip``).

Properties: any input parses or is refused with :class:`SipError`, never
another exception, and the refusal is one the RFC names (400, 413, 416,
505, 513) or a silent drop; the typed views of what parses (Via, To, From,
CSeq, Contact, Route, Expires, the stamped Via) also raise nothing else; what parses
re-serialises to bytes that parse to an equal message (and a refusal's
answer does too); a stream cut anywhere frames the same messages,
keep-alives and errors as the stream whole; a URI or name-addr that parses
prints back to one that parses equal.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.fuzz import TARGET, cut, mutants, seed_ids, seeds

from waypost.protocols.sip.headers import parse_name_addr, parse_via
from waypost.protocols.sip.syntax import SipError
from waypost.protocols.sip.uri import SipUri, parse_uri
from waypost.protocols.sip.wire import (
    KeepAlive,
    SipLimits,
    SipMessage,
    StreamFramer,
    error_response,
    parse_message,
)

MESSAGES = seeds("sip/messages")
URIS = seeds("sip/uris.lines")
TOKENS = ["\r\n", "\r\n\r\n", "\r\n ", " ", "\t", ":", ";", ",", "=", '"', "\\", "<", ">", "@",
          "[", "]", "%", "%00", "/", "?", "&", "SIP/2.0", "SIP/2.0/UDP ", "sip:", "sips:",
          "tel:", "Via: ", "v: ", "To: ", "t: ", "From: ", "Call-ID: ", "CSeq: 1 INVITE",
          "Max-Forwards: 70", "Content-Length: ", "l: 0", "Contact: *", "m: ", ";tag=",
          ";branch=z9hG4bK", ";rport", ";received=", ";lr", "[2001:db8::1]", "0", "99999999999",
          "\x00", "\xff", "é", "x" * 300]
LINE_TOKENS = [t for t in TOKENS if "\r" not in t and "\n" not in t]


@st.composite
def header_mutants(draw: st.DrawFn) -> bytes:
    """A seed message with a few of its lines mutated, dropped, repeated or
    swapped, the header section still ending in CRLFCRLF (most random bytes
    never get that far)."""
    seed = draw(st.sampled_from(MESSAGES))
    head, _, body = seed.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(lines) - 1))
        op = draw(st.integers(0, 3))
        if op == 0:
            lines[at] = draw(mutants([lines[at]], LINE_TOKENS, most=3))
        elif op == 1 and len(lines) > 1:
            del lines[at]
        elif op == 2:
            lines.insert(at, lines[at])
        else:
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
    return b"\r\n".join(lines) + b"\r\n\r\n" + draw(st.sampled_from([body, b"", body[:3]]))


PORT_ZEROS = re.compile(r"^(sips?:(?:[^@]*@)?(?:\[[^\]]*\]|[^:;?]*):)0+(?=[0-9])")
LIMITS = SipLimits(max_header_bytes=2048, max_headers=40, max_body_bytes=1024)
ANSWERS = {400, 413, 416, 505, 513}


def check_error(error: SipError) -> None:
    assert error.drop or error.status in ANSWERS
    assert "\r" not in error.reason and "\n" not in error.reason
    answer = error_response(error)
    if answer is not None:  # built from what was read: the request's Vias, in order
        assert error.headers is not None and answer.status == error.status
        assert answer.headers.fields("Via") == error.headers.fields("Via")
        try:
            parse_message(answer.to_bytes())
        except SipError as exc:
            assert exc.drop


def read_views(message: SipMessage) -> None:
    """Every typed view raises a SipError or nothing."""
    views = (lambda: message.vias, lambda: message.to, lambda: message.from_,
             lambda: message.cseq, lambda: message.call_id, lambda: message.max_forwards,
             lambda: message.expires, lambda: message.name_addrs("Route"),
             lambda: [(c.q, c.expires) for c in message.contacts.addresses], lambda: stamp(message))
    for view in views:
        try:
            view()
        except SipError as exc:
            check_error(exc)


def stamp(message: SipMessage) -> None:
    """The Via a server stamps (§18.2.1, RFC 3581) parses back the same."""
    via = message.top_via.received_from("2001:db8::1", 5060)
    assert parse_via(str(via)) == via


def check_datagram(data: bytes) -> None:
    try:
        message = parse_message(data, limits=LIMITS)
    except SipError as exc:
        check_error(exc)
        return
    read_views(message)
    again = parse_message(message.to_bytes(), limits=LIMITS)
    assert again == message
    assert again.to_bytes() == message.to_bytes()


@pytest.mark.parametrize("data", MESSAGES, ids=seed_ids(MESSAGES))
def test_message_seeds(data: bytes) -> None:
    check_datagram(data)


@TARGET
@given(mutants(MESSAGES, TOKENS))
def test_datagrams(data: bytes) -> None:
    check_datagram(data)


@TARGET
@given(header_mutants())
def test_datagrams_with_mutated_header_lines(data: bytes) -> None:
    check_datagram(data)


def frame(chunks: list[bytes]) -> list[object]:
    framer = StreamFramer(LIMITS)
    events: list[object] = []
    for chunk in chunks:
        framer.feed(chunk)
        for _ in range(len(chunk) + 2):  # each event consumes at least one byte
            try:
                item = framer.next()
            except SipError as exc:
                check_error(exc)
                events.append((exc.status, exc.reason, exc.fatal))
                if exc.fatal:
                    return events
                continue
            if item is None:
                break
            events.append(item if isinstance(item, KeepAlive) else item.to_bytes())
        else:
            raise AssertionError("the framer returned more events than it had bytes")
    return events


@TARGET
@given(st.lists(st.one_of(mutants(MESSAGES, TOKENS), header_mutants()), min_size=1,
                max_size=4), st.data())
def test_streams_cut_anywhere(messages: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(messages)
    assert frame(cut(stream, data)) == frame([stream])


@pytest.mark.parametrize("data", MESSAGES, ids=seed_ids(MESSAGES))
def test_stream_seeds_cut_at_every_byte(data: bytes) -> None:
    whole = frame([data])
    assert frame([data[i : i + 1] for i in range(len(data))]) == whole


def check_uri(raw: bytes) -> None:
    text = raw.decode("utf-8", "replace")
    try:
        uri = parse_uri(text)
    except SipError as exc:
        check_error(exc)
    else:
        written = uri.scheme + text[len(uri.scheme) :]  # the scheme in lower case
        if isinstance(uri, SipUri):  # and the port without leading zeros
            written = PORT_ZEROS.sub(r"\1", written)
        assert str(uri) == written
        assert parse_uri(str(uri)) == uri and str(parse_uri(str(uri))) == str(uri)
    try:
        value = parse_name_addr(text, "Contact")
    except SipError as exc:
        check_error(exc)
    else:
        assert parse_name_addr(str(value), "Contact") == value
        assert str(parse_name_addr(str(value), "Contact")) == str(value)


@pytest.mark.parametrize("raw", URIS, ids=seed_ids(URIS))
def test_uri_seeds(raw: bytes) -> None:
    check_uri(raw)


@TARGET
@given(mutants(URIS, TOKENS))
def test_uris(raw: bytes) -> None:
    check_uri(raw)
