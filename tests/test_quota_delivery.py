"""Local delivery to an account over its quota (smtp.md §7: "Account over
quota -> temporary failure, retried for 1 day, then bounced"), end to end:
SMTP in (smtplib), a ``waypost serve`` process, IMAP to look.

* a message that does not fit is stored nowhere and stays queued with a
  ``4.2.2`` (mailbox full) error; once there is room (a higher limit, or
  messages expunged) the next retry delivers it, once;
* another recipient of the same message is not held back by it;
* after ``OverQuotaLifetime`` (one day by default) it bounces: the sender
  gets a DSN saying ``5.2.2`` and the account still holds nothing of it.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator

import pytest
from tests.support.imap import Raw
from tests.support.server import WaypostServer

PW = "qdeliv-pw-1234"
DOMAIN = "qdeliv.dom"
TIMEOUT = 15


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("qdeliv") / "var").init()
    srv.cli("domain", "add", DOMAIN)
    for name in ("full", "roomy", "sender", "bounced"):
        srv.cli("account", "add", f"{name}@{DOMAIN}", "--password", PW)
    srv.cli("account", "set", f"full@{DOMAIN}", "MaxAccountSize", "4K")
    srv.cli("account", "set", f"bounced@{DOMAIN}", "MaxAccountSize", "2K")
    srv.cli("settings", "set", "QueueRetryFirst", "1")
    srv.cli("settings", "set", "QueueRetryMax", "1")
    srv.start()
    yield srv
    srv.stop()


def message(subject: str, size: int) -> bytes:
    head = f"From: sender@{DOMAIN}\r\nSubject: {subject}\r\n\r\n".encode()
    return head + b"y" * (size - len(head))


def send(server: WaypostServer, rcpts: list[str], data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=TIMEOUT) as smtp:
        smtp.sendmail(f"sender@{DOMAIN}", rcpts, data)


def fetched(server: WaypostServer, user: str, item: str) -> bytes:
    """``item`` of every message in the user's INBOX, read over IMAP (EXAMINE: no side effects)."""
    raw = Raw(server.port("IMAPPort"))
    raw.login(f"{user}@{DOMAIN}", PW)
    raw.cmd("s", "EXAMINE INBOX")
    lines = raw.cmd("f", f"FETCH 1:* ({item})")
    raw.close()
    return b"\n".join(lines)


def subjects(server: WaypostServer, user: str) -> list[str]:
    text = fetched(server, user, "BODY.PEEK[HEADER.FIELDS (SUBJECT)]").decode("utf-8", "replace")
    return re.findall(r"Subject: ([^\r\n]+)", text)


def bodies(server: WaypostServer, user: str) -> bytes:
    return fetched(server, user, "BODY.PEEK[]")


def queue_text(server: WaypostServer) -> str:
    return server.cli("queue", "list").stdout


def test_over_quota_is_deferred_then_delivered_once_there_is_room(server: WaypostServer) -> None:
    send(server, [f"full@{DOMAIN}"], message("first", 3000))
    server.wait_for(lambda: subjects(server, "full") == ["first"], what="first delivered")
    send(server, [f"full@{DOMAIN}", f"roomy@{DOMAIN}"], message("second", 3000))
    server.wait_for(lambda: subjects(server, "roomy") == ["second"], what="roomy has it")
    server.wait_for(lambda: "4.2.2" in queue_text(server), what="deferred as mailbox full")
    assert "full@" in queue_text(server)
    assert subjects(server, "full") == ["first"]  # stored nowhere, several retries later
    server.cli("account", "set", f"full@{DOMAIN}", "MaxAccountSize", "8K")
    server.wait_for(lambda: subjects(server, "full") == ["first", "second"], what="retried")
    server.wait_for(lambda: "full@" not in queue_text(server), what="queue drained")
    assert subjects(server, "full") == ["first", "second"]  # once


def test_over_quota_bounces_after_the_lifetime(server: WaypostServer) -> None:
    server.cli("settings", "set", "OverQuotaLifetime", "0")
    try:
        send(server, [f"bounced@{DOMAIN}"], message("too big", 3000))
        server.wait_for(lambda: b"5.2.2" in bodies(server, "sender"), what="the bounce")
        assert subjects(server, "bounced") == []
        report = bodies(server, "sender")
        assert f"bounced@{DOMAIN}".encode() in report and b"mailbox full" in report
        server.wait_for(lambda: "bounced@" not in queue_text(server), what="queue drained")
    finally:
        server.cli("settings", "set", "OverQuotaLifetime", "86400")


def test_the_setting_is_documented_with_its_default(server: WaypostServer) -> None:
    out = server.cli("settings", "show", "OverQuotaLifetime").stdout
    assert "86400" in out
