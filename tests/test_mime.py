"""mime.parse: the one parse of a message that IMAP, the web and rules share.

Every structure is checked against the exact bytes it points at, because
IMAP cuts sections straight out of the stored message.
"""

from __future__ import annotations

import json
import random

import pytest
from tests.support.messages import ALTERNATIVE, MIXED, NESTED, PLAIN, crlf

from waypost import mime


def body(msg: bytes, part: mime.Part) -> bytes:
    return msg[part.body_start : part.end]


def header(msg: bytes, part: mime.Part) -> bytes:
    return msg[part.header_start : part.body_start]


# -- structure ----------------------------------------------------------------


def test_plain_message() -> None:
    p = mime.parse(PLAIN)
    root = p.root
    assert (root.type, root.subtype) == ("text", "plain")
    assert root.params == (("CHARSET", "US-ASCII"),)
    assert header(PLAIN, root).endswith(
        b"MIME-Version: 1.0\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n"
    )
    assert body(PLAIN, root) == b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
    assert root.size == len(body(PLAIN, root))
    assert root.lines == 1
    env = p.envelope
    assert env.date == "Mon, 7 Feb 1994 21:52:25 -0800 (PST)"
    assert env.subject == "afternoon meeting"
    assert env.from_ == (("Fred Foobar", None, "foobar", "Blurdybloop.COM"),)
    # Sender and Reply-To default to From (RFC 3501 §7.4.2).
    assert env.sender == env.from_ and env.reply_to == env.from_
    assert env.to == ((None, None, "mooch", "owatagu.siam.edu"),)
    assert env.cc is None and env.bcc is None and env.in_reply_to is None
    assert env.message_id == "<B27397-0100000@Blurdybloop.COM>"
    assert p.find([1]) is root
    assert p.find([2]) is None and p.find([1, 1]) is None


def test_no_content_type_is_text_plain_us_ascii() -> None:
    msg = b"Subject: x\r\n\r\nbody\r\n"
    root = mime.parse(msg).root
    assert (root.type, root.subtype, root.params) == ("text", "plain", (("charset", "us-ascii"),))
    assert root.encoding is None


@pytest.mark.parametrize(
    "value",
    ["garbage", "text", "/plain", "text/", "text/pl ain; x", "(comment)", "", "ünï/cödé"],
)
def test_garbage_content_type_is_text_plain(value: str) -> None:
    msg = f"Content-Type: {value}\r\n\r\nbody".encode()
    root = mime.parse(msg).root
    assert (root.type, root.subtype) == ("text", "plain")
    assert root.lines == 1


def test_multipart_alternative() -> None:
    p = mime.parse(ALTERNATIVE)
    root = p.root
    assert (root.type, root.subtype) == ("multipart", "alternative")
    assert root.param("BOUNDARY") == "b1"
    one, two = root.parts
    assert (one.type, one.subtype, one.encoding) == ("text", "plain", "quoted-printable")
    assert (
        header(ALTERNATIVE, one)
        == b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    assert body(ALTERNATIVE, one) == b"Gr=C3=BC=C3=9Fe"  # the CRLF before "--b1" is the boundary's
    assert body(ALTERNATIVE, two) == "<p>Grüße</p>".encode()
    assert one.lines == 1 and two.size == len("<p>Grüße</p>".encode())
    assert mime.part_text(ALTERNATIVE, one) == "Grüße"
    assert p.find([1]) is one and p.find([2]) is two and p.find([3]) is None and p.find([0]) is None


def test_multipart_mixed_with_attachment() -> None:
    p = mime.parse(MIXED)
    alt, pdf = p.root.parts
    assert (alt.type, alt.subtype) == ("multipart", "alternative")
    assert [body(MIXED, x) for x in alt.parts] == [b"plain text", b"<b>html</b>"]
    assert (pdf.type, pdf.subtype) == ("application", "pdf")
    assert pdf.params == (("name", "report.pdf"),)
    assert pdf.encoding == "base64"
    assert pdf.disposition == ("attachment", (("filename", "report.pdf"),))
    assert pdf.id == "<part2@example.com>"
    assert pdf.description == "The report"
    assert pdf.language == ("en", "de")
    assert pdf.location == "http://example.com/report.pdf"
    assert pdf.md5 == "Q2hlY2sgSW50ZWdyaXR5IQ=="
    assert body(MIXED, pdf) == b"JVBERi0xLjQK"
    assert mime.part_content(MIXED, pdf) == b"%PDF-1.4\n"
    assert pdf.lines == 0  # lines only for text and message parts
    assert p.find([1, 2]) is alt.parts[1]
    assert p.find([1, 2, 1]) is None


def test_message_rfc822_nested() -> None:
    p = mime.parse(NESTED)
    text, attached = p.root.parts
    assert header(NESTED, text) == b"\r\n"  # a part without header fields
    assert (text.type, text.subtype) == ("text", "plain")
    assert (attached.type, attached.subtype) == ("message", "rfc822")
    inner = attached.message
    assert inner is not None and inner.header_start == attached.body_start
    assert inner.envelope is not None
    assert inner.envelope.subject == "inner subject"
    assert inner.envelope.from_ == (("Inner", None, "inner", "example.com"),)
    assert attached.lines == body(NESTED, attached).count(b"\n") + 1
    # Section numbers continue inside the attached message (RFC 3501 §6.4.5).
    assert p.find([2]) is attached
    assert p.find([2, 1]) is inner.parts[0]
    assert body(NESTED, p.find([2, 2])) == b"inner two"
    assert p.find([2, 3]) is None


def test_attached_single_part_message_is_its_own_part_one() -> None:
    msg = crlf(
        "Content-Type: multipart/mixed; boundary=B",
        "",
        "--B",
        "Content-Type: message/rfc822",
        "",
        "Subject: in",
        "",
        "inner body",
        "--B--",
        "",
    )
    p = mime.parse(msg)
    attached = p.find([1])
    assert attached is not None and attached.message is not None
    assert p.find([1, 1]) is attached.message
    assert body(msg, attached.message) == b"inner body"
    assert p.find([1, 1, 1]) is None


def test_digest_parts_default_to_message_rfc822() -> None:
    msg = crlf(
        "Content-Type: multipart/digest; boundary=D",
        "",
        "--D",
        "",
        "Subject: one",
        "",
        "first",
        "--D",
        "Content-Type: text/plain",
        "",
        "second",
        "--D--",
    )
    first, second = mime.parse(msg).root.parts
    assert (first.type, first.subtype) == ("message", "rfc822")
    assert first.message is not None and first.message.envelope is not None
    assert first.message.envelope.subject == "one"
    assert (second.type, second.subtype) == ("text", "plain")


# -- broken structure ----------------------------------------------------------


def test_missing_final_boundary() -> None:
    msg = crlf(
        "Content-Type: multipart/mixed; boundary=Z",
        "",
        "--Z",
        "",
        "one",
        "--Z",
        "",
        "two",
        "trailing",
    )
    parts = mime.parse(msg).root.parts
    assert [body(msg, x) for x in parts] == [b"one", b"two\r\ntrailing"]


def test_boundary_never_found_gives_one_synthetic_part() -> None:
    msg = crlf("Content-Type: multipart/mixed; boundary=nowhere", "", "just text", "more")
    root = mime.parse(msg).root
    assert root.type == "multipart"
    (only,) = root.parts
    assert (only.type, only.subtype) == ("text", "plain")
    assert only.header_start == only.body_start == root.body_start
    assert body(msg, only) == b"just text\r\nmore"
    assert only.lines == 2


@pytest.mark.parametrize(
    "ctype", ["multipart/mixed", 'multipart/mixed; boundary=""', "multipart/mixed; boundary"]
)
def test_multipart_without_boundary(ctype: str) -> None:
    msg = f"Content-Type: {ctype}\r\n\r\n--\r\nbody\r\n".encode()
    root = mime.parse(msg).root
    assert len(root.parts) == 1 and body(msg, root.parts[0]) == b"--\r\nbody\r\n"


def test_inner_multipart_without_close_ends_at_outer_boundary() -> None:
    msg = crlf(
        "Content-Type: multipart/mixed; boundary=outer",
        "",
        "--outer",
        "Content-Type: multipart/alternative; boundary=inner",
        "",
        "--inner",
        "",
        "a",
        "--inner",
        "",
        "b",
        "--outer",
        "",
        "c",
        "--outer--",
    )
    p = mime.parse(msg)
    inner, last = p.root.parts
    assert [body(msg, x) for x in inner.parts] == [b"a", b"b"]
    assert body(msg, last) == b"c"


def test_boundary_prefix_of_nested_boundary() -> None:
    msg = crlf(
        "Content-Type: multipart/mixed; boundary=ab",
        "",
        "--ab",
        "Content-Type: multipart/mixed; boundary=abc",
        "",
        "--abc",
        "",
        "x",
        "--abc",
        "",
        "y",
        "--abc--",
        "--ab",
        "",
        "z",
        "--ab--",
    )
    p = mime.parse(msg)
    first, second = p.root.parts
    assert [body(msg, x) for x in first.parts] == [b"x", b"y"]
    assert body(msg, second) == b"z"


def test_boundary_with_transport_padding_and_empty_parts() -> None:
    msg = crlf(
        "Content-Type: multipart/mixed; boundary=q", "", "--q  ", "--q\t", "", "x", "--q-- ", ""
    )
    parts = mime.parse(msg).root.parts
    assert [body(msg, x) for x in parts] == [b"", b"x"]
    assert parts[0].header_start == parts[0].body_start == parts[0].end


def test_lf_only_line_ends() -> None:
    msg = ALTERNATIVE.replace(b"\r\n", b"\n")
    p = mime.parse(msg)
    one, two = p.root.parts
    assert header(msg, one).endswith(b"quoted-printable\n\n")
    assert body(msg, one) == b"Gr=C3=BC=C3=9Fe"
    assert body(msg, two) == "<p>Grüße</p>".encode()
    assert p.envelope.subject == "alt"


def test_header_only_message_and_empty_message() -> None:
    msg = b"Subject: no body\r\nFrom: a@b.c\r\n"
    root = mime.parse(msg).root
    assert root.body_start == root.end == len(msg) and root.lines == 0
    assert root.envelope is not None and root.envelope.subject == "no body"
    empty = mime.parse(b"")
    assert empty.root.size == 0 and empty.envelope.subject is None
    assert mime.ParsedMessage.from_json(empty.to_json()) == empty


def test_body_without_header() -> None:
    msg = b"\r\nonly a body\r\n"
    root = mime.parse(msg).root
    assert root.body_start == 2 and body(msg, root) == b"only a body\r\n"


def test_deep_nesting_is_capped() -> None:
    depth = 3000
    head = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(depth)
    )
    msg = head + b"\r\ninnermost\r\n"
    p = mime.parse(msg)
    levels = 0
    part = p.root
    while part.parts:
        part = part.parts[0]
        levels += 1
    assert levels <= mime.MAX_DEPTH + 1
    assert msg[part.body_start : part.end].endswith(b"innermost\r\n")
    json.loads(p.to_json())


def test_nested_messages_are_capped() -> None:
    msg = b"Content-Type: message/rfc822\r\n\r\n" * 2000 + b"Subject: deep\r\n\r\nbody"
    p = mime.parse(msg)
    assert sum(1 for _ in p.root.walk()) <= mime.MAX_DEPTH + 2


def test_part_count_is_capped() -> None:
    msg = (
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n"
        + b"--x\r\n\r\np\r\n" * 20000
        + b"--x--\r\n"
    )
    p = mime.parse(msg, max_parts=100)
    parts = p.root.parts
    assert len(parts) == 100
    assert parts[-1].end == len(msg) - len(b"\r\n--x--\r\n")  # the rest stays reachable as one part


# -- headers and addresses -----------------------------------------------------


def test_encoded_words_are_kept_raw_in_envelope() -> None:
    msg = crlf(
        "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus",
        " =?iso-8859-1?b?S/Zsbg==?=",
        "From: =?utf-8?b?SsO2cmc=?= <j@example.de>",
        "",
        "x",
    )
    env = mime.parse(msg).envelope
    assert (
        env.subject == "=?utf-8?q?Gr=C3=BC=C3=9Fe?= aus =?iso-8859-1?b?S/Zsbg==?="
    )  # unfolded, raw
    assert env.from_ == (("=?utf-8?b?SsO2cmc=?=", None, "j", "example.de"),)
    assert mime.decode_header(env.subject) == "Grüße aus Köln"


def test_8bit_and_invalid_utf8_headers_survive_exactly() -> None:
    subject = "Grüße".encode() + b" \xff\xfe latin \xe9"
    msg = b"Subject: " + subject + b"\r\nFrom: J\xc3\xb6rg <j@x.de>\r\n\r\nbody"
    p = mime.parse(msg)
    assert mime.raw(p.envelope.subject) == subject
    again = mime.ParsedMessage.from_json(p.to_json())
    assert mime.raw(again.envelope.subject) == subject
    assert p.to_json().isascii()
    assert again.envelope.from_ == (("Jörg", None, "j", "x.de"),)
    assert mime.decode_header(p.envelope.subject).startswith("Grüße")


ADDRESS_CASES = [
    ('"Doe, John" <john@example.com>', (("Doe, John", None, "john", "example.com"),)),
    ("john@example.com (John Doe)", (("John Doe", None, "john", "example.com"),)),
    ("<@route1,@route2:user@host>", ((None, "@route1,@route2", "user", "host"),)),
    ('"quoted local"@example.com', ((None, None, '"quoted local"', "example.com"),)),
    ("root", ((None, None, "root", mime.MISSING_DOMAIN),)),
    ("<>", ((None, None, "", ""),)),
    ("a@b, , ,c@d", ((None, None, "a", "b"), (None, None, "c", "d"))),
    (
        "undisclosed-recipients:;",
        ((None, None, "undisclosed-recipients", None), (None, None, None, None)),
    ),
    (
        "Team: Ann <ann@x.org>, bob@y.org;, carol@z.org",
        (
            (None, None, "Team", None),
            ("Ann", None, "ann", "x.org"),
            (None, None, "bob", "y.org"),
            (None, None, None, None),
            (None, None, "carol", "z.org"),
        ),
    ),
    (
        "Unclosed: a@b",
        ((None, None, "Unclosed", None), (None, None, "a", "b"), (None, None, None, None)),
    ),
    ("user@[192.0.2.1]", ((None, None, "user", "[192.0.2.1]"),)),
    ('"unterminated <a@b>', ((None, None, '"unterminated <a@b>"', mime.MISSING_DOMAIN),)),
    ("", None),
    ("   ", None),
    (",;,", None),
]


@pytest.mark.parametrize(("value", "expected"), ADDRESS_CASES)
def test_addresses(value: str, expected: object) -> None:
    assert mime.parse_addresses(value) == expected


def test_empty_sender_falls_back_to_from() -> None:
    msg = b"From: a@b.c\r\nSender:\r\nReply-To: <>\r\n\r\n"
    env = mime.parse(msg).envelope
    assert env.sender == env.from_
    assert env.reply_to == ((None, None, "", ""),)


def test_first_of_duplicate_fields_and_folded_values() -> None:
    msg = b"Subject: first\r\nSubject: second\r\nTo: a@b,\r\n\tc@d\r\n\r\n"
    env = mime.parse(msg).envelope
    assert env.subject == "first"
    assert env.to == ((None, None, "a", "b"), (None, None, "c", "d"))


def test_header_fields_offsets() -> None:
    msg = b"A: 1\r\nB: 2\r\n  cont\r\nbroken line\r\nC : 3\r\n\r\nD: body"
    fields = mime.header_fields(msg, 0, mime.header_end(msg))
    assert [f.name for f in fields] == [b"a", b"b", b"", b"c"]
    assert msg[fields[1].start : fields[1].end] == b"B: 2\r\n  cont\r\n"
    assert mime.field_value(msg, fields[1]) == b"2  cont"
    assert mime.field_value(msg, fields[3]) == b"3"


def test_rfc2231_continuations_are_joined() -> None:
    params = mime.parse_params(
        '; name*0="long "; name*1="name.txt"; title*0*=utf-8\'\'%E2%82%AC; title*1=" 5"; x=y'
    )
    assert params == (("name", "long name.txt"), ("title*", "utf-8''%E2%82%AC%205"), ("x", "y"))
    assert mime.parse_params('; a="q\\"uote"; b=tok (comment); =x; bad') == (
        ("a", 'q"uote'),
        ("b", "tok"),
    )


# -- decoding ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("=?utf-8?q?a_b?=", "a b"),
        ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # white space between encoded words goes
        ("=?unknown-charset?q?abc?=", "abc"),
        ("=?base64?b?YWJj?=", "abc"),  # not a charset: read as UTF-8
        ("=?utf-8?b?!!!?=", ""),
        ("=?utf-8?b?YWJ?=", "ab"),  # missing padding
        ("plain", "plain"),
        (b"raw \xe4 latin", "raw ä latin"),
        (b"raw \xc3\xa4 utf8", "raw ä utf8"),
    ],
)
def test_decode_header(value: str | bytes, text: str) -> None:
    assert mime.decode_header(value) == text


def test_part_text_encodings_and_charsets() -> None:
    msg = crlf(
        "Content-Type: multipart/mixed; boundary=m",
        "",
        "--m",
        "Content-Type: text/plain; charset=iso-8859-1",
        "Content-Transfer-Encoding: base64",
        "",
        "5OT8",
        "--m",
        "Content-Type: text/plain; charset=x-nonsense",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "caf=C3=A9=",
        "--m",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: base64",
        "",
        "not base64 at all!!",
        "--m",
        "Content-Type: image/png",
        "",
        "binary",
        "--m--",
    )
    p = mime.parse(msg)
    texts = list(mime.iter_text(msg, p.root))
    assert texts[0] == "ääü"
    assert texts[1] == "café"
    assert isinstance(texts[2], str)
    assert len(texts) == 3  # the image is not text


def test_iter_text_includes_attached_message_headers() -> None:
    texts = list(mime.iter_text(NESTED, mime.parse(NESTED).root))
    assert texts[0] == "see attached"
    assert "inner subject" in texts[1]
    assert texts[2:] == ["inner one", "inner two"]


# -- cache ---------------------------------------------------------------------


@pytest.mark.parametrize("msg", [PLAIN, ALTERNATIVE, MIXED, NESTED])
def test_json_round_trip(msg: bytes) -> None:
    p = mime.parse(msg)
    text = p.to_json()
    assert mime.ParsedMessage.from_json(text) == p
    assert mime.ParsedMessage.from_json(text.encode()) == p


def test_json_of_another_version_is_refused() -> None:
    data = json.loads(mime.parse(PLAIN).to_json())
    data["v"] = 0
    with pytest.raises(ValueError):
        mime.ParsedMessage.from_json(json.dumps(data))


# -- robustness -----------------------------------------------------------------


def _check_offsets(p: mime.ParsedMessage, size: int) -> None:
    for part in p.root.walk():
        assert 0 <= part.header_start <= part.body_start <= part.end <= size
        for child in part.parts:
            assert part.body_start <= child.header_start and child.end <= part.end


def test_fuzz_never_raises() -> None:
    rng = random.Random(3501)
    seeds = [PLAIN, ALTERNATIVE, MIXED, NESTED]
    alphabet = [
        b"\r\n",
        b"\n",
        b"--",
        b"-",
        b":",
        b";",
        b'"',
        b"=",
        b"?",
        b"(",
        b")",
        b"<",
        b">",
        b"\xff",
        b"\x00",
        b" ",
        b"boundary=",
        b"multipart/",
        b"message/rfc822",
        b"outer",
        b"X",
    ]
    for _ in range(400):
        msg = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 12)):
            pos = rng.randint(0, len(msg))
            action = rng.random()
            if action < 0.4:
                msg[pos:pos] = rng.choice(alphabet)
            elif action < 0.7:
                del msg[pos : pos + rng.randint(1, 20)]
            else:
                msg[pos:pos] = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 8)))
        data = bytes(msg)
        p = mime.parse(data)
        _check_offsets(p, len(data))
        assert mime.ParsedMessage.from_json(p.to_json()) == p
        list(mime.iter_text(data, p.root))
    for _ in range(200):
        data = bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 300)))
        _check_offsets(mime.parse(data), len(data))


def test_find_fields_agrees_with_header_fields() -> None:
    rng = random.Random(822)
    lines = [
        b"From: a",
        b"from : b",
        b"To: c",
        b" cont",
        b"\tcont",
        b"Subject: s",
        b"broken",
        b"X-From: d",
        b"Fromage: e",
        b": empty",
        b"TO:x",
        b"",
    ]
    for _ in range(500):
        ends = rng.choice([b"\r\n", b"\n"])
        data = ends.join(rng.choice(lines) for _ in range(rng.randint(0, 10)))
        names = rng.sample(["from", "to", "subject", "x-from"], rng.randint(1, 3))
        expected = [f for f in mime.header_fields(data, 0, len(data)) if f.name.decode() in names]
        assert mime.find_fields(data, 0, len(data), names) == expected, data


def test_hostile_header_of_many_lines() -> None:
    msg = b"X-Junk: 1\r\n" * 200_000 + b"Subject: found\r\n\r\nbody"
    p = mime.parse(msg)
    assert p.envelope.subject == "found"
    assert mime.header_values(msg, p.root, "subject") == [b"found"]


@pytest.mark.parametrize(
    ("data", "end", "stop"),
    [
        (b"A: b\r\nC: d\r\n\r\nbody", 14, 12),
        (b"A: b\nC: d\n\nbody", 11, 10),
        (b"A: b\n\r\nbody", 7, 5),  # a bare LF line, then a CRLF blank line
        (b"\r\nbody", 2, 0),
        (b"\nbody", 1, 0),
        (b"A: b\r\nC: d\r\n", None, 12),  # no blank line (yet)
        (b"A: b\r\nC: d\r\n\r", None, 13),  # half a blank line is not one
    ],
)
def test_the_end_of_the_header_is_found_in_one_place(
    data: bytes, end: int | None, stop: int
) -> None:
    assert mime.find_header_end(data) == end
    assert mime.header_end(data) == (len(data) if end is None else end)
    assert mime.header_stop(data, 0, len(data)) == stop
