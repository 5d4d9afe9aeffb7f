"""FETCH responses on bytes: sections cut exactly, structures well-formed.

Every response is read back twice: by the small strict reader below (which
also checks BODYSTRUCTURE against the RFC 3501 grammar) and by imapclient's
response parser, as a real client would.
"""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from imapclient.response_parser import parse_fetch_response
from tests.support.messages import ALTERNATIVE, MIXED, NESTED, PLAIN, crlf

from waypost import mime
from waypost.protocols.imap import fetch, wire
from waypost.protocols.imap.fetch import FetchMessage

# -- a strict reader of FETCH responses ----------------------------------------------


class Atom(str):
    pass


def read_response(data: bytes) -> tuple[int, list[Any]]:
    """``* n FETCH (...)\\r\\n`` -> (n, items); strings are bytes, atoms Atom,
    NIL None, numbers int. Raises AssertionError on anything malformed."""
    m = re.match(rb"\* (\d+) FETCH ", data)
    assert m, data[:40]
    assert data.endswith(b"\r\n")
    value, pos = _value(data, m.end())
    assert pos == len(data) - 2, f"trailing data at {pos}: {data[pos : pos + 20]!r}"
    assert isinstance(value, list)
    return int(m.group(1)), value


def _value(data: bytes, pos: int) -> tuple[Any, int]:
    c = data[pos : pos + 1]
    if c == b"(":
        items: list[Any] = []
        pos += 1
        while data[pos : pos + 1] != b")":
            assert pos < len(data), "unbalanced parentheses"
            if items:
                assert data[pos : pos + 1] == b" " or isinstance(items[-1], list), (
                    f"missing space at {pos}"
                )
                if data[pos : pos + 1] == b" ":
                    pos += 1
            value, pos = _value(data, pos)
            items.append(value)
        return items, pos + 1
    if c == b'"':
        m = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"').match(data, pos)
        assert m, f"bad quoted string at {pos}"
        return re.sub(rb"\\(.)", rb"\1", m.group(1)), m.end()
    m = re.compile(rb"~?\{(\d+)\}\r\n").match(data, pos)
    if m:
        end = m.end() + int(m.group(1))
        assert end <= len(data)
        return data[m.end() : end], end
    m = re.compile(rb"\d+(?=[ )])").match(data, pos)
    if m:
        return int(m.group()), m.end()
    m = re.compile(rb"NIL(?=[ )])").match(data, pos)
    if m:
        return None, m.end()
    m = re.compile(rb"\\?[A-Za-z0-9.$_-]+(\[[^\]]*\])?(<\d+>)?").match(data, pos)
    assert m and m.group(), f"unexpected {data[pos : pos + 20]!r}"
    return Atom(m.group().decode()), m.end()


def items_dict(data: bytes) -> dict[str, Any]:
    _, items = read_response(data)
    assert len(items) % 2 == 0
    out = {}
    for i in range(0, len(items), 2):
        assert isinstance(items[i], Atom)
        out[str(items[i])] = items[i + 1]
    return out


def nstr(v: Any) -> bool:
    return v is None or isinstance(v, bytes)


def check_params(v: Any) -> None:
    assert v is None or (
        isinstance(v, list) and len(v) % 2 == 0 and v and all(isinstance(x, bytes) for x in v)
    )


def check_address_list(v: Any) -> None:
    assert v is None or isinstance(v, list)
    for a in v or ():
        assert isinstance(a, list) and len(a) == 4 and all(nstr(x) for x in a)


def check_envelope(env: Any) -> None:
    assert isinstance(env, list) and len(env) == 10
    assert nstr(env[0]) and nstr(env[1]) and nstr(env[8]) and nstr(env[9])
    for i in range(2, 8):
        check_address_list(env[i])


def check_ext(rest: list[Any], first_is_params: bool) -> None:
    assert len(rest) == 4, rest
    if first_is_params:
        check_params(rest[0])
    else:
        assert nstr(rest[0])
    dsp = rest[1]
    assert dsp is None or (isinstance(dsp, list) and len(dsp) == 2 and isinstance(dsp[0], bytes))
    if dsp is not None:
        check_params(dsp[1])
    assert nstr(rest[2]) or (
        isinstance(rest[2], list) and all(isinstance(x, bytes) for x in rest[2])
    )
    assert nstr(rest[3])


def check_body(b: Any, ext: bool) -> None:
    """RFC 3501 ``body`` grammar (BODYSTRUCTURE when ``ext``, else BODY)."""
    assert isinstance(b, list) and b
    if isinstance(b[0], list):
        i = 0
        while isinstance(b[i], list):
            check_body(b[i], ext)
            i += 1
        assert isinstance(b[i], bytes)
        rest = b[i + 1 :]
        if ext:
            check_ext(rest, True)
        else:
            assert rest == []
        return
    assert all(isinstance(x, bytes) for x in (b[0], b[1], b[5])), b
    check_params(b[2])
    assert nstr(b[3]) and nstr(b[4]) and isinstance(b[6], int)
    rest = b[7:]
    if (b[0].upper(), b[1].upper()) == (b"MESSAGE", b"RFC822"):
        check_envelope(rest[0])
        check_body(rest[1], ext)
        assert isinstance(rest[2], int)
        rest = rest[3:]
    elif b[0].upper() == b"TEXT":
        assert isinstance(rest[0], int)
        rest = rest[1:]
    if ext:
        check_ext(rest, False)
    else:
        assert rest == []


def imapclient_parse(data: bytes) -> dict[bytes, Any]:
    """Feed a response to imapclient as imaplib would hand it over."""
    text = re.sub(rb"^\* (\d+) FETCH ", rb"\1 ", data[:-2])
    records: list[Any] = []
    while True:
        m = re.search(rb"~?\{(\d+)\}\r\n", text)
        if m is None:
            records.append(text)
            break
        end = m.end() + int(m.group(1))
        records.append((text[: m.end() - 2], text[m.end() : end]))
        text = text[end:]
    parsed = parse_fetch_response(records, uid_is_key=False)
    (value,) = parsed.values()
    return value


def structure_ok(data: bytes) -> None:
    """Both readers accept BODYSTRUCTURE, BODY and ENVELOPE of a response."""
    items = items_dict(data)
    if "BODYSTRUCTURE" in items:
        check_body(items["BODYSTRUCTURE"], True)
    if "BODY" in items:
        check_body(items["BODY"], False)
    if "ENVELOPE" in items:
        check_envelope(items["ENVELOPE"])
    imapclient_parse(data)


# -- helpers ---------------------------------------------------------------------------

WHEN = datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(timedelta(hours=-7)))


def atts(text: str) -> tuple[wire.FetchAtt, ...]:
    return wire.parse(b"a FETCH 1 " + text.encode()).args.atts


def msg_of(raw: bytes, flags: tuple[str, ...] = (), *, parsed: bool = True) -> FetchMessage:
    return FetchMessage(3, 42, flags, WHEN, len(raw), raw, mime.parse(raw) if parsed else None)


def do(raw: bytes, text: str, **kw: Any) -> bytes:
    return fetch.fetch(atts(text), msg_of(raw, kw.pop("flags", ())), **kw).response


# -- plan ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "raw", "header_only", "parsed", "seen"),
    [
        ("(UID FLAGS RFC822.SIZE INTERNALDATE)", False, False, False, False),
        ("(ENVELOPE BODYSTRUCTURE)", False, False, True, False),
        ("BODY", False, False, True, False),
        ("BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]", True, True, False, False),
        ("(RFC822.HEADER BODY.PEEK[HEADER])", True, True, False, False),
        ("BODY[HEADER]", True, True, False, True),
        ("BODY.PEEK[]", True, False, False, False),
        ("RFC822", True, False, False, True),
        ("RFC822.TEXT", True, False, False, True),
        ("BODY.PEEK[1.MIME]", True, False, True, False),
        ("BINARY.PEEK[1]", True, False, True, False),
        ("(ENVELOPE BODY.PEEK[HEADER] BODY[TEXT])", True, False, True, True),
    ],
)
def test_plan(text: str, raw: bool, header_only: bool, parsed: bool, seen: bool) -> None:
    assert fetch.plan(atts(text)) == fetch.FetchPlan(raw, header_only, parsed, seen)


def test_metadata_fetch_touches_no_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any, **__: Any) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(mime, "parse", boom)
    request = atts("(UID FLAGS RFC822.SIZE)")
    out = [
        fetch.fetch(request, FetchMessage(n, n + 100, ("\\Seen",), 0.0, 1234)).response
        for n in range(1, 10001)
    ]
    assert out[0] == b"* 1 FETCH (UID 101 FLAGS (\\Seen) RFC822.SIZE 1234)\r\n"
    assert len(out) == 10000


def test_missing_message_bytes_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        fetch.fetch(atts("BODY[]"), FetchMessage(1, 1, (), 0.0, 1))


# -- simple items ----------------------------------------------------------------------


def test_flags_uid_size_internaldate() -> None:
    out = do(PLAIN, "(FLAGS INTERNALDATE RFC822.SIZE UID)", flags=("\\Seen", "$Forwarded"))
    assert out == (
        b'* 3 FETCH (UID 42 FLAGS (\\Seen $Forwarded) INTERNALDATE "17-Jul-1996 02:44:25 -0700" '
        b"RFC822.SIZE %d)\r\n" % len(PLAIN)
    )
    assert imapclient_parse(out)[b"INTERNALDATE"] == datetime(1996, 7, 17, 9, 44, 25)


def test_uid_fetch_always_has_uid_first() -> None:
    assert do(PLAIN, "FLAGS", uid_command=True) == b"* 3 FETCH (UID 42 FLAGS ())\r\n"
    assert do(PLAIN, "(FLAGS UID)", uid_command=True) == b"* 3 FETCH (UID 42 FLAGS ())\r\n"


def test_envelope_of_rfc3501_example() -> None:
    out = do(PLAIN, "ENVELOPE")
    assert out == (
        b'* 3 FETCH (ENVELOPE ("Mon, 7 Feb 1994 21:52:25 -0800 (PST)" "afternoon meeting" '
        b'(("Fred Foobar" NIL "foobar" "Blurdybloop.COM")) (("Fred Foobar" NIL "foobar" "Blurdybloop.COM")) '
        b'(("Fred Foobar" NIL "foobar" "Blurdybloop.COM")) ((NIL NIL "mooch" "owatagu.siam.edu")) '
        b'NIL NIL NIL "<B27397-0100000@Blurdybloop.COM>"))\r\n'
    )
    env = imapclient_parse(out)[b"ENVELOPE"]
    assert env.subject == b"afternoon meeting" and env.from_[0].mailbox == b"foobar"


def test_envelope_keeps_encoded_words_raw_and_8bit_as_literal() -> None:
    raw = b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nFrom: J\xc3\xb6rg <j@x.de>\r\nTo: group: a@b.c, d@e.f;\r\n\r\nx"
    out = do(raw, "ENVELOPE")
    assert b'"=?utf-8?q?Gr=C3=BC=C3=9Fe?="' in out
    assert b"{5}\r\nJ\xc3\xb6rg" in out
    assert b'((NIL NIL "group" NIL)(NIL NIL "a" "b.c")(NIL NIL "d" "e.f")(NIL NIL NIL NIL))' in out
    structure_ok(out)
    env = imapclient_parse(out)[b"ENVELOPE"]
    assert env.from_[0].name == "Jörg".encode()
    assert env.to[0].mailbox == b"group" and env.to[0].host is None


def test_bodystructure_of_plain_message() -> None:
    out = do(PLAIN, "(BODYSTRUCTURE BODY)")
    assert out == (
        b'* 3 FETCH (BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 55 1 NIL NIL NIL NIL) '
        b'BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 55 1))\r\n'
    )
    structure_ok(out)


def test_bodystructure_of_multipart_alternative() -> None:
    out = do(ALTERNATIVE, "BODYSTRUCTURE")
    assert out == (
        b'* 3 FETCH (BODYSTRUCTURE (("TEXT" "PLAIN" ("charset" "utf-8") NIL NIL "QUOTED-PRINTABLE" 15 1 NIL NIL NIL NIL)'
        b'("TEXT" "HTML" ("charset" "utf-8") NIL NIL "7BIT" 14 1 NIL NIL NIL NIL) "ALTERNATIVE" ("boundary" "b1") NIL NIL NIL))\r\n'
    )
    structure_ok(out)
    body = imapclient_parse(out)[b"BODYSTRUCTURE"]
    assert body.is_multipart and body[1] == b"ALTERNATIVE"


def test_bodystructure_of_mixed_with_attachment() -> None:
    out = do(MIXED, "(BODYSTRUCTURE BODY)")
    structure_ok(out)
    items = items_dict(out)
    pdf = items["BODYSTRUCTURE"][1]
    assert pdf[:7] == [
        b"APPLICATION",
        b"PDF",
        [b"name", b"report.pdf"],
        b"<part2@example.com>",
        b"The report",
        b"BASE64",
        12,
    ]
    assert pdf[7:] == [
        b"Q2hlY2sgSW50ZWdyaXR5IQ==",
        [b"ATTACHMENT", [b"filename", b"report.pdf"]],
        [b"en", b"de"],
        b"http://example.com/report.pdf",
    ]
    assert items["BODY"][1] == pdf[:7]
    assert items["BODYSTRUCTURE"][2] == b"MIXED"


def test_bodystructure_of_nested_message() -> None:
    out = do(NESTED, "BODYSTRUCTURE")
    structure_ok(out)
    attached = items_dict(out)["BODYSTRUCTURE"][1]
    assert attached[:2] == [b"MESSAGE", b"RFC822"]
    envelope, inner, lines = attached[7:10]
    assert envelope[1] == b"inner subject"
    assert inner[-5] == b"MIXED" and len(inner) == 7
    part = mime.parse(NESTED).root.parts[1]
    assert lines == NESTED[part.body_start : part.end].count(b"\n") + 1  # the last line has no CRLF
    body = imapclient_parse(out)[b"BODYSTRUCTURE"]
    assert body[0][1][0] == b"MESSAGE"


BROKEN = [
    crlf("Content-Type: multipart/mixed; boundary=Z", "", "--Z", "", "one", "--Z", "", "two"),
    crlf("Content-Type: multipart/mixed; boundary=never", "", "text"),
    crlf("Content-Type: multipart/alternative", "", "no boundary"),
    crlf(
        "Content-Type: multipart/mixed; boundary=o",
        "",
        "--o",
        "Content-Type: multipart/mixed; boundary=i",
        "",
        "--i",
        "",
        "x",
        "--o--",
    ),
    crlf("Content-Type: message/rfc822", "", "garbage without header end"),
    crlf(
        "Content-Type: message/rfc822",
        "Content-Transfer-Encoding: base64",
        "",
        "U3ViamVjdDogeA0KDQp4",
    ),
    crlf(
        "Content-Type: ???",
        "Content-Transfer-Encoding: x-unknown",
        "Content-Disposition: ;;;",
        "Content-Language: ,",
        "",
        "x",
    ),
    crlf(
        'Content-Type: text/plain; charset="unterminated',
        'Content-Disposition: attachment; filename="a\\"b\r\nc"',
        "",
        "x",
    ),
    b"\xff\xfe\x00garbage\r\n\r\n\x00\x01",
    b"",
    b"Subject: \xff\r\n\r\n",
    MIXED.replace(b"\r\n", b"\n"),
]


@pytest.mark.parametrize("raw", BROKEN)
def test_broken_messages_still_fetch_well_formed(raw: bytes) -> None:
    out = do(
        raw,
        "(ENVELOPE BODYSTRUCTURE BODY BODY.PEEK[] BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[TEXT])",
    )
    structure_ok(out)
    # NUL is not a CHAR8: a literal carries it as 0x80 (RFC 3501 §4.3; BINARY sends it as is)
    assert items_dict(out)["BODY[]"] == raw.replace(b"\0", b"\x80")


def test_fuzzed_messages_give_well_formed_structures() -> None:
    rng = random.Random(9051)
    seeds = [PLAIN, ALTERNATIVE, MIXED, NESTED, *BROKEN]
    noise = [
        b"\r\n",
        b"--",
        b'"',
        b"(",
        b")",
        b"{5}\r\n",
        b"\\",
        b";",
        b"=?",
        b"\xff",
        b"\x00",
        b"boundary=",
        b"message/rfc822",
        b"\r\n\r\n",
    ]
    request = atts("(ENVELOPE BODYSTRUCTURE BODY)")
    for _ in range(150):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            pos = rng.randint(0, len(raw))
            if rng.random() < 0.5:
                raw[pos:pos] = rng.choice(noise)
            else:
                del raw[pos : pos + rng.randint(1, 10)]
        data = bytes(raw)
        structure_ok(fetch.fetch(request, msg_of(data)).response)


# -- sections --------------------------------------------------------------------------


def test_body_sections_of_nested_message() -> None:
    p = mime.parse(NESTED)
    attached = p.root.parts[1]
    out = items_dict(
        do(
            NESTED,
            "(BODY.PEEK[2.MIME] BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[2.1] BODY.PEEK[2.2.MIME] BODY.PEEK[2])",
        )
    )
    assert out["BODY[2.MIME]"] == b"Content-Type: message/rfc822\r\n\r\n"
    assert (
        out["BODY[2.HEADER]"]
        == b"From: Inner <inner@example.com>\r\nSubject: inner subject\r\nContent-Type: multipart/mixed; boundary=Y\r\n\r\n"
    )
    assert out["BODY[2.TEXT]"].startswith(b"--Y\r\n") and out["BODY[2.TEXT]"].endswith(b"--Y--")
    assert out["BODY[2.1]"] == b"inner one"
    assert out["BODY[2.2.MIME]"] == b"Content-Type: text/plain\r\n\r\n"
    assert out["BODY[2]"] == NESTED[attached.body_start : attached.end]


def test_header_fields_and_not() -> None:
    raw = b"From: a@b.c\r\nReceived: x\r\n  y\r\nSubject: hi\r\nreceived: z\r\n\r\nbody"
    out = items_dict(
        do(
            raw,
            "(BODY.PEEK[HEADER.FIELDS (SUBJECT from)] BODY.PEEK[HEADER.FIELDS.NOT (Received)] BODY.PEEK[HEADER] BODY.PEEK[TEXT])",
        )
    )
    assert out["BODY[HEADER.FIELDS (SUBJECT FROM)]"] == b"From: a@b.c\r\nSubject: hi\r\n\r\n"
    assert out["BODY[HEADER.FIELDS.NOT (RECEIVED)]"] == b"From: a@b.c\r\nSubject: hi\r\n\r\n"
    assert out["BODY[HEADER]"] == raw[: raw.index(b"body")]
    assert out["BODY[TEXT]"] == b"body"
    nothing = items_dict(do(raw, "BODY.PEEK[HEADER.FIELDS (X-NONE)]"))
    assert nothing["BODY[HEADER.FIELDS (X-NONE)]"] == b"\r\n"


def test_header_sections_from_the_header_alone() -> None:
    """plan().header_only: the session may hand over just the header bytes, no parse."""
    header = PLAIN[: mime.header_end(PLAIN)]
    request = atts("(BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.HEADER)")
    assert fetch.plan(request).header_only
    out = fetch.fetch(request, FetchMessage(1, 1, (), 0.0, len(PLAIN), header)).response
    items = items_dict(out)
    assert items["BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: afternoon meeting\r\n\r\n"
    assert items["RFC822.HEADER"] == header


def test_missing_sections_are_nil() -> None:
    out = do(
        ALTERNATIVE,
        "(BODY.PEEK[3] BODY.PEEK[1.1] BODY.PEEK[1.HEADER] BODY.PEEK[1.TEXT] BODY.PEEK[3.MIME])",
    )
    assert (
        out
        == b"* 3 FETCH (BODY[3] NIL BODY[1.1] NIL BODY[1.HEADER] NIL BODY[1.TEXT] NIL BODY[3.MIME] NIL)\r\n"
    )
    imapclient_parse(out)


def test_single_part_message_is_part_one() -> None:
    out = items_dict(do(PLAIN, "(BODY.PEEK[1] BODY.PEEK[1.MIME])"))
    assert out["BODY[1]"] == PLAIN[mime.header_end(PLAIN) :]
    assert out["BODY[1.MIME]"] == PLAIN[: mime.header_end(PLAIN)]


def test_partial() -> None:
    out = do(PLAIN, "(BODY.PEEK[]<0.10> BODY.PEEK[TEXT]<6.3> BODY.PEEK[]<100000.5>)")
    assert (
        out
        == b"* 3 FETCH (BODY[]<0> {10}\r\n"
        + PLAIN[:10]
        + b" BODY[TEXT]<6> {3}\r\nJoe BODY[]<100000> {0}\r\n)\r\n"
    )
    parsed = imapclient_parse(out)
    assert parsed[b"BODY[]<0>"] == PLAIN[:10]


def test_rfc822_items() -> None:
    end = mime.header_end(PLAIN)
    out = items_dict(do(PLAIN, "(RFC822 RFC822.HEADER RFC822.TEXT)"))
    assert out == {
        "RFC822": PLAIN,
        "RFC822.HEADER": PLAIN[:end],
        "RFC822.TEXT": PLAIN[end:],
        "FLAGS": [Atom("\\Seen")],
    }


# -- \Seen -----------------------------------------------------------------------------


def test_body_sets_seen_and_reports_flags() -> None:
    result = fetch.fetch(atts("BODY[TEXT]"), msg_of(PLAIN, ("$Label",)))
    assert result.seen
    assert result.response.endswith(b" FLAGS ($Label \\Seen))\r\n")
    result = fetch.fetch(atts("(FLAGS BODY[])"), msg_of(PLAIN))
    assert result.seen and result.response.startswith(b"* 3 FETCH (FLAGS (\\Seen) BODY[] ")
    assert result.response.count(b"FLAGS") == 1


@pytest.mark.parametrize(
    "text",
    ["BODY.PEEK[]", "RFC822.HEADER", "BODY.PEEK[TEXT]", "BINARY.PEEK[1]", "(ENVELOPE FLAGS)"],
)
def test_peek_does_not_set_seen(text: str) -> None:
    assert not fetch.fetch(atts(text), msg_of(PLAIN)).seen


@pytest.mark.parametrize("text", ["BODY[]", "RFC822", "RFC822.TEXT", "BODY[1.MIME]", "BINARY[1]"])
def test_these_set_seen(text: str) -> None:
    assert fetch.fetch(atts(text), msg_of(PLAIN)).seen
    assert not fetch.fetch(atts(text), msg_of(PLAIN, ("\\seen",))).seen  # already seen
    assert not fetch.fetch(
        atts(text), msg_of(PLAIN), can_set_seen=False
    ).seen  # EXAMINE, no "s" right


# -- BINARY ----------------------------------------------------------------------------


def test_binary_decodes_transfer_encoding() -> None:
    out = items_dict(
        do(MIXED, "(BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[1.1] BINARY.PEEK[2]<1.3>)")
    )
    assert out["BINARY[2]"] == b"%PDF-1.4\n"
    assert out["BINARY.SIZE[2]"] == 9
    assert out["BINARY[1.1]"] == b"plain text"
    assert out["BINARY[2]<1>"] == b"PDF"
    raw = crlf("Content-Transfer-Encoding: base64", "", "AAEC")
    assert do(raw, "BINARY.PEEK[1]") == b"* 3 FETCH (BINARY[1] ~{3}\r\n\x00\x01\x02)\r\n"


def test_binary_of_unknown_encoding_is_refused() -> None:
    raw = crlf("Content-Transfer-Encoding: x-uuencode", "", "begin 644 x")
    with pytest.raises(fetch.FetchError) as info:
        do(raw, "BINARY.PEEK[1]")
    assert info.value.code == "UNKNOWN-CTE"


def test_header_fields_of_a_hostile_header() -> None:
    raw = b"X-Junk: 1\r\n" * 50_000 + b"Subject: found\r\nX-Tail: t\r\n\r\nbody"
    request = atts("(BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[HEADER.FIELDS.NOT (X-JUNK)])")
    out = items_dict(fetch.fetch(request, FetchMessage(1, 1, (), 0.0, len(raw), raw)).response)
    assert out["BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: found\r\n\r\n"
    assert out["BODY[HEADER.FIELDS.NOT (X-JUNK)]"] == b"Subject: found\r\nX-Tail: t\r\n\r\n"
