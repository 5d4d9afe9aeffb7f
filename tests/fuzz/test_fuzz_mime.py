"""Fuzz targets for ``waypost/mime.py``: the message scanner (multipart,
encapsulated messages, the header-end finder, header fields), parameters
(RFC 2231), addresses, encoded words (RFC 2047) and the decoders.

Properties: :func:`mime.parse` never raises; every part lies inside its
parent and after its elder sibling, headers before bodies; the JSON cache
round-trips; every part is found again by its section number; the header
end agrees with a plain line-by-line oracle; the ENVELOPE and BODYSTRUCTURE
the IMAP serialisers write from the parse are read back by an independent
parser (IMAPClient's) with the same values; the decoders never raise.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from imapclient.response_parser import parse_fetch_response
from tests.support.fuzz import TARGET, mutants, seed_ids, seeds, text_mutants

from waypost import mime
from waypost.protocols.imap import wire

MESSAGES = seeds("mime")
TOKENS = [
    "\r\n", "\n", "\r\n\r\n", "--", "--b", "--b--", "--X", "--outer\r\n", "--inner--", ";", ":",
    "=", '"', "(", ")", "<", ">", "@", ",", "\\", " ", "\t", "=?", "?=", "=?utf-8?B?", "=?x?Q?",
    "Content-Type: ", "multipart/mixed; boundary=b", "message/rfc822", "multipart/digest",
    "boundary=", "charset=", "name*0*=", "name*1=", "''%E2%82", "Content-Transfer-Encoding: ",
    "base64", "quoted-printable", "From: ", "To: ", "Subject: ", "Group:", "\x00", "\xff", "é",
]  # fmt: skip


def sections(part: mime.Part, prefix: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...],
                                                                            mime.Part]]:
    """(section number, part) of every part below a message root."""
    kids = part.parts if part.is_multipart else [part] if not prefix else []
    for n, kid in enumerate(kids, 1):
        path = (*prefix, n)
        yield path, kid
        if kid.message is not None:
            yield from sections(kid.message, path)
        elif kid.is_multipart:
            yield from sections(kid, path)


def check_part(part: mime.Part, start: int, stop: int, depth: int) -> int:
    assert start <= part.header_start <= part.body_start <= part.end <= stop
    assert part.type == part.type.lower() and part.subtype == part.subtype.lower()
    assert part.lines >= 0 and depth <= mime.MAX_DEPTH + 1
    count = 1
    previous = part.body_start
    for child in part.parts:
        assert child.header_start >= previous
        count += check_part(child, part.body_start, part.end, depth + 1)
        previous = child.end
    if part.message is not None:
        assert part.message.header_start == part.body_start and part.message.envelope
        count += check_part(part.message, part.body_start, part.end, depth + 1)
    if part.is_multipart:
        assert part.parts, "BODYSTRUCTURE needs one part at least"
    return count


def literal_split(data: bytes) -> list[bytes | tuple[bytes, bytes]]:
    """An IMAP response in imaplib's form: literals as (head, literal) pairs."""
    out: list[bytes | tuple[bytes, bytes]] = []
    pos = 0
    for _ in range(len(data)):
        m = re.compile(rb"\{(\d+)\}\r\n").search(data, pos)
        if m is None:
            break
        size = int(m.group(1))
        out.append((data[pos : m.start()] + b"{%d}" % size, data[m.end() : m.end() + size]))
        pos = m.end() + size
    out.append(data[pos:])
    return out


def addresses(value: tuple[mime.Address, ...] | None) -> object:
    if value is None:
        return None
    return tuple(tuple(None if x is None else mime.raw(x) for x in a) for a in value)


def check_imap_view(parsed: mime.ParsedMessage) -> None:
    # Without the date: IMAPClient turns it into a datetime and itself raises
    # OverflowError on a year past 9999 (RFC 3501 has the server send it raw).
    env = dataclasses.replace(parsed.envelope, date=None)
    response = (b"1 (ENVELOPE " + wire.envelope(env) + b" BODYSTRUCTURE "
                + wire.body_structure(parsed.root) + b")")
    fetched = parse_fetch_response(literal_split(response), uid_is_key=False)[1]
    theirs = fetched[b"ENVELOPE"]
    raw = None if env.subject is None else mime.raw(env.subject)
    assert theirs.subject == raw
    assert theirs.message_id == (None if env.message_id is None else mime.raw(env.message_id))
    for name in ("from_", "sender", "reply_to", "to", "cc", "bcc"):
        got = getattr(theirs, name)
        got = None if got is None else tuple((a.name, a.route, a.mailbox, a.host) for a in got)
        want = addresses(getattr(env, name))
        # RFC 3501 §7.4.2: sender and reply-to default to from.
        if name in ("sender", "reply_to") and want is None:
            want = addresses(env.from_)
        assert got == want, name
    structure = fetched[b"BODYSTRUCTURE"]
    if parsed.root.is_multipart:
        assert structure.is_multipart and len(structure[0]) == len(parsed.root.parts)
    else:
        assert structure[0].decode().lower() == parsed.root.type


def check_message(data: bytes) -> None:
    parsed = mime.parse(data)
    assert parsed.size == len(data) and parsed.root.header_start == 0
    count = check_part(parsed.root, 0, len(data), 0)
    assert count <= mime.MAX_PARTS + mime.MAX_DEPTH + 2
    assert mime.ParsedMessage.from_json(parsed.to_json()) == parsed
    for path, part in sections(parsed.root):
        assert parsed.find(path) is part
    check_imap_view(parsed)
    for part in parsed.root.walk():
        mime.part_text(data, part)
        mime.header_fields(data, part.header_start, part.body_start)
    list(mime.iter_text(data, parsed.root))
    mime.decode_header(data[: parsed.root.body_start])


@pytest.mark.parametrize("data", MESSAGES, ids=seed_ids(MESSAGES))
def test_message_seeds(data: bytes) -> None:
    check_message(data)


@TARGET
@given(mutants(MESSAGES, TOKENS, most=8))
def test_messages(data: bytes) -> None:
    check_message(data)


# -- the header end --------------------------------------------------------------


def header_end_oracle(data: bytes, start: int, end: int) -> int | None:
    """The first empty line, looked for line by line."""
    pos = start
    for _ in range(end - start + 1):
        if data.startswith(b"\r\n", pos, end):
            return pos + 2
        if data.startswith(b"\n", pos, end):
            return pos + 1
        newline = data.find(b"\n", pos, end)
        if newline < 0:
            return None
        pos = newline + 1
    return None


@TARGET
@given(mutants(MESSAGES, ["\r\n", "\n", "\r", "\r\n\r\n", "\n\n", "\n\r\n", "\r\r\n"]), st.data())
def test_header_end_agrees_with_the_oracle(data: bytes, draw: st.DataObject) -> None:
    start = draw.draw(st.integers(0, len(data)))
    end = draw.draw(st.integers(start, len(data)))
    assert mime.find_header_end(data, start, end) == header_end_oracle(data, start, end)
    found = mime.header_end(data, start, end)
    fields = mime.header_fields(data, start, found)
    assert all(start <= f.start <= f.value_start <= f.end <= found for f in fields)
    assert all(a.end <= b.start for a, b in itertools.pairwise(fields))


# -- header values ---------------------------------------------------------------

HEADER_VALUES = [line for data in MESSAGES for line in
                 data.decode("utf-8", "surrogateescape").splitlines()
                 if ":" in line][:400]


@TARGET
@given(text_mutants(HEADER_VALUES, TOKENS, errors="surrogateescape"))
def test_header_values(value: str) -> None:
    """Every value parser takes any text (surrogates for 8-bit bytes, as the
    scanner hands them on) without raising."""
    value = value.partition(":")[2] or value
    ctype = mime.parse_content_type(value)
    if ctype is not None:
        assert ctype[0] == ctype[0].lower() and ctype[1] == ctype[1].lower()
    mime.parse_disposition(value)
    mime.parse_language(value)
    for name, _ in mime.parse_params(value):
        assert name and "=" not in name
    parsed = mime.parse_addresses(value)
    if parsed is not None:
        depth = 0
        for address in parsed:
            assert len(address) == 4
            if address[2] is not None and address[3] is None:
                depth += 1
            elif address == (None, None, None, None):
                depth -= 1
            assert depth in (0, 1)
        assert depth == 0
    assert isinstance(mime.decode_header(value), str)


@TARGET
@given(st.text(max_size=40), st.sampled_from(["utf-8", "iso-8859-1", "koi8-r", "utf-16",
                                              "shift_jis", "bogus", "base64", "rot13"]),
       st.sampled_from(["B", "Q"]))
def test_encoded_words_decode(text: str, charset: str, kind: str) -> None:
    """A word encoded in a real charset decodes back to the text; junk
    charsets and payloads still give text."""
    try:
        octets = text.encode(charset)
    except (LookupError, UnicodeError):
        octets = text.encode("utf-8")
    if kind == "B":
        payload = base64.b64encode(octets).decode()
    else:
        payload = "".join(chr(b) if chr(b).isalnum() and b < 128 else f"={b:02X}" for b in octets)
    decoded = mime.decode_header(f"=?{charset}?{kind}?{payload}?=")
    if charset in ("utf-8", "iso-8859-1", "koi8-r", "utf-16", "shift_jis") and \
            octets.decode(charset, "replace") == text:
        assert decoded == text
