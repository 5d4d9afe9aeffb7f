"""Queue leases end to end (issue 15): two ``waypost serve`` processes on
one data directory (different port offsets), SMTP into both from several
clients, one of them ``kill -9``-ed mid-way. Every message that got its 250
ends up in the mailbox exactly once (counted by Message-ID) once the dead
process's lease (QueueLeaseTime, 2 s here) has run out and the survivor has
taken its claims over.
"""

from __future__ import annotations

import re
import smtplib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.server import WaypostServer

from waypost.services.container import open_services
from waypost.services.mailstore import Mailstore

CLIENTS = 3  # per server
PER_CLIENT = 25
KILL_AFTER = 15  # acknowledged by the victim before it dies
DEADLINE = 90.0


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[WaypostServer, WaypostServer]]:
    data = tmp_path / "var"
    first = WaypostServer(data).init()
    first.cli("account", "add", "alice@main.dom", "--password", "pw-alice-1")
    first.cli("settings", "set", "QueueLeaseTime", "2")
    second = WaypostServer(data)
    try:
        first.start(timeout=60)
        second.start(timeout=60)
        yield first, second
    finally:
        first.kill()
        second.stop()


def message(mid: str) -> bytes:
    return (f"From: bob@remote.example\r\nTo: alice@main.dom\r\nSubject: {mid}\r\n"
            f"Message-ID: <{mid}>\r\n\r\nbody of {mid}\r\n").encode()


def test_every_acknowledged_message_is_stored_once_after_a_kill_9(
    pair: tuple[WaypostServer, WaypostServer],
) -> None:
    victim, survivor = pair
    acked: list[str] = []
    lock = threading.Lock()
    victim_acks = threading.Semaphore(0)

    def client(server: WaypostServer, name: str, is_victim: bool) -> None:
        for n in range(PER_CLIENT):
            mid = f"{name}.{n}@lease.test"
            try:
                with smtplib.SMTP("127.0.0.1", server.smtp, timeout=20) as smtp:
                    smtp.sendmail("bob@remote.example", ["alice@main.dom"], message(mid))
            except (OSError, smtplib.SMTPException):
                if is_victim:
                    return  # the server is gone: what was not acknowledged may be lost
                raise
            with lock:
                acked.append(mid)
            if is_victim:
                victim_acks.release()

    threads = [threading.Thread(target=client, args=(srv, f"{tag}{i}", srv is victim),
                                daemon=True)
               for srv, tag in ((victim, "v"), (survivor, "s")) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for _ in range(KILL_AFTER):
        assert victim_acks.acquire(timeout=60), "the victim acknowledged too little"
    svc = open_services(victim.data)
    try:
        assert victim.proc is not None
        mark = f":{victim.proc.pid}:"

        def victim_claims() -> list[int]:
            return [r.key for m in svc.store.queue_list() for r in m.recipients
                    if r.owner and mark in r.owner]

        deadline = time.monotonic() + 10
        while not victim_claims() and time.monotonic() < deadline:
            pass  # kill it while it holds claims, if it ever does within 10 s
        victim.kill()
        held_at_death = victim_claims()  # taken over after the lease, or none to take
        for t in threads:
            t.join(timeout=120)
            assert not t.is_alive()
        assert len([m for m in acked if m.startswith("s")]) == CLIENTS * PER_CLIENT
        assert held_at_death, "the victim never held a claim: no takeover was tried"

        mail = Mailstore(svc.store)
        stored: list[str] = []
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            stored = []
            for m in mail.list_messages("alice@main.dom"):
                found = re.search(rb"(?im)^Message-ID: *<([^>]*)>",
                                  mail.read_message("alice@main.dom", "INBOX", m.uid))
                assert found
                stored.append(found.group(1).decode())
            if set(acked) <= set(stored) and not svc.store.queue_list():
                break
            time.sleep(0.25)
        missing = set(acked) - set(stored)
        assert not missing, (sorted(missing), survivor.logs()[-3000:])
        twice = sorted({m for m in stored if stored.count(m) > 1})
        assert twice == []  # also none of those the victim stored but never acknowledged
        assert svc.store.queue_list() == []
    finally:
        svc.store.close()
