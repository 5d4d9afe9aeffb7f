"""A message acknowledged with 250 survives `kill -9`, and is stored once."""

from __future__ import annotations

import re
import smtplib
import threading
import time
from pathlib import Path

from tests.support.server import WaypostServer


def _sender(port: int, worker: int, stop: threading.Event, acked: list[str],
            lock: threading.Lock) -> None:
    n = 0
    while not stop.is_set():
        try:
            client = smtplib.SMTP("127.0.0.1", port, timeout=10)
            client.ehlo("load.example")
            while not stop.is_set():
                subject = f"k9w{worker}n{n}"
                n += 1
                msg = f"From: a@load.example\r\nSubject: {subject}\r\n\r\nbody {subject}\r\n"
                client.sendmail("a@load.example", ["alice@domain.dom"], msg)
                with lock:
                    acked.append(subject)
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)


def _subjects(server: WaypostServer) -> list[str]:
    out = server.cli("mailbox", "show", "alice@domain.dom").stdout
    return re.findall(r"\bk9w\d+n\d+\b", out)


def test_kill_9_loses_nothing_acknowledged_and_duplicates_nothing(tmp_path: Path) -> None:
    server = WaypostServer(tmp_path / "var").init()
    server.cli("domain", "add", "domain.dom")
    server.cli("account", "add", "alice@domain.dom", "--password", "pw-alice-1")
    server.start()
    stop = threading.Event()
    acked: list[str] = []
    lock = threading.Lock()
    workers = [threading.Thread(target=_sender, args=(server.smtp, w, stop, acked, lock))
               for w in range(8)]
    for thread in workers:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(acked) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()
        with lock:
            acknowledged = list(acked)
    finally:
        stop.set()
        for thread in workers:
            thread.join(timeout=30)
    assert len(acknowledged) >= 50, "the load never got going"
    server.start()
    try:
        server.wait_for(lambda: set(acknowledged) <= set(_subjects(server)), timeout=60,
                        what="every acknowledged message in the mailbox")
        # anything still queued from before the kill is delivered once the queue is empty
        server.wait_for(lambda: "the queue is empty" in server.cli("queue", "list").stdout,
                        timeout=60, what="the queue emptied")
        stored = _subjects(server)
        duplicates = {s for s in stored if stored.count(s) > 1}
        assert not duplicates, f"stored twice: {sorted(duplicates)[:10]}"
        assert set(acknowledged) <= set(stored)
        assert "k9w" not in server.cli("queue", "list").stdout
    finally:
        server.stop()
