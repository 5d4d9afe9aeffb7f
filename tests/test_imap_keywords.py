"""Keywords are announced before they are shown (issue 12 point 2): a keyword
never appears in a FETCH FLAGS response before an untagged ``* FLAGS`` and
``* OK [PERMANENTFLAGS ...]`` listed it (RFC 3501 §7.2.6, RFC 9051 §7.3.5),
whoever set it (another session, this one, a message that arrives with it),
and whichever response shows it (FETCH, unsolicited FETCH, STORE, QRESYNC).

Real server, raw sockets; the checker walks each session's responses in order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from tests.support.imap import Raw, append_cmd, connect, serve, tagged
from tests.support.server import WaypostServer

DOMAIN = "kw.dom"
USERS = ("ann", "ben", "cid", "dan", "eve")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    yield from serve(tmp_path_factory, DOMAIN, USERS)


def session(server: WaypostServer, user: str) -> Raw:
    return connect(server, f"{user}@{DOMAIN}")


def watched(server: WaypostServer, user: str) -> tuple[Raw, Raw, Announced]:
    """Two sessions on a one-message INBOX: ``a`` (watched) and ``b`` (changing)."""
    a, b = session(server, user), session(server, user)
    assert tagged(a.cmd("p", append_cmd("INBOX"))).startswith(b"p OK")
    seen = Announced()
    seen.check(a.cmd("s", "SELECT INBOX"))
    assert tagged(b.cmd("s", "SELECT INBOX")).startswith(b"s OK")
    return a, b, seen


_FLAGS = re.compile(rb"^\* FLAGS \(([^)]*)\)")
_PERMANENT = re.compile(rb"^\* OK \[PERMANENTFLAGS \(([^)]*)\)\]")
_FETCH_FLAGS = re.compile(rb"^\* \d+ FETCH \(.*FLAGS \(([^)]*)\)")


class Announced:
    """What one session was told: the keywords of its last ``* FLAGS`` and
    ``PERMANENTFLAGS``; :meth:`check` fails on a FETCH showing any other."""

    def __init__(self) -> None:
        self.flags: set[bytes] = set()
        self.permanent: set[bytes] = set()
        self.shown: set[bytes] = set()

    def check(self, lines: list[bytes]) -> list[bytes]:
        for line in lines:
            if m := _FLAGS.match(line):
                self.flags = set(m.group(1).split())
            elif m := _PERMANENT.match(line):
                self.permanent = set(m.group(1).split())
            elif m := _FETCH_FLAGS.match(line):
                keywords = {f for f in m.group(1).split() if not f.startswith(b"\\")}
                assert keywords <= self.flags, (line, self.flags, lines)
                assert keywords <= self.permanent, (line, self.permanent, lines)
                self.shown |= keywords
        return lines


def test_keyword_set_by_another_session_is_announced_before_fetch(
    server: WaypostServer,
) -> None:
    a, b = session(server, "ann"), session(server, "ann")
    for i in range(2):
        assert tagged(a.cmd(f"p{i}", append_cmd("INBOX"))).startswith(b"p%d OK" % i)
    seen = Announced()
    seen.check(a.cmd("s", "SELECT INBOX"))
    assert tagged(b.cmd("s", "SELECT INBOX")).startswith(b"s OK")
    assert tagged(b.cmd("k", "STORE 1 +FLAGS ($Work)")).startswith(b"k OK")
    lines = seen.check(a.cmd("f", "FETCH 1:2 (FLAGS)"))
    assert tagged(lines).startswith(b"f OK")
    assert b"$Work" in seen.shown  # shown, and only after * FLAGS/PERMANENTFLAGS listed it
    assert any(line.startswith(b"* FLAGS (") and b"$Work" in line for line in lines)
    # the metadata path and the message path (BODY.PEEK) check the same
    assert tagged(b.cmd("k2", "STORE 2 +FLAGS ($Home)")).startswith(b"k2 OK")
    lines = seen.check(a.cmd("g", "FETCH 2 (FLAGS BODY.PEEK[HEADER])"))
    assert tagged(lines).startswith(b"g OK") and b"$Home" in seen.shown
    a.close()
    b.close()


def test_unsolicited_fetch_and_new_messages_announce_keywords(server: WaypostServer) -> None:
    a, b, seen = watched(server, "ben")
    assert tagged(b.cmd("k", "STORE 1 +FLAGS ($Later)")).startswith(b"k OK")
    lines = seen.check(a.cmd("n", "NOOP"))
    assert any(b"FETCH" in line and b"$Later" in line for line in lines), lines
    # a message arriving with a keyword: * FLAGS before anything can show it
    msg = b"Subject: kw\r\n\r\nbody\r\n"
    append = b"APPEND INBOX ($Fresh) {%d+}\r\n" % len(msg) + msg
    assert tagged(b.cmd("q", append)).startswith(b"q OK")
    lines = seen.check(a.cmd("n2", "NOOP"))
    assert b"* 2 EXISTS" in lines and b"$Fresh" in seen.flags, lines
    seen.check(a.cmd("f", "FETCH 2 (FLAGS)"))
    assert b"$Fresh" in seen.shown
    a.close()
    b.close()


def test_own_store_announces_before_its_fetch(server: WaypostServer) -> None:
    a = session(server, "cid")
    assert tagged(a.cmd("p", append_cmd("INBOX"))).startswith(b"p OK")
    seen = Announced()
    seen.check(a.cmd("s", "SELECT INBOX"))
    lines = seen.check(a.cmd("k", "STORE 1 +FLAGS ($Mine)"))
    assert tagged(lines).startswith(b"k OK") and b"$Mine" in seen.shown
    a.close()


def test_idle_announces_keywords(server: WaypostServer) -> None:
    a, b, seen = watched(server, "dan")
    a.send(b"i IDLE\r\n")
    assert a.line().startswith(b"+ ")
    assert tagged(b.cmd("k", "STORE 1 +FLAGS ($Idle)")).startswith(b"k OK")
    lines = []
    for _ in range(10):  # bounded: the change comes as a few lines
        lines.append(a.line())
        if _FETCH_FLAGS.match(lines[-1]):
            break
    a.send(b"DONE\r\n")
    lines += a.until(b"i")
    seen.check(lines)
    assert b"$Idle" in seen.shown, lines
    a.close()
    b.close()
