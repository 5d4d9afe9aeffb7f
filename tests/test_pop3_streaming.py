"""POP3 RETR and TOP as streams: dot-stuffing in chunks, large messages, many clients.

The pure part (``protocols/pop3/stuffing.py``) is checked against a
line-by-line reference and with hypothesis for any bytes cut into any
chunks; the server part over real sockets: messages go in byte-exact
through a raw IMAP APPEND (imaplib would rewrite line ends), come out
through a raw POP3 socket that reads the response exactly as sent, and
DELE+QUIT is checked from IMAP. One server for the module; every test
works on its own accounts.
"""

from __future__ import annotations

import asyncio
import hashlib
import imaplib
import itertools
import re
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.pop3_session import StubOffice, run_session
from tests.support.pop3_stream import DOMAIN, PW, TIMEOUT, Pop, append, serve, top_reference
from tests.support.server import WaypostServer

from waypost.protocols.pop3 import session as pop3_session
from waypost.protocols.pop3 import wire
from waypost.protocols.pop3.stuffing import DotStuffer, TopCutter, stuff
from waypost.services.mailaccess.maildrop import STREAM_OVER

CHUNK = pop3_session.STREAM_CHUNK

# -- references -----------------------------------------------------------------------


def normalized(data: bytes) -> bytes:
    """What a client gets back after un-stuffing: bare LF made CRLF, and a
    final CRLF when the message lacked one (RFC 1939 §3)."""
    data = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    return data + b"\r\n" if data and not data.endswith(b"\n") else data


def unstuff(body: bytes) -> bytes:
    """Undo a multi-line response as RFC 1939 §3 tells a client to: the
    ``.`` line ends it, a leading ``.`` of any other line is removed."""
    assert body.endswith(b".\r\n")
    content = body[:-3]
    if not content:
        return b""
    assert content.endswith(b"\r\n")
    lines = content[:-2].split(b"\r\n")
    assert b"." not in lines, "a line that is just '.' would end the response early"
    return b"".join((ln[1:] if ln[:1] == b"." else ln) + b"\r\n" for ln in lines)


def fed(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the (sorted, in-range) positions ``cuts``."""
    points = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def stuffed_in_chunks(chunks: list[bytes]) -> bytes:
    stuffer = DotStuffer()
    return b"".join(stuffer.feed(c) for c in chunks) + stuffer.end()


# -- the pure part --------------------------------------------------------------------

TRICKY = (
    b"From: a@b.test\r\nSubject: dots\r\n\r\n"
    b".\r\n..\r\n.x\r\n...three\r\nmid.dle\r\n.\r\n\r\n."
    b"\nbare LF\n.after bare LF\r\nbare CR\r.\r\n\r\r\nend"
)


def test_dot_lines_and_a_message_without_final_crlf() -> None:
    assert stuff(b"") == b".\r\n"
    assert stuff(b".") == b"..\r\n.\r\n"
    assert stuff(b".\r\n") == b"..\r\n.\r\n"
    assert stuff(b"a\r\n.\r\nb") == b"a\r\n..\r\nb\r\n.\r\n"
    assert stuff(b"..\r\n") == b"...\r\n.\r\n"
    assert stuff(b"no end") == b"no end\r\n.\r\n"
    assert stuff(b"ends in CR\r") == b"ends in CR\r\r\n.\r\n"
    assert stuff(b"x\n.y\n") == b"x\r\n..y\r\n.\r\n"
    assert unstuff(stuff(TRICKY)) == normalized(TRICKY)


def test_every_cut_of_a_tricky_message_stuffs_the_same() -> None:
    """Dot-stuffing at chunk boundaries: a line that starts right at a cut,
    a CRLF cut in two, a bare LF at the start of a chunk."""
    whole = stuff(TRICKY)
    for i in range(len(TRICKY) + 1):
        assert stuffed_in_chunks([TRICKY[:i], TRICKY[i:]]) == whole, i
        for j in range(i, len(TRICKY) + 1, 7):
            assert stuffed_in_chunks(fed(TRICKY, [i, j])) == whole, (i, j)
    assert stuffed_in_chunks([bytes([b]) for b in TRICKY]) == whole


def test_wire_multiline_in_any_piece_size_is_the_same() -> None:
    whole = b"".join(wire.multiline(TRICKY, chunk=10**6))
    for size in (1, 2, 3, 5, 64):
        assert b"".join(wire.multiline(TRICKY, chunk=size)) == whole


@pytest.mark.parametrize("lines", [0, 1, 3, 1000])
def test_top_cutter_in_chunks(lines: int) -> None:
    expected = top_reference(TRICKY, lines)
    for i in range(len(TRICKY) + 1):
        cutter = TopCutter(lines)
        assert cutter.feed(TRICKY[:i]) + cutter.feed(TRICKY[i:]) == expected, i
    assert wire.top(TRICKY, 0) == TRICKY[: TRICKY.index(b"\r\n\r\n") + 4]
    assert wire.top(TRICKY, 1000) == TRICKY  # more lines than the body has


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
texts = st.lists(
    st.sampled_from([b".", b"..", b"\r\n", b"\n", b"\r", b"a", b"bc", b" ", b"\r\n.", b"\n.\n"]),
    max_size=60,
).map(b"".join)
any_bytes = st.one_of(st.binary(max_size=300), texts)
cuts = st.lists(st.integers(0, 400), max_size=12)


@FUZZ
@given(any_bytes, cuts)
def test_unstuffed_gives_the_input_back_for_any_bytes_and_any_chunking(
    data: bytes, points: list[int]
) -> None:
    out = stuffed_in_chunks(fed(data, points))
    assert out == stuff(data)
    assert unstuff(out) == normalized(data)
    if b"\r" not in data.replace(b"\r\n", b"") and b"\n" not in data.replace(b"\r\n", b""):
        assert unstuff(out) == (data if not data or data.endswith(b"\r\n") else data + b"\r\n")


@FUZZ
@given(any_bytes, cuts, st.integers(0, 20))
def test_top_cutter_for_any_bytes_and_any_chunking(
    data: bytes, points: list[int], lines: int
) -> None:
    cutter = TopCutter(lines)
    out = b""
    for chunk in fed(data, points):
        out += cutter.feed(chunk)
        if cutter.done:
            break
    assert out == top_reference(data, lines)


# -- over real sockets ----------------------------------------------------------------

ACCOUNTS = [f"s{i}" for i in range(21)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    yield from serve(tmp_path_factory, ACCOUNTS)


ODD = [
    b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\n.\r\n",
    b"Subject: no final CRLF\r\n\r\nlast line.",
    b"Subject: only dots\r\n\r\n.",
    b"Subject: top\r\n\r\nb1\r\nb2\r\nb3\r\n",
]


def test_retr_sends_dot_lines_and_messages_without_final_crlf_exactly(
    server: WaypostServer,
) -> None:
    append(server, "s0", ODD)
    pop = Pop(server, "s0")
    try:
        for n, message in enumerate(ODD, 1):
            status, body = pop.multi(f"RETR {n}")
            assert status == b"+OK %d octets\r\n" % len(message)
            assert body == stuff(message)
            assert unstuff(body) == normalized(message)
        assert pop.multi("RETR 1")[1] == b"Subject: dots\r\n\r\n..\r\n...\r\n..x\r\n..\r\n.\r\n"
        assert pop.multi("RETR 2")[1] == b"Subject: no final CRLF\r\n\r\nlast line.\r\n.\r\n"
    finally:
        pop.quit()


def test_top_with_zero_lines_and_with_more_lines_than_the_body(server: WaypostServer) -> None:
    append(server, "s1", ODD)
    pop = Pop(server, "s1")
    try:
        assert pop.multi("TOP 4 0")[1] == b"Subject: top\r\n\r\n.\r\n"
        assert pop.multi("TOP 4 2")[1] == b"Subject: top\r\n\r\nb1\r\nb2\r\n.\r\n"
        assert pop.multi("TOP 4 99")[1] == ODD[3] + b".\r\n"
        assert pop.multi("TOP 2 5")[1] == b"Subject: no final CRLF\r\n\r\nlast line.\r\n.\r\n"
        assert pop.multi("TOP 1 1")[1] == b"Subject: dots\r\n\r\n..\r\n.\r\n"
        assert pop.command("TOP 9 1").startswith(b"-ERR")
    finally:
        pop.quit()


def big_message(size: int) -> bytes:
    """About ``size`` octets of lines, with a line starting with a dot, a
    line that is just ``.`` and a CRLF cut in two at every chunk boundary."""
    head = b"From: big@stream.test\r\nSubject: big\r\n\r\n"
    out = bytearray(head)
    line = 0
    while len(out) < size:
        boundary = (len(out) // CHUNK + 1) * CHUNK
        gap = boundary - len(out)
        if gap <= 80:  # place something awkward right at the next boundary
            kind = (len(out) // CHUNK) % 3
            if kind == 0:
                out += b"x" * (gap - 1) + b"\r\n" + b".dot at a boundary\r\n"  # CRLF cut
            elif kind == 1:
                out += b"y" * (gap - 2) + b"\r\n" + b".\r\n"  # "." starts a chunk
            else:
                out += b"z" * (gap - 2) + b"\r\n" + b"..\r\n"
            continue
        out += b"line %06d %s\r\n" % (line, b"." * (line % 5) + b"text" * 12)
        line += 1
    return bytes(out)


def test_a_large_message_is_streamed_byte_exact(server: WaypostServer) -> None:
    message = big_message(5 * 1024 * 1024 + 12345)
    assert len(message) > STREAM_OVER
    small = b"Subject: small\r\n\r\n.one\r\n"
    append(server, "s2", [small, message])
    pop = Pop(server, "s2")
    try:
        status, body = pop.multi("RETR 2")
        assert status == b"+OK %d octets\r\n" % len(message)
        assert body == stuff(message)
        assert unstuff(body) == message
        assert body.count(b"\r\n..dot at a boundary\r\n") == message.count(b"\r\n.dot at a")
        assert pop.multi("TOP 2 3")[1] == stuff(top_reference(message, 3))
        assert pop.multi("RETR 1")[1] == b"Subject: small\r\n\r\n..one\r\n.\r\n"
        assert pop.multi("LIST")[1] == b"1 %d\r\n2 %d\r\n.\r\n" % (len(small), len(message))
    finally:
        pop.quit()


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_25_mb_message_does_not_cost_25_mb_per_client(server: WaypostServer) -> None:
    """Four clients retrieve a 25 MB message at once: the server's peak
    memory grows by far less than one copy of it."""
    size = 25 * 1024 * 1024
    message = big_message(size)
    names = ["s3", "s4", "s5", "s6"]
    for name in names:
        append(server, name, [message])
    assert server.proc is not None
    pid = server.proc.pid
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak to the current RSS
    except OSError as exc:
        pytest.fail(f"cannot reset the peak RSS (needs Linux 4.0+ and root): {exc}")
    before = _peak_rss_kb(pid)
    clients = [Pop(server, name) for name in names]
    results: dict[str, bytes] = {}

    def retrieve(name: str, pop: Pop) -> None:
        results[name] = pop.multi("RETR 1")[1]

    threads = [
        threading.Thread(target=retrieve, args=(n, p)) for n, p in zip(names, clients, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    for pop in clients:
        pop.quit()
    grown_mb = (_peak_rss_kb(pid) - before) / 1024
    expected = stuff(message)
    assert all(results.get(n) == expected for n in names)
    assert grown_mb < 20, f"peak RSS grew by {grown_mb:.0f} MB for 4 x 25 MB"


def test_ten_clients_on_different_maildrops_at_once(server: WaypostServer) -> None:
    names = [f"s{i}" for i in range(10, 20)]
    mail = {
        name: [
            b"Subject: %s %d\r\n\r\n%s\r\n.%s\r\n"
            % (name.encode(), i, b"x" * (i * 997), name.encode())
            for i in range(40)
        ]
        for name in names
    }
    for name in names:
        append(server, name, mail[name])
    start = threading.Barrier(len(names), timeout=TIMEOUT)
    got: dict[str, list[bytes]] = {}
    errors: list[BaseException] = []

    def client(name: str) -> None:
        try:
            pop = Pop(server, name)
            start.wait()
            got[name] = [unstuff(pop.multi(f"RETR {n}")[1]) for n in range(1, len(mail[name]) + 1)]
            pop.quit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors, errors
    for name in names:
        assert got[name] == mail[name], name


def test_dele_and_quit_remove_the_messages_from_imap(server: WaypostServer) -> None:
    mail = [b"Subject: m%d\r\n\r\nbody %d\r\n" % (i, i) for i in range(1, 6)]
    append(server, "s7", mail)
    imap = imaplib.IMAP4("127.0.0.1", server.port("IMAPPort"), timeout=TIMEOUT)
    imap.login(f"s7@{DOMAIN}", PW)
    imap.select("INBOX")
    _, data = imap.uid("SEARCH", "ALL")
    all_uids = data[0].split()
    imap.logout()
    pop = Pop(server, "s7")
    _, listing = pop.multi("UIDL")
    ids = [line.split()[1] for line in listing.split(b"\r\n")[:-2]]
    assert [i.split(b".")[1] for i in ids] == all_uids  # UIDVALIDITY.UID, as IMAP sees them
    pop.multi("RETR 1")  # reads ahead: DELE must still remove it
    assert pop.command("DELE 1").startswith(b"+OK")
    assert pop.command("DELE 4").startswith(b"+OK")
    assert pop.command("RETR 4").startswith(b"-ERR")
    assert pop.quit().startswith(b"+OK")
    imap = imaplib.IMAP4("127.0.0.1", server.port("IMAPPort"), timeout=TIMEOUT)
    try:
        imap.login(f"s7@{DOMAIN}", PW)
        _, data = imap.select("INBOX")
        assert data == [b"3"]
        _, data = imap.uid("SEARCH", "ALL")
        assert data[0].split() == [all_uids[1], all_uids[2], all_uids[4]]
        _, data = imap.fetch("1:*", "(BODY.PEEK[])")
        bodies = [part[1] for part in data if isinstance(part, tuple)]
        assert bodies == [mail[1], mail[2], mail[4]]
    finally:
        imap.logout()


def test_a_message_expunged_over_imap_after_login_is_an_error(server: WaypostServer) -> None:
    mail = [b"Subject: e%d\r\n\r\nbody\r\n" % i for i in range(3)]
    append(server, "s8", mail)
    pop = Pop(server, "s8")
    try:
        imap = imaplib.IMAP4("127.0.0.1", server.port("IMAPPort"), timeout=TIMEOUT)
        imap.login(f"s8@{DOMAIN}", PW)
        imap.select("INBOX")
        imap.store("2", "+FLAGS", "(\\Deleted)")
        imap.expunge()
        imap.logout()
        assert pop.command("RETR 2") == b"-ERR Message was removed by another session\r\n"
        assert unstuff(pop.multi("RETR 3")[1]) == mail[2]
    finally:
        pop.quit()


def test_a_large_delivered_message_with_prefix_and_omitted_ranges_streams_as_imap_sees_it(
    server: WaypostServer,
) -> None:
    """Delivery stores a Return-Path prefix and omits the sender's own
    Return-Path from the blob: the pieces of a streamed RETR must add up to
    the same bytes IMAP serves whole."""
    body = big_message(700 * 1024)
    message = b"Return-Path: <forged@elsewhere.test>\r\n" + body
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=TIMEOUT) as smtp:
        smtp.sendmail("real@sender.test", [f"s9@{DOMAIN}"], message)
    imap = imaplib.IMAP4("127.0.0.1", server.port("IMAPPort"), timeout=TIMEOUT)
    try:
        imap.login(f"s9@{DOMAIN}", PW)
        for _ in range(200):  # delivery is asynchronous: wait for it, bounded
            _, data = imap.select("INBOX")
            if data != [b"0"]:
                break
            time.sleep(0.1)
        _, data = imap.fetch("1", "(BODY.PEEK[])")
        stored = next(part[1] for part in data if isinstance(part, tuple))
    finally:
        imap.logout()
    assert stored.startswith(b"Return-Path: <real@sender.test>\r\n")
    assert b"forged@elsewhere.test" not in stored
    assert len(stored) > STREAM_OVER
    pop = Pop(server, "s9")
    try:
        status, retr = pop.multi("RETR 1")
        assert status == b"+OK %d octets\r\n" % len(stored)
        assert unstuff(retr) == stored
        assert pop.multi("TOP 1 4")[1] == stuff(top_reference(stored, 4))
    finally:
        pop.quit()


def test_the_idle_timer_restarts_with_every_command() -> None:
    """The idle timeout is one re-arming timer per session: a client that
    pauses shorter than the timeout between commands is kept however long
    the session lasts; one that then stays silent is told and dropped."""
    office = StubOffice(POP3IdleTimeout="1")

    async def script(line, cmd, reader) -> None:  # type: ignore[no-untyped-def]
        assert (await line()).startswith("+OK")
        started = time.monotonic()
        for _ in range(5):  # 2.5 s in all, over twice the timeout
            await asyncio.sleep(0.5)  # the client's pause is what is tested
            assert await cmd("CAPA") == "+OK Capability list follows"
            while await line() != ".":
                pass
        assert time.monotonic() - started > 2
        quiet = time.monotonic()
        assert await line() == "-ERR Idle for too long, closing connection (no messages deleted)"
        assert await reader.read() == b""
        assert 0.9 <= time.monotonic() - quiet < 5

    run_session(office, script)


def test_a_message_that_breaks_off_while_streamed_ends_the_connection_without_the_dot(
    server: WaypostServer,
) -> None:
    """+OK has gone out when the body goes missing half-way (its blob file
    removed under the server): an -ERR now would read as message text, so
    the server closes the connection and the client never sees the final
    ``.`` line (RFC 1939 §3), and deletes nothing."""
    message = big_message(12 * 1024 * 1024)
    append(server, "s20", [message])
    blob = server.data / "blobs" / hashlib.sha256(message).hexdigest()[:2]
    blob = blob / hashlib.sha256(message).hexdigest()
    assert blob.exists()
    pop = Pop(server, "s20")
    pop.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    pop.sock.sendall(b"RETR 1\r\n")
    got = pop.sock.recv(65536)  # the server is now streaming and soon blocked on the socket
    assert got.startswith(b"+OK %d octets\r\n" % len(message))
    blob.unlink()
    for _ in range(100_000):  # bounded: 12 MB in pieces of at least a byte... until EOF
        chunk = pop.sock.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    pop.sock.close()
    assert 0 < len(got) < len(message)
    assert not got.endswith(b"\r\n.\r\n")
