"""SEARCH evaluation: every RFC 3501 key, a message it finds and one it does not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from tests.support.messages import crlf

from waypost import mime
from waypost.protocols.imap import wire
from waypost.services.mailaccess import search
from waypost.services.mailaccess.criteria import SearchKey
from waypost.services.mailaccess.search import LazyMessage, SearchContext

M1 = crlf(
    'From: "=?utf-8?q?Alice_=C3=84mann?=" <alice@example.com>',
    "To: bob@example.org",
    "Cc: carol@example.net",
    "Bcc: dave@example.com",
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus",
    " Köln",
    "Date: Tue, 5 Mar 2024 23:59:00 -1000",
    "X-Custom: Hello there",
    "Content-Type: multipart/mixed; boundary=b",
    "",
    "--b",
    "Content-Type: text/plain; charset=iso-8859-1",
    "Content-Transfer-Encoding: quoted-printable",
    "",
    "caf=E9 au lait",
    "--b",
    "Content-Type: text/html; charset=utf-8",
    "Content-Transfer-Encoding: base64",
    "",
    "PHA+zqPOis6jzqXOps6fzqM8L3A+",  # <p>ΣΊΣΥΦΟΣ</p>
    "--b",
    "Content-Type: application/octet-stream",
    "Content-Transfer-Encoding: base64",
    "",
    "c2VjcmV0d29yZA==",  # "secretword": not text, not searched
    "--b--",
    "",
)
M2 = crlf("From: x@y.org", "Subject: report", "", "The quick brown fox", "")
M3 = crlf("From: z@y.org", "Date: not a date at all", "Subject: third", "", "attached:", "")

MESSAGES = [
    (
        1,
        10,
        ("\\Seen", "\\Answered", "$Work"),
        datetime(2024, 3, 5, 23, 30, tzinfo=UTC).timestamp(),
        500,
        M1,
    ),
    # 00:30 at +0200 is 22:30 UTC the day before: the internal day is 5-Mar-2024
    (
        2,
        20,
        ("\\Deleted", "\\Flagged", "\\Draft", "\\Recent"),
        datetime(2024, 3, 6, 0, 30, tzinfo=timezone(timedelta(hours=2))),
        5000,
        M2,
    ),
    (3, 30, ("\\Recent",), datetime(2024, 3, 7, 12, 0, tzinfo=UTC).timestamp(), 100, M3),
]
CTX = SearchContext(messages=3, max_uid=30, saved=frozenset({30}))


def views() -> list[LazyMessage]:
    return [
        LazyMessage(seq, uid, flags, when, size, (lambda r=raw: r))
        for seq, uid, flags, when, size, raw in MESSAGES
    ]


def hits(program: bytes, ctx: SearchContext = CTX) -> list[int]:
    args = wire.parse(b"s SEARCH " + program).args
    return [m.seq for m in search.search(args.key, views(), ctx)]


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        (b"ALL", [1, 2, 3]),
        (b"ANSWERED", [1]),
        (b"UNANSWERED", [2, 3]),
        (b"DELETED", [2]),
        (b"UNDELETED", [1, 3]),
        (b"DRAFT", [2]),
        (b"UNDRAFT", [1, 3]),
        (b"FLAGGED", [2]),
        (b"UNFLAGGED", [1, 3]),
        (b"SEEN", [1]),
        (b"UNSEEN", [2, 3]),
        (b"RECENT", [2, 3]),
        (b"OLD", [1]),
        (b"NEW", [2, 3]),
        (b"KEYWORD $work", [1]),
        (b"KEYWORD $Other", []),
        (b"UNKEYWORD $Work", [2, 3]),
        (b"LARGER 500", [2]),
        (b"LARGER 5000", []),
        (b"SMALLER 500", [3]),
        (b"SMALLER 100", []),
        (b"BEFORE 6-Mar-2024", [1, 2]),
        (b"BEFORE 5-Mar-2024", []),
        (b"ON 5-Mar-2024", [1, 2]),
        (b"ON 6-Mar-2024", []),
        (b"SINCE 6-Mar-2024", [3]),
        (b"SINCE 8-Mar-2024", []),
        # The Date header's own day (5 Mar at -1000), not the UTC one (6 Mar);
        # no Date or an unreadable one never matches.
        (b"SENTON 5-Mar-2024", [1]),
        (b"SENTON 6-Mar-2024", []),
        (b"SENTBEFORE 6-Mar-2024", [1]),
        (b"SENTBEFORE 5-Mar-2024", []),
        (b"SENTSINCE 5-Mar-2024", [1]),
        (b"SENTSINCE 6-Mar-2024", []),
        (b'FROM "\xc3\xa4mann"', [1]),  # inside an encoded word, case-folded
        (b"FROM y.org", [2, 3]),
        (b"FROM nobody", []),
        (b"TO BOB@", [1]),
        (b"TO carol", []),
        (b"CC carol", [1]),
        (b"CC bob", []),
        (b"BCC dave", [1]),
        (b"BCC bob", []),
        (b'SUBJECT "GR\xc3\x9cSSE AUS K\xc3\x96LN"', [1]),  # ß folds to ss; unfolded
        (b"SUBJECT report", [2]),
        (b"SUBJECT nothing", []),
        (b'HEADER X-Custom "HELLO"', [1]),
        (b'HEADER x-custom ""', [1]),  # empty string: has the field
        (b'HEADER X-Missing ""', []),
        (b"HEADER X-Custom bye", []),
        (b'BODY "CAF\xc3\x89"', [1]),  # quoted-printable, Latin-1
        (
            b'BODY "\xcf\x83\xce\xaf\xcf\x83\xcf\x85\xcf\x86\xce\xbf\xcf\x82"',
            [1],
        ),  # base64 UTF-8, final sigma
        (b"BODY secretword", []),  # only text parts are searched
        (b"BODY report", []),  # the header is not the body
        (b"BODY QUICK", [2]),
        (b"TEXT example.org", [1]),  # header
        (b"TEXT quick", [2]),  # body
        (b"TEXT nowhere", []),
        (b"UID 20:*", [2, 3]),
        (b"UID *", [3]),
        (b"UID 1:5", []),
        (b"UID 5:1,30", [3]),
        (b"2:*", [2, 3]),
        (b"*", [3]),
        (b"1,3", [1, 3]),
        (b"4:5", []),
        (b"$", [3]),
        (b"NOT SEEN", [2, 3]),
        (b"NOT ALL", []),
        (b"OR SEEN DELETED", [1, 2]),
        (b"OR DRAFT ANSWERED", [1, 2]),
        (b"OR DRAFT DELETED", [2]),
        (b"SEEN ANSWERED", [1]),
        (b"(SEEN DELETED)", []),
        (b"OR (NOT SEEN) FLAGGED UNDELETED", [3]),
        (b"NOT (OR SEEN RECENT)", []),
    ],
)
def test_search_keys(program: bytes, expected: list[int]) -> None:
    assert hits(program) == expected


def test_charset_utf8_with_non_ascii_text() -> None:
    assert hits(b'CHARSET UTF-8 SUBJECT "gr\xc3\xbc\xc3\x9fe"') == [1]
    assert hits(b"CHARSET UTF-8 BODY {5+}\r\ncaf\xc3\xa9") == [1]
    assert hits(b'CHARSET UTF-8 BODY "caf\xc3\xa9 noir"') == []


def test_unknown_charset_is_badcharset() -> None:
    with pytest.raises(wire.ParseError) as info:
        wire.parse(b"s SEARCH CHARSET ISO-2022-JP SUBJECT x")
    assert (
        info.value.response()
        == b"s NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset ISO-2022-JP\r\n"
    )


def test_star_in_an_empty_mailbox() -> None:
    key = wire.parse(b"s UID SEARCH UID 1:*").args.key
    assert search.search(key, [], SearchContext(0, 0)) == []


# -- cost and laziness ----------------------------------------------------------------


def test_cost() -> None:
    def key(text: bytes) -> SearchKey:
        return wire.parse(b"s SEARCH " + text).args.key

    assert search.cost(key(b"UNSEEN LARGER 5 UID 1:* 1:3 SINCE 1-Jan-2020")) == search.META
    assert search.cost(key(b"OR SEEN FROM x")) == search.HEADER
    assert search.cost(key(b"SENTON 1-Jan-2020")) == search.HEADER
    assert search.cost(key(b"NOT TEXT x")) == search.BODY


class Unloadable:
    """A message whose bytes must not be needed."""

    def __init__(self, seq: int, uid: int, flags: tuple[str, ...]) -> None:
        self.seq, self.uid, self.flags = seq, uid, flags
        self.internal_date = 0.0
        self.size = 10

    def header(self, name: str) -> list[str]:
        raise AssertionError("header read")

    def header_text(self) -> str:
        raise AssertionError("header read")

    def body_text(self) -> str:
        raise AssertionError("body read")


@pytest.mark.parametrize(
    ("program", "flags", "expected"),
    [
        (b"BODY x SEEN", (), False),
        (b"OR UNSEEN BODY x", (), True),
        (b"NOT (FROM x SEEN)", (), True),
        (b"TEXT x UID 5", ("\\Seen",), False),
        (b"SENTON 1-Jan-2020 DELETED", (), False),
    ],
)
def test_cheap_keys_decide_first(program: bytes, flags: tuple[str, ...], expected: bool) -> None:
    """Message UID 1: the cheap key settles each program without reading it."""
    key = wire.parse(b"s SEARCH " + program).args.key
    msg: Any = Unloadable(1, 1, flags)
    assert search.matches(key, msg, CTX) is expected


def test_lazy_message_loads_once_and_uses_the_cached_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = []

    def load() -> bytes:
        loads.append(1)
        return M1

    parsed = mime.parse(M1)
    monkeypatch.setattr(
        mime, "parse", lambda *_: (_ for _ in ()).throw(AssertionError("re-parsed"))
    )
    msg = LazyMessage(1, 10, (), 0.0, len(M1), load, lambda: parsed)
    key = wire.parse(b"s SEARCH FROM alice BODY lait TEXT bob SUBJECT aus").args.key
    assert search.matches(key, msg, CTX)
    assert loads == [1]


def test_metadata_search_never_loads() -> None:
    def load() -> bytes:
        raise AssertionError("loaded")

    msgs = [
        LazyMessage(n, n, ("\\Seen",) if n % 2 else (), float(n), n * 10, load)
        for n in range(1, 1001)
    ]
    key = wire.parse(b"s SEARCH UNSEEN LARGER 100 UID 2:* NOT DELETED SINCE 1-Jan-1970").args.key
    found = search.search(key, msgs, SearchContext(1000, 1000))
    assert [m.uid for m in found][:3] == [12, 14, 16]


def test_naive_internal_date_is_utc() -> None:
    assert search.internal_day(datetime(2024, 3, 5, 23, 59)) == datetime(2024, 3, 5).date()
    assert search.internal_day(0.0) == datetime(1970, 1, 1).date()
