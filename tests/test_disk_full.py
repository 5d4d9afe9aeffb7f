"""A full data directory (issue 13, point 6), on a real tmpfs the test mounts.

When the disk is full: SMTP answers ``452 4.3.1 Insufficient system
storage`` at RCPT (not enough free space) or at the end of DATA (the body
did not fit), IMAP APPEND answers ``NO [OVERQUOTA]``, reading mail over POP3
and IMAP keeps working, local delivery and the relay queue defer and retry,
nothing acknowledged is lost or stored twice, no traceback is logged, and
the server takes mail again by itself once space returns. A server started
on a full disk stops with one line that says so.
"""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.delivery import FakeRelay, harness, run
from tests.support.server import WaypostServer
from tests.support.services import body, open_world, submission
from tests.support.tmpfs import fill, free, mounted

from waypost.services.container import Services
from waypost.services.mailstore import Mailstore
from waypost.storage.interface import StorageFull

DOMAIN = "full.dom"
USER = f"fay@{DOMAIN}"
READER = f"rita@{DOMAIN}"
PW = "full-pw-1234"
TIMEOUT_S = 30
FULL = (452, b"4.3.1 Insufficient system storage")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    # the data directory is the mount point: the server's log stays outside it
    with mounted(tmp_path_factory.mktemp("diskfull") / "var", "16m") as data:
        srv = WaypostServer(data).init()
        srv.cli("domain", "add", DOMAIN)
        for account in (USER, READER):
            srv.cli("account", "add", account, "--password", PW)
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()


def message(tag: str, size: int = 0) -> bytes:
    text = f"From: a@remote.example\r\nTo: undisclosed-recipients:;\r\nMessage-ID: <{tag}@test>\r\n" \
           f"Subject: {tag}\r\n\r\nbody of {tag}\r\n"
    return text.encode() + b"x" * size + (b"\r\n" if size else b"")


def send(srv: WaypostServer, tag: str, to: str = USER) -> tuple[int, bytes]:
    """MAIL, RCPT, DATA (no SIZE parameter); the first reply that is not 250."""
    with smtplib.SMTP("127.0.0.1", srv.smtp, timeout=TIMEOUT_S) as client:
        client.ehlo("client.example")
        code, text = client.mail("a@remote.example")
        assert code == 250, text
        code, text = client.rcpt(to)
        if code != 250:
            return code, text
        return client.data(message(tag))


def send_big(srv: WaypostServer, tag: str, size: int) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", srv.smtp, timeout=TIMEOUT_S) as client:
        client.ehlo("client.example")
        assert client.mail("a@remote.example")[0] == 250
        code, text = client.rcpt(USER)
        assert code == 250, text
        return client.data(message(tag, size))


def imap_login(srv: WaypostServer, user: str = USER) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", srv.port("IMAPPort"), timeout=TIMEOUT_S)
    client.login(user, PW)
    return client


def inbox_ids(srv: WaypostServer, user: str = USER, readonly: bool = True) -> list[str]:
    """Message-IDs of every message in the INBOX, read over IMAP (repeats kept)."""
    client = imap_login(srv, user)
    try:
        typ, data = client.select("INBOX", readonly=readonly)
        assert typ == "OK", data
        if int(data[0]) == 0:
            return []
        typ, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert typ == "OK", data
        text = b"".join(part[1] for part in data if isinstance(part, tuple))
        return re.findall(r"<([^@>]+)@test>", text.decode())
    finally:
        client.logout()


def pop3_bodies(srv: WaypostServer) -> list[bytes]:
    client = poplib.POP3("127.0.0.1", srv.port("POP3Port"), timeout=TIMEOUT_S)
    try:
        client.user(USER)
        client.pass_(PW)
        count, _ = client.stat()
        return [b"\r\n".join(client.retr(n)[1]) for n in range(1, count + 1)]
    finally:
        client.quit()


def append(srv: WaypostServer, tag: str) -> tuple[str, list[bytes]]:
    client = imap_login(srv)
    try:
        typ, data = client.append("INBOX", None, None, message(tag))
        return typ, data
    finally:
        client.logout()


def delivered(srv: WaypostServer, *tags: str, user: str = USER) -> bool:
    ids = inbox_ids(srv, user)
    return all(tag in ids for tag in tags)


def test_a_full_disk_refuses_mail_keeps_reading_and_recovers_without_a_restart(
    server: WaypostServer,
) -> None:
    acked = []
    code, text = send(server, "before")
    assert code == 250, text
    acked.append("before")
    server.wait_for(lambda: delivered(server, "before"), what="the first message delivered")
    pid = server.proc.pid if server.proc else 0

    filler = fill(server.data)
    try:
        assert free(server.data) < 1024 * 1024
        # SMTP: refused at RCPT, before the body travels (RFC 3463 X.3.1)
        for n in range(3):
            assert send(server, f"refused{n}") == FULL
        # IMAP APPEND: NO [OVERQUOTA], as Dovecot answers a full disk
        typ, data = append(server, "append-refused")
        assert typ == "NO", data
        assert data[0].startswith(b"[OVERQUOTA]"), data
        # reading keeps working: IMAP FETCH and POP3 RETR
        assert inbox_ids(server) == ["before"]
        (stored,) = pop3_bodies(server)
        assert b"body of before" in stored
    finally:
        filler.unlink()

    # space is back: the same server takes mail again
    assert server.proc is not None and server.proc.pid == pid and server.proc.poll() is None
    code, text = send(server, "after")
    assert code == 250, text
    acked.append("after")
    typ, data = append(server, "appended")
    assert typ == "OK", data
    acked.append("appended")
    server.wait_for(lambda: delivered(server, *acked), what="every acknowledged message")
    ids = inbox_ids(server)
    assert sorted(ids) == sorted(acked), ids  # each exactly once, nothing refused stored
    logs = server.logs()
    assert "Traceback" not in logs
    assert "the data directory is full" in logs
    assert "the data directory has space again" in logs


def test_a_body_that_does_not_fit_gets_452_at_the_end_of_data_and_leaves_nothing(
    server: WaypostServer,
) -> None:
    room = 3 * 1024 * 1024
    filler = fill(server.data, leave=room)
    try:
        before = free(server.data)
        assert before >= 2 * 1024 * 1024  # above StorageMinFree: RCPT says 250
        # a declared SIZE that does not fit is refused at RCPT, before the body
        with smtplib.SMTP("127.0.0.1", server.smtp, timeout=TIMEOUT_S) as client:
            client.ehlo("client.example")
            assert client.mail("a@remote.example", [f"SIZE={before}"])[0] == 250
            assert client.rcpt(USER) == FULL
        # no SIZE parameter: the server learns the size only from the body
        code, text = send_big(server, "too-big", 2 * room)
        assert (code, text) == FULL
        assert free(server.data) >= before - 64 * 1024, "the partial body was left behind"
        code, text = send(server, "fits")  # a small one still fits
        assert code == 250, text
    finally:
        filler.unlink()
    server.wait_for(lambda: delivered(server, "fits"), what="the small message delivered")
    ids = inbox_ids(server)
    assert ids.count("fits") == 1 and "too-big" not in ids
    assert "Traceback" not in server.logs()


def test_what_readers_change_on_a_full_disk_is_refused_cleanly_or_done_whole(
    server: WaypostServer,
) -> None:
    """SELECT (read-write) and FETCH work; flag changes and POP3's deletions
    need a database write, which SQLite may still fit in its log: either
    done, or refused with the protocol's temporary error, never half done."""
    for tag in ("r1", "r2"):
        assert send(server, tag, READER)[0] == 250
    server.wait_for(lambda: delivered(server, "r1", "r2", user=READER),
                    what="the reader's messages")
    filler = fill(server.data)
    try:
        assert sorted(inbox_ids(server, READER, readonly=False)) == ["r1", "r2"]
        client = imap_login(server, READER)
        try:
            assert client.select("INBOX")[0] == "OK"
            typ, data = client.store("1", "+FLAGS", "(\\Flagged)")
            assert typ == "OK" or data[0].startswith(b"[OVERQUOTA]"), (typ, data)
            flagged = typ == "OK"
        finally:
            client.logout()
        pop = poplib.POP3("127.0.0.1", server.port("POP3Port"), timeout=TIMEOUT_S)
        pop.user(READER)
        pop.pass_(PW)
        pop.dele(2)
        try:
            answer = pop.quit()
            removed = True
        except poplib.error_proto as exc:
            assert exc.args[0].startswith(b"-ERR [SYS/TEMP]"), exc
            removed = False
        else:
            assert answer.startswith(b"+OK"), answer
    finally:
        filler.unlink()
    ids = inbox_ids(server, READER)
    assert sorted(ids) == (["r1"] if removed else ["r1", "r2"])
    client = imap_login(server, READER)
    try:
        client.select("INBOX", readonly=True)
        typ, data = client.fetch("1", "(FLAGS)")
        assert typ == "OK" and (b"\\Flagged" in data[0]) == flagged, data
    finally:
        client.logout()
    assert "Traceback" not in server.logs()


def test_a_server_started_on_a_full_disk_says_why_and_starts_once_space_returns(
    tmp_path: Path,
) -> None:
    """SQLite cannot create its shared-memory file on a full disk: the server
    stops with one line naming the cause, not a traceback."""
    with mounted(tmp_path / "var", "16m") as data:
        srv = WaypostServer(data).init()
        filler = fill(data)
        try:
            with pytest.raises(RuntimeError) as failed:
                srv.start(timeout=60)
        finally:
            filler.unlink()
        assert "the file system of the data directory is full" in str(failed.value)
        assert "Traceback" not in str(failed.value)
        srv.start()
        assert srv.stop() == 0


# -- delivery while the disk is full (the real queue, runner and store, in-process) --


@pytest.fixture
def full_world(tmp_path: Path) -> Iterator[Services]:
    with mounted(tmp_path / "data", "8m") as data:
        svc = open_world(data)
        svc.set_setting("StorageFullRetry", "0")  # retry at once when space is back
        try:
            yield svc
        finally:
            svc.store.close()


def test_local_delivery_defers_on_a_full_disk_and_delivers_once_when_space_returns(
    full_world: Services,
) -> None:
    svc = full_world
    mail = Mailstore(svc.store)

    async def go() -> None:
        queue, runner = await harness(svc)
        try:
            message_id = await queue.submit(submission(svc, "alice@main.dom"))
            filler = fill(Path(svc.store.data_dir))
            try:
                with pytest.raises(StorageFull):  # SQLITE_FULL, not a plain error
                    svc.set_setting("MaxMessageSize", "49M")
                await runner.run_once()
                assert mail.list_messages("alice@main.dom") == []
                (queued,) = svc.store.queue_list()
                assert queued.id == message_id
                assert queue.full_notice.full
            finally:
                filler.unlink()
            await runner.run_once()
            (stored,) = [mail.read_message("alice@main.dom", "INBOX", m.uid)
                         for m in mail.list_messages("alice@main.dom")]
            assert stored.endswith(body())
            assert svc.store.queue_list() == []
            assert not queue.full_notice.full
        finally:
            await queue.close()

    run(go)


def test_relayed_mail_is_recorded_after_a_full_disk_and_never_relayed_twice(
    full_world: Services,
) -> None:
    svc = full_world
    fillers: list[Path] = []

    class FillingRelay(FakeRelay):
        """The disk fills while the message is relayed (after the queue
        recipient was claimed: a claim is a write, so none is made on a full
        disk)."""

        async def deliver(self, queue: str, messages: Any, ctx: Any) -> list[Any]:
            out = await super().deliver(queue, messages, ctx)
            fillers.append(fill(Path(svc.store.data_dir)))
            return out

    relay = FillingRelay()

    async def go() -> None:
        queue, runner = await harness(svc, relay)
        try:
            await queue.submit(submission(svc, "someone@remote.example"))
            try:
                await runner.run_once()  # relayed; its "delivered" cannot be written
                assert len(relay.calls) == 1
                assert len(svc.store.queue_list()) == 1
                await runner.run_once()
                assert len(relay.calls) == 1  # kept in memory, not relayed again
            finally:
                for filler in fillers:
                    filler.unlink()
            await runner.run_once()
            assert svc.store.queue_list() == []
            assert len(relay.calls) == 1
        finally:
            await queue.close()

    run(go)


def test_a_submission_the_database_cannot_take_is_refused_whole(full_world: Services) -> None:
    """The body is already on disk (the same bytes, so no new blob), but the
    queue rows cannot be committed: SQLITE_FULL, nothing half queued."""
    svc = full_world

    async def go() -> None:
        queue, _runner = await harness(svc)
        try:
            await queue.submit(submission(svc, "alice@main.dom"))
            filler = fill(Path(svc.store.data_dir))
            try:
                with pytest.raises(StorageFull, match="database"):
                    await queue.submit(submission(svc, "alice@main.dom"))
                assert len(svc.store.queue_list()) == 1
            finally:
                filler.unlink()
            await queue.submit(submission(svc, "alice@main.dom"))
            assert len(svc.store.queue_list()) == 2
            assert not queue.full_notice.full
        finally:
            await queue.close()

    run(go)
