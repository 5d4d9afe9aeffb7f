"""The poll after FETCH, STORE, APPEND and EXPUNGE runs in the command's own
pool job (``Session._run_polled``), from the view as it was *before* the
command. What the session then reports must be exactly what a separate poll
after the command would report: another session's changes once, the
session's own changes never echoed a second time, its own EXPUNGE not
repeated, an APPEND into the selected mailbox as one EXISTS (RFC 3501
§7.3.1, §7.4.1, §6.4.6 for .SILENT).

Real server, raw sockets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from tests.support.imap import Raw, append_cmd, connect, ok, serve
from tests.support.server import WaypostServer

DOMAIN = "polljob.dom"
USERS = ("ann", "ben", "cid", "dan")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    yield from serve(tmp_path_factory, DOMAIN, USERS)


def pair(server: WaypostServer, user: str, messages: int) -> tuple[Raw, Raw]:
    """Two sessions with INBOX selected, holding ``messages`` messages."""
    a, b = connect(server, f"{user}@{DOMAIN}"), connect(server, f"{user}@{DOMAIN}")
    for n in range(messages):
        ok(a.cmd(f"p{n}", append_cmd("INBOX", b"Subject: %d\r\n\r\nbody\r\n" % n)), f"p{n}")
    ok(a.cmd("s", "SELECT INBOX"), "s")
    ok(b.cmd("s", "SELECT INBOX"), "s")
    return a, b


def fetch_lines(lines: list[bytes]) -> list[tuple[int, set[bytes]]]:
    """(message number, flags but \\Recent) of each ``* n FETCH`` (an
    unsolicited one may carry the UID too)."""
    found = []
    for line in lines:
        m = re.match(rb"\* (\d+) FETCH \(.*FLAGS \(([^)]*)\)", line)
        if m:
            found.append((int(m.group(1)), set(m.group(2).split()) - {b"\\Recent"}))
    return found


def test_silent_store_reports_the_other_sessions_change_once_and_not_its_own(
    server: WaypostServer,
) -> None:
    a, b = pair(server, "ann", 3)
    ok(b.cmd("f", "STORE 2 +FLAGS (\\Flagged)"), "f")
    lines = ok(a.cmd("t", "STORE 1 +FLAGS.SILENT (\\Answered)"), "t")
    assert fetch_lines(lines) == [(2, {b"\\Flagged"})]
    assert fetch_lines(ok(a.cmd("n", "NOOP"), "n")) == []  # neither is told again
    a.close()
    b.close()


def test_store_shows_its_own_flags_once(server: WaypostServer) -> None:
    a, b = pair(server, "ben", 2)
    lines = ok(a.cmd("t", "STORE 1:2 +FLAGS (\\Seen)"), "t")
    assert fetch_lines(lines) == [(1, {b"\\Seen"}), (2, {b"\\Seen"})]
    assert fetch_lines(ok(a.cmd("n", "NOOP"), "n")) == []
    assert fetch_lines(ok(b.cmd("n", "NOOP"), "n")) == [(1, {b"\\Seen"}), (2, {b"\\Seen"})]
    a.close()
    b.close()


def test_expunge_is_reported_once_with_the_other_sessions_expunge(server: WaypostServer) -> None:
    a, b = pair(server, "cid", 4)
    ok(b.cmd("d", "STORE 4 +FLAGS.SILENT (\\Deleted)"), "d")
    ok(b.cmd("x", "EXPUNGE"), "x")  # b removes message 4 (UID 4)
    ok(a.cmd("d", "STORE 1 +FLAGS.SILENT (\\Deleted)"), "d")  # a still holds 4 messages
    lines = ok(a.cmd("x", "EXPUNGE"), "x")
    assert [line for line in lines if line.endswith(b"EXPUNGE")] == [
        b"* 1 EXPUNGE", b"* 3 EXPUNGE",
    ]  # fmt: skip
    assert ok(a.cmd("n", "NOOP"), "n") == []
    assert ok(a.cmd("u", "UID SEARCH ALL"), "u") == [b"* SEARCH 2 3"]
    a.close()
    b.close()


def test_append_into_the_selected_mailbox_is_one_exists(server: WaypostServer) -> None:
    a, b = pair(server, "dan", 1)
    ok(b.cmd("p", append_cmd("INBOX")), "p")  # another session's new message
    lines = ok(a.cmd("p", append_cmd("INBOX")), "p")  # and this one's
    assert [line for line in lines if line.endswith(b"EXISTS")] == [b"* 3 EXISTS"]
    assert ok(a.cmd("n", "NOOP"), "n") == []
    lines = ok(a.cmd("f", "FETCH 1:* (UID)"), "f")
    assert lines == [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 2)", b"* 3 FETCH (UID 3)"]
    a.close()
    b.close()
