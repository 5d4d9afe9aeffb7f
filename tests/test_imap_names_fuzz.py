"""Mailbox-name decoding, pure (``wire.mailbox_name``, ``wire.parse_command``
with and without ``utf8``), and hypothesis fuzz targets for it.

What holds for any input: decoding never raises but ``UnicodeDecodeError``
(UTF-8 mode, bytes that are not UTF-8: the parser's BAD); a name that is not
an :class:`~waypost.protocols.imap.wire.InvalidName` round-trips through the
serialiser of its mode (so one name never means two mailboxes); parsing any
bytes as a SELECT argument gives a command or a ParseError, never anything
else, and an invalid name is a value (answered NO), not a ParseError; the
session's check before a handler (``rev2.refusal``) answers any command's
names with OK, BAD or NO [NONEXISTENT]/[CANNOT], or lets it through.
"""

from __future__ import annotations

import dataclasses
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from waypost.protocols.imap import rev2, wire
from waypost.services.mailaccess.errors import MailboxError

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

name_text = st.text(
    alphabet=st.one_of(st.sampled_from("abc&-/ ~äöü€日本語😀\u0301"), st.characters(codec="utf-8")),
    max_size=16,
)
wire_bytes = st.one_of(
    st.binary(max_size=24),
    name_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    name_text.map(lambda t: wire.encode_mailbox(t).encode()),
    st.text(alphabet="&-+,AGEJjoZeVnLIqU/BTFw09", max_size=16).map(str.encode),
)


def _select(data: bytes, utf8: bool) -> str:
    return wire.parse(b"a SELECT " + data, utf8=utf8).args.mailbox


@pytest.mark.parametrize(
    ("data", "utf8", "expected"),
    [
        (b"&ZeVnLIqe-", False, "日本語"),
        (b'"&ZeVnLIqe-"', True, "&ZeVnLIqe-"),
        ('"日本語"'.encode(), True, "日本語"),
        (b'"Cafe\xcc\x81"', True, "Café"),  # NFC
        (b"INBOX", True, "INBOX"),
    ],
)
def test_names_by_mode(data: bytes, utf8: bool, expected: str) -> None:
    name = _select(data, utf8)
    assert name == expected and not isinstance(name, wire.InvalidName)


@pytest.mark.parametrize(
    ("data", "utf8"),
    [
        (b"&Jjo", False),
        (b'"&AGE-"', False),
        ('"Grüße"'.encode(), False),  # 8-bit in a quoted string: not modified UTF-7
        (b'"a\x01b"', False),
        (b'"a\x01b"', True),
        (b'"a\xc2\x85b"', True),  # C1 control
    ],
)
def test_invalid_names_are_values(data: bytes, utf8: bool) -> None:
    name = _select(data, utf8)
    assert isinstance(name, wire.InvalidName) and name.reason


@pytest.mark.parametrize(
    "data",
    [b'"caf\xe9"', b'"\xff"', b"{2}\r\n\xc3("],
)
def test_not_utf8_is_bad_in_utf8_mode(data: bytes) -> None:
    with pytest.raises(wire.ParseError) as e:
        _select(data, True)
    assert e.value.status == "BAD" and "not UTF-8" in e.value.text


def test_list_patterns() -> None:
    args = wire.parse(b'a LIST "" "&Jjo*"').args
    assert isinstance(args.patterns[0], wire.InvalidName)
    assert wire.parse('a LIST "" "日本*"'.encode(), utf8=True).args.patterns == ("日本*",)
    with pytest.raises(wire.ParseError):
        wire.parse(b'a LIST "" Gr\xc3\xbc*', utf8=True)  # 8-bit outside quotes


def test_serialise_by_mode() -> None:
    assert wire.mailbox("Grüße") == b'"Gr&APwA3w-e"'
    assert wire.mailbox("Grüße", utf8=True) == '"Grüße"'.encode()
    assert wire.mailbox("A&B", utf8=True) == b'"A&B"'
    assert wire.mailbox('a"b', utf8=True) == b'{3}\r\na"b'
    assert wire.list_line("日本", utf8=True) == '* LIST () "/" "日本"\r\n'.encode()
    assert wire.status_line("é", [("MESSAGES", 2)], utf8=True) == (
        '* STATUS "é" (MESSAGES 2)\r\n'.encode()
    )


@SETTINGS
@given(wire_bytes, st.booleans())
def test_fuzz_name_decoding(data: bytes, utf8: bool) -> None:
    try:
        name = wire.mailbox_name(data, utf8=utf8)
    except UnicodeDecodeError:
        assert utf8
        return
    assert isinstance(name, str)
    if isinstance(name, wire.InvalidName):
        assert name.reason
        return
    if utf8:
        assert unicodedata.is_normalized("NFC", name)
        assert name.encode("utf-8") == unicodedata.normalize("NFC", data.decode()).encode()
    else:
        assert wire.encode_mailbox(name).encode() == data  # the one valid form


@SETTINGS
@given(wire_bytes, st.booleans())
def test_fuzz_select_argument(data: bytes, utf8: bool) -> None:
    try:
        command = wire.parse(b"a SELECT " + data, utf8=utf8)
    except wire.ParseError as e:
        assert e.response().startswith((b"a ", b"* "))
        return
    assert isinstance(command.args.mailbox, str)


@SETTINGS
@given(name_text, st.booleans())
def test_fuzz_serialised_names_parse_back(name: str, utf8: bool) -> None:
    name = unicodedata.normalize("NFC", name) if utf8 else name
    if "\r" in name or "\n" in name or "\x00" in name:
        return  # never a mailbox name (check_name refuses control characters)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates are not text
    parsed = _select(wire.mailbox(name, utf8=utf8), utf8)
    if isinstance(parsed, wire.InvalidName):
        assert any(unicodedata.category(c) == "Cc" for c in name)
    else:
        assert parsed == name


def test_search_charset_by_mode() -> None:
    """RFC 6855 §3: after UTF8=ACCEPT a conflicting CHARSET is BAD; IMAP4rev2
    alone (UTF-8 names) keeps NO [BADCHARSET] (RFC 9051 §6.4.4)."""
    data = b"a SEARCH CHARSET KOI8-R ALL"
    for kwargs, status in (({}, "NO"), ({"utf8": True}, "NO"), ({"utf8_accept": True}, "BAD")):
        with pytest.raises(wire.ParseError) as e:
            wire.parse(data, **kwargs)
        assert e.value.status == status, kwargs
    assert wire.parse(b"a SEARCH CHARSET UTF-8 ALL", utf8_accept=True).args.charset == "UTF-8"


TEMPLATES = (
    b"a SELECT %s", b"a EXAMINE %s", b"a CREATE %s", b"a DELETE %s", b"a RENAME %s %s",
    b"a STATUS %s (MESSAGES RECENT)", b"a LIST %s %s", b"a LSUB %s %s", b"a SUBSCRIBE %s",
    b"a COPY 1 %s", b"a UID MOVE 1 %s", b"a GETACL %s", b"a MYRIGHTS %s",
    b'a LIST "" %s RETURN (STATUS (RECENT))', b"a APPEND %s {1+}\r\nx",
)  # fmt: skip
quoted_names = wire_bytes.map(lambda b: b'"' + b.replace(b"\\", b"").replace(b'"', b"") + b'"')


@SETTINGS
@given(st.sampled_from(TEMPLATES), quoted_names, quoted_names, st.booleans(), st.booleans())
def test_fuzz_refusal(template: bytes, one: bytes, two: bytes, utf8: bool, is_rev2: bool) -> None:
    """Whatever names a command carries, the session's check before the
    handler answers OK/BAD/NO with the right code or lets it through."""
    data = template % ((one, two)[: template.count(b"%s")])
    try:
        command = wire.parse(data, utf8=utf8)
    except wire.ParseError:
        return
    names = [v for f in dataclasses.fields(command.args) for v in _values(command.args, f.name)]
    try:
        refused = rev2.refusal(command, is_rev2)
    except MailboxError as e:
        assert e.code in ("NONEXISTENT", "CANNOT")
        assert any(isinstance(n, wire.InvalidName) for n in names)
        return
    if refused is None:
        invalid = any(isinstance(n, wire.InvalidName) for n in names)
        assert not invalid or command.name in rev2.CHECKED_BY_HANDLER
    else:
        assert refused.status in ("OK", "BAD")


def _values(args: object, name: str) -> tuple[object, ...]:
    value = getattr(args, name)
    return value if isinstance(value, tuple) else (value,)
