"""The POP3 body cache (``services/mailaccess/maildrop.py`` :class:`BodyCache`).

Pure part: :func:`is_plain` (a message sent as it is) agrees with the
dot-stuffer for any bytes, and the cache keeps within its budget, least
recently used out first. Server part, over real sockets: a body served from
the cache is byte-exact (RETR twice, TOP after RETR, another account's copy
of the same delivery), and a message removed by IMAP after the POP3 login
is refused although its body is still cached.
"""

from __future__ import annotations

import imaplib
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.pop3_stream import DOMAIN, PW, TIMEOUT, Pop, append, serve, top_reference
from tests.support.server import WaypostServer

from waypost.protocols.pop3.stuffing import TopCutter, stuff, top_of_plain
from waypost.services.mailaccess.maildrop import BodyCache, is_plain
from waypost.storage.interface import MailMessage

# -- the pure part --------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"a", b"x.y", b" "])).map(
        b"".join
    )
)
def test_a_plain_message_is_exactly_what_the_stuffer_sends(data: bytes) -> None:
    """is_plain(d) holds exactly when the multi-line body is d and the ``.`` line."""
    assert is_plain(data) == (stuff(data) == data + b".\r\n")


def test_is_plain_on_the_awkward_cases() -> None:
    assert is_plain(b"") and is_plain(b"a\r\nb\r\n") and is_plain(b"bare CR\ra\r\n")
    assert not is_plain(b"no final line end")
    assert not is_plain(b".starts with a dot\r\n")
    assert not is_plain(b"a\r\n.b\r\n")
    assert not is_plain(b"bare\nLF\r\n")
    assert not is_plain(b"ends in CR\r")


def row(blob: str, size: int, prefix: bytes = b"") -> MailMessage:
    return MailMessage(
        uid=1, modseq=1, flags=(), internal_date=0.0, size=size, blob=blob,
        prefix=prefix, omit=(), summary={},
    )  # fmt: skip


def test_the_cache_keeps_to_its_budget_least_recently_used_out_first() -> None:
    cache = BodyCache(30)
    keys = [cache.key(row(name, 10)) for name in "abcd"]
    for key in keys[:3]:
        assert cache.put(key, b"x" * 8 + b"\r\n") == (b"x" * 8 + b"\r\n", True)
    assert cache.held == 30
    assert cache.get(keys[0]) is not None  # a is now the most recently used
    cache.put(keys[3], b".dotted\r\n")  # 9 octets: b goes
    assert cache.get(keys[1]) is None
    assert cache.get(keys[0]) is not None and cache.get(keys[2]) is not None
    assert cache.get(keys[3]) == (b".dotted\r\n", False)
    assert cache.held == 29
    # A body larger than the whole budget is returned but not kept.
    big = cache.key(row("e", 31))
    assert cache.put(big, b"y" * 31) == (b"y" * 31, False)
    assert cache.get(big) is None and cache.held == 29
    # The same blob with another prefix is another message.
    assert cache.key(row("a", 10, b"Return-Path: <x@y>\r\n")) != keys[0]


def test_a_smaller_budget_applies_at_once() -> None:
    cache = BodyCache(None)  # "unlimited"
    keys = [cache.key(row(name, 10)) for name in "abc"]
    for key in keys:
        cache.put(key, b"z" * 8 + b"\r\n")
    assert cache.held == 30
    cache.resize(15)  # the oldest two go
    assert cache.held == 10 and cache.get(keys[2]) is not None
    assert cache.get(keys[0]) is None and cache.get(keys[1]) is None


def test_a_cache_of_size_zero_keeps_nothing() -> None:
    cache = BodyCache(0)
    key = cache.key(row("a", 3))
    assert cache.put(key, b"a\r\n") == (b"a\r\n", True)
    assert cache.get(key) is None and cache.held == 0


# -- over the wire --------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    yield from serve(tmp_path_factory, [f"s{i}" for i in range(3)])

MESSAGES = [
    b"Subject: plain\r\n\r\nline 1\r\nline 2\r\nline 3\r\n",
    b"Subject: dots\r\n\r\n.one\r\n..two\r\n.\r\nend\r\n",
    b"Subject: bare LF\n\nbody\n.dot\nno final end",
    b"Subject: plain again\r\n\r\n" + b"0123456789 text. text.\r\n" * 400,
]


def test_cached_bodies_are_sent_byte_exact_to_every_copy(server: WaypostServer) -> None:
    append(server, "s0", MESSAGES)
    append(server, "s1", MESSAGES)  # the same blobs: s1 reads what s0 cached
    for account in ("s0", "s1", "s0"):  # s0 again: a second session, all from the cache
        pop = Pop(server, account)
        try:
            for n, message in enumerate(MESSAGES, 1):
                for _ in range(2):
                    status, body = pop.multi(f"RETR {n}")
                    assert status == b"+OK %d octets\r\n" % len(message)
                    assert body == stuff(message)
                for lines in (0, 1, 2, 99):
                    assert pop.multi(f"TOP {n} {lines}")[1] == stuff(top_reference(message, lines))
        finally:
            pop.quit()


def test_a_message_removed_by_imap_is_refused_though_its_body_is_cached(
    server: WaypostServer,
) -> None:
    message = b"Subject: going\r\n\r\nsoon gone\r\n"
    kept = b"Subject: staying\r\n\r\nstill here\r\n"
    append(server, "s2", [message, kept])
    first = Pop(server, "s2")
    try:
        assert first.multi("RETR 1")[1] == stuff(message)  # now cached
    finally:
        first.quit()
    pop = Pop(server, "s2")  # the snapshot has both messages
    try:
        imap = imaplib.IMAP4("127.0.0.1", server.port("IMAPPort"), timeout=TIMEOUT)
        try:
            imap.login(f"s2@{DOMAIN}", PW)
            imap.select("INBOX")
            imap.store("1", "+FLAGS.SILENT", r"(\Deleted)")
            imap.expunge()
        finally:
            imap.logout()
        assert pop.command("RETR 1") == b"-ERR Message was removed by another session\r\n"
        assert pop.command("TOP 1 0") == b"-ERR Message was removed by another session\r\n"
        assert pop.multi("RETR 2")[1] == stuff(kept)
    finally:
        pop.quit()


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from([b"", b"\r", b"a", b"a.b", b"Subject: x", b" ", b"\r\r"])).map(
        lambda lines: b"".join(line + b"\r\n" for line in lines)
    ),
    st.integers(0, 6),
)
def test_top_of_a_plain_message_is_the_cutters(data: bytes, lines: int) -> None:
    assert is_plain(data)
    assert top_of_plain(data, lines) == TopCutter(lines).feed(data)
