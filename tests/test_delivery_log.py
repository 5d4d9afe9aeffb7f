"""Every delivery logged, one line each (issue 13 point 5), end to end.

A real Waypost delivers to a local account and relays to a recording SMTP
sink on loopback that accepts, defers (4xx, then accepts after a flush) or
refuses (5xx); a fourth domain is held. Each outcome must appear as one
INFO line of the delivery log with the Postfix-like fields, as text and,
from a server started with ``--log-format json``, as a JSON object; and
``waypost queue show`` must list each recipient's history.
"""

from __future__ import annotations

import json
import re
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.server import WaypostServer
from tests.support.smtp_sink import SMTPSink

from waypost.protocols.smtp.wire import Reply

DELAY = r"delay=\d+\.\d\d"


@pytest.fixture(scope="module")
def sink() -> Iterator[SMTPSink]:
    with SMTPSink("127.0.0.1", 0, hostname="sink.test") as s:
        yield s


def _server(data: Path, sink: SMTPSink, *serve_args: str) -> WaypostServer:
    server = WaypostServer(data, log_level="INFO", serve_args=serve_args).init()
    server.cli("account", "add", "bob", "--password", "bob-pw-1")
    server.cli("alias", "add", "robert", "bob")
    server.cli("settings", "set", "HoldMailForDomains", "held.test")
    server.cli("router", "set", "-",
               input=f"Relay:sink.test = sink.test@127.0.0.1.{sink.port}._via\n")
    return server.start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sink: SMTPSink) -> Iterator[WaypostServer]:
    s = _server(tmp_path_factory.mktemp("dlog") / "var", sink)
    yield s
    s.stop()


def send(server: WaypostServer, sender: str, rcpts: list[str], subject: str) -> str:
    """Send over SMTP from an untrusted client; return the queue id of the 250."""
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.ehlo("client.example")
        assert client.mail(sender)[0] == 250
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            assert code == 250, (rcpt, code, text)
        code, text = client.data(f"From: {sender}\r\nSubject: {subject}\r\n\r\nbody {subject}\r\n"
                                 .encode())
    assert code == 250
    match = re.search(rb"queued as (\S+)", text)
    assert match, text
    return match.group(1).decode()


def log_line(server: WaypostServer, pattern: str) -> re.Match[str]:
    regex = re.compile(pattern)
    return server.wait_for(lambda: regex.search(server.logs()), what=pattern)


def relay_line(server: WaypostServer, qid: str, rcpt: str, port: int, dsn: str, status: str,
               reply: str) -> None:
    """Wait for the line of ``rcpt`` relayed to the sink with ``status``; check
    every field (``reply`` is a regex)."""
    to = re.escape(rcpt)
    line = log_line(server, rf"{qid}: to=<{to}>, .*status={status} .*").group(0)
    assert re.search(
        rf"{qid}: to=<{to}>, route=SMTP\(127\.0\.0\.1:{port}\), relay=\[127\.0\.0\.1\]:{port},"
        rf" {DELAY}, dsn={re.escape(dsn)}, status={status} \({reply}\)$", line), line


def show(server: WaypostServer, queue_id: str) -> str:
    return server.cli("queue", "show", queue_id).stdout


def test_local_delivery_is_logged(server: WaypostServer) -> None:
    qid = send(server, "someone@client.example", ["robert@main.dom"], "local-1")
    line = log_line(server, rf"INFO waypost\.delivery\.log: {qid}: .*")
    assert re.fullmatch(
        rf"INFO waypost\.delivery\.log: {qid}: to=<bob@main\.dom>, orig_to=<robert@main\.dom>,"
        rf" route=LOCAL\(bob@main\.dom\), relay=local, {DELAY}, dsn=2\.0\.0,"
        r" status=sent \(250 2\.0\.0 delivered\)", line.group(0)), line.group(0)
    assert "body local-1" not in server.logs()  # never a body


def test_local_delivery_in_queue_history(server: WaypostServer) -> None:
    """The local copy's row stays while a held recipient keeps the message queued."""
    qid = send(server, "someone@client.example", ["bob@main.dom", "dan@held.test"], "local-2")
    log_line(server, rf"{qid}: to=<bob@main\.dom>, .*status=sent")
    log_line(server, rf"{qid}: to=<dan@held\.test>, .*status=held")
    history = show(server, qid)
    assert re.search(r"bob@main\.dom\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+sent\s+local\s+"
                     r"250 2\.0\.0 delivered", history), history
    assert re.search(r"bob@main\.dom\s+LOCAL\(bob@main\.dom\)\s+delivered", history), history


def test_relay_accepted_is_logged(server: WaypostServer, sink: SMTPSink) -> None:
    qid = send(server, "someone@client.example", ["ann@sink.test"], "relay-1")
    relay_line(server, qid, "ann@sink.test", sink.port, "2.0.0", "sent",
               r"250 2\.0\.0 Ok: queued as \d+")
    assert re.search(rf"INFO waypost\.delivery\.log: {qid}: to=<ann@sink\.test>", server.logs())
    assert any(m.rcpts == ["ann@sink.test"] for m in sink.messages)


def test_relay_deferred_then_accepted_and_history(server: WaypostServer, sink: SMTPSink
                                                  ) -> None:
    sink.rcpt_replies["later@sink.test"] = Reply(451, "4.3.0", "try again later")
    # the held recipient keeps the message in the queue, so its history stays visible
    qid = send(server, "someone@client.example", ["later@sink.test", "carl@held.test"], "defer-1")
    port = sink.port
    relay_line(server, qid, "later@sink.test", port, "4.3.0", "deferred",
               r"451 4\.3\.0 try again later")
    held = log_line(server, rf"{qid}: to=<carl@held\.test>, .*")
    assert re.search(
        rf"{qid}: to=<carl@held\.test>, route=SMTP\(held\.test\), relay=none, {DELAY},"
        r" status=held \(SMTP\(held\.test\) is held \(HoldMailForDomains\): waiting for ETRN,"
        r" ATRN or a release\)$", held.group(0)), held.group(0)

    history = show(server, qid)
    assert re.search(r"later@sink\.test\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+deferred\s+"
                     rf"\[127\.0\.0\.1\]:{port}\s+451 4\.3\.0 try again later", history), history
    assert re.search(r"carl@held\.test\s+\S+ \S+\s+held\s+none\s+SMTP\(held\.test\) is held",
                     history), history

    del sink.rcpt_replies["later@sink.test"]
    server.cli("queue", "flush")
    log_line(server, rf"{qid}: to=<later@sink\.test>, .*status=sent \(250 2\.0\.0 Ok")
    history = show(server, qid)
    rows = re.findall(r"later@sink\.test\s+\S+ \S+\s+(\w+)\s+\[127\.0\.0\.1\]", history)
    assert rows == ["deferred", "sent"], history


def test_relay_refused_is_bounced_and_logged(server: WaypostServer, sink: SMTPSink) -> None:
    sink.rcpt_replies["nobody@sink.test"] = Reply(550, "5.1.1", "no such user here")
    qid = send(server, "bob@main.dom", ["nobody@sink.test"], "bounce-1")
    relay_line(server, qid, "nobody@sink.test", sink.port, "5.1.1", "bounced",
               r"550 5\.1\.1 no such user here")
    # the DSN to the local sender is a delivery too
    log_line(server, r": to=<bob@main\.dom>, route=LOCAL\(bob@main\.dom\), relay=local, .*"
                     r"status=sent")


def test_json_log_format(tmp_path: Path, sink: SMTPSink) -> None:
    server = _server(tmp_path / "var", sink, "--log-format", "json")
    try:
        qid = send(server, "someone@client.example", ["robert@main.dom", "json@sink.test"],
                   "json-1")

        def records() -> list[dict[str, object]]:
            out = []
            for text in server.logs().splitlines():
                if text.startswith("{"):
                    out.append(json.loads(text))
            return out

        def ours() -> list[dict[str, object]]:
            return [r for r in records()
                    if r["logger"] == "waypost.delivery.log" and r.get("queue_id") == qid]

        found = server.wait_for(lambda: len(ours()) == 2 and ours(), what="two JSON records")
        by_to = {r["to"]: r for r in found}
        local, remote = by_to["bob@main.dom"], by_to["json@sink.test"]
        assert local["level"] == "INFO"
        assert {k: local[k] for k in ("orig_to", "route", "relay", "dsn", "status", "reply")} == {
            "orig_to": "robert@main.dom", "route": "LOCAL(bob@main.dom)", "relay": "local",
            "dsn": "2.0.0", "status": "sent", "reply": "250 2.0.0 delivered"}
        assert isinstance(local["delay"], float) and local["delay"] >= 0
        assert str(local["message"]).startswith(f"{qid}: to=<bob@main.dom>, orig_to=")
        assert remote["relay"] == f"[127.0.0.1]:{sink.port}"
        assert remote["route"] == f"SMTP(127.0.0.1:{sink.port})"
        assert remote["orig_to"] == "json@sink.test" and remote["status"] == "sent"
        assert re.fullmatch(r"250 2\.0\.0 Ok: queued as \d+", str(remote["reply"]))
        # every line is JSON then, not only the delivery log
        lines = [t for t in server.logs().splitlines() if t.strip()]
        assert lines and all(t.startswith("{") for t in lines), lines[:5]
    finally:
        server.stop()
