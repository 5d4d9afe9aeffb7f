"""Soak: mail in over SMTP, IMAP and POP3 readers, and ``kill -9`` every few seconds.

Not a test (issue 13, point 8): run ``.venv/bin/python bench/soak.py
[--seconds 300] [--kill-every 3]``; ``tests/test_soak.py`` runs a bounded
60-second mode in ``make test``.

A real ``waypost serve`` (``tests/support/server.py``) in a fresh data
directory gets, all at once:

* ``--senders`` SMTP clients, each sending messages with a Message-ID of its
  own (``<soak-wW-nN@soak.test>``), a tenth of them with a body of up to
  64 KB; a message counts as *acknowledged* when DATA was answered 250. A
  message whose answer was lost to a kill is never sent again, so a client
  never causes a duplicate;
* ``--imap`` IMAP clients that EXAMINE the INBOX and FETCH the Message-ID
  of the newest messages, and ``--pop3`` POP3 clients that STAT and RETR
  the newest message -- both only read (no DELE, no STORE), so every
  message they see stays where the count looks for it;
* and, every ``--kill-every`` seconds on average (0: never), ``kill -9`` of
  the server followed by a restart on the same ports. The load goes on past
  ``--seconds`` (up to three times it) until ``--min-kills`` kills happened
  and every kind of client got through at least once, so a slow machine
  still gets a real run.

At the end the server is killed once more, restarted, left to empty its
queue, stopped cleanly and started again (the final clean restart); then
one IMAP FETCH of every Message-ID in the INBOX counts what is *present*.
*Lost* = acknowledged but not present; *duplicated* = present more than
once. Messages present but never acknowledged (the kill took the 250) are
shown as *unconfirmed* and are not an error (RFC 5321 §4.1.1.4 allows it).
The resident memory (VmRSS) of the server is printed at the start (first
process, before any load), the highest seen just before a kill, and at the
end (the last process, after the final count).

Exit status: 0 only when nothing acknowledged is lost, nothing is
duplicated and the load got going (some messages acknowledged).
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import itertools
import poplib
import random
import re
import smtplib
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.support

from tests.support.server import WaypostServer  # noqa: E402

from waypost.services.container import open_services  # noqa: E402

DOMAIN = "soak.dom"
USER = f"soak@{DOMAIN}"
PASSWORD = "soak-pw-1234"
TIMEOUT_S = 10.0  # every socket read
RETRY_PAUSE = 0.1  # after a refused or broken connection (the server is restarting)
DRAIN_S = 180.0  # longest wait for the queue to empty at the end
_ID = re.compile(rb"<(soak-w\d+-n\d+)@soak\.test>", re.IGNORECASE)


@dataclass
class Tally:
    """What the clients saw; every field is changed under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: list[str] = field(default_factory=list)
    attempted: int = 0
    imap_reads: int = 0
    pop3_reads: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def error(self, who: str) -> None:
        with self.lock:
            self.errors[who] += 1


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in KB (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def message(name: str, rng: random.Random) -> bytes:
    filler = b""
    if rng.random() < 0.1:  # some bodies big enough to be written in several pieces
        filler = (b"soak filler line of text\r\n" * rng.randrange(100, 2600))
    return (f"From: <load@client.example>\r\nTo: <{USER}>\r\n"
            f"Message-ID: <{name}@soak.test>\r\nSubject: {name}\r\n\r\n"
            f"body of {name}\r\n").encode() + filler


def reconnecting(who: str, errors: tuple[type[BaseException], ...],
                 session: Callable[[], None], stop: threading.Event, tally: Tally) -> None:
    """Run ``session`` (one connection) again and again until ``stop``; a
    refused or broken connection (the server was killed) is counted."""
    while not stop.is_set():
        try:
            session()
        except errors:
            tally.error(who)
            stop.wait(RETRY_PAUSE)


def sender(port: int, worker: int, stop: threading.Event, tally: Tally) -> None:
    rng = random.Random(worker)
    names = (f"soak-w{worker}-n{n}" for n in itertools.count())  # never reused

    def session() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT_S) as client:
            client.ehlo("client.example")
            while not stop.is_set():
                name = next(names)
                with tally.lock:
                    tally.attempted += 1
                client.sendmail("load@client.example", [USER], message(name, rng))
                with tally.lock:
                    tally.acked.append(name)

    reconnecting("smtp", (OSError, smtplib.SMTPException), session, stop, tally)


def newest_ids(client: imaplib.IMAP4, last: int | None = None) -> list[str]:
    """EXAMINE the INBOX; the soak Message-IDs of its ``last`` messages (None: all)."""
    typ, data = client.select("INBOX", readonly=True)
    if typ != "OK":
        raise imaplib.IMAP4.error(f"EXAMINE: {data!r}")
    count = int(data[0] or 0)
    if not count:
        return []
    first = 1 if last is None else max(1, count - last + 1)
    typ, data = client.fetch(f"{first}:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"FETCH: {data!r}")
    return [m.decode() for part in data if isinstance(part, tuple)
            for m in _ID.findall(part[1])]


def imap_reader(port: int, stop: threading.Event, tally: Tally) -> None:
    def session() -> None:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=TIMEOUT_S)
        try:
            client.login(USER, PASSWORD)
            while not stop.is_set():
                newest_ids(client, 10)
                with tally.lock:
                    tally.imap_reads += 1
                stop.wait(0.05)
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                client.logout()

    reconnecting("imap", (OSError, imaplib.IMAP4.error, ValueError), session, stop, tally)


def pop3_reader(port: int, stop: threading.Event, tally: Tally) -> None:
    def session() -> None:
        client = poplib.POP3("127.0.0.1", port, timeout=TIMEOUT_S)
        try:
            client.user(USER)
            client.pass_(PASSWORD)
            count, _ = client.stat()
            if count:
                client.retr(count)
            with tally.lock:
                tally.pop3_reads += 1
        finally:
            with contextlib.suppress(OSError, poplib.error_proto):
                client.quit()  # no DELE was sent: nothing is removed
        stop.wait(0.05)

    reconnecting("pop3", (OSError, poplib.error_proto), session, stop, tally)


def start(server: WaypostServer, attempts: int = 5) -> None:
    """Start on the same ports; retried when a port is briefly taken."""
    for attempt in range(attempts):
        try:
            server.start(timeout=60)
            return
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)


def present_ids(server: WaypostServer) -> list[str]:
    """Every soak Message-ID in the INBOX, one entry per stored message."""
    client = imaplib.IMAP4("127.0.0.1", server.port("IMAPPort"), timeout=60)
    try:
        client.login(USER, PASSWORD)
        return newest_ids(client)
    finally:
        client.logout()


def setup(server: WaypostServer) -> None:
    """The account, through the services in this process (a CLI call per step
    would cost seconds of interpreter start-up on a loaded machine)."""
    services = open_services(server.data)
    try:
        services.directory.create_domain(DOMAIN)
        services.directory.create_account(USER, PASSWORD)
    finally:
        services.store.close()


def drain(server: WaypostServer) -> None:
    """Wait until the running server delivered everything queued (read beside it)."""
    services = open_services(server.data)
    try:
        server.wait_for(lambda: not services.store.queue_list(), timeout=DRAIN_S,
                        interval=0.2, what="the queue emptied")
    finally:
        services.store.close()


def soak(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="waypost-soak-") as tmp:
        server = WaypostServer(Path(tmp) / "var", log_level="INFO").init()
        setup(server)
        start(server)
        assert server.proc is not None
        rss_start = rss_kb(server.proc.pid)
        rss_peak = rss_start
        tally, stop = Tally(), threading.Event()
        threads = [threading.Thread(target=sender, args=(server.smtp, w, stop, tally))
                   for w in range(args.senders)]
        threads += [threading.Thread(target=imap_reader,
                                     args=(server.port("IMAPPort"), stop, tally))
                    for _ in range(args.imap)]
        threads += [threading.Thread(target=pop3_reader,
                                     args=(server.port("POP3Port"), stop, tally))
                    for _ in range(args.pop3)]
        for thread in threads:
            thread.start()
        kills = 0
        rng = random.Random(args.seed)
        began = time.monotonic()
        deadline = began + args.seconds
        # a slow machine may need more than --seconds for --min-kills kills and
        # a first read of each kind; never more than three times it
        hard_stop = began + 3 * args.seconds

        def short() -> bool:
            with tally.lock:
                return (kills < args.min_kills or not tally.acked
                        or bool(args.imap and not tally.imap_reads)
                        or bool(args.pop3 and not tally.pop3_reads))

        try:
            while time.monotonic() < hard_stop and (time.monotonic() < deadline or short()):
                wait = rng.uniform(0.5, 1.5) * args.kill_every if args.kill_every else 1.0
                if not short():
                    wait = min(wait, deadline - time.monotonic())
                time.sleep(max(0.0, wait))
                if not args.kill_every or (time.monotonic() >= deadline
                                           and kills >= args.min_kills):
                    continue
                assert server.proc is not None
                rss_peak = max(rss_peak, rss_kb(server.proc.pid))
                server.kill()
                kills += 1
                start(server)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        with tally.lock:
            acked = list(tally.acked)
        # the final crash, then the queue drained and a clean restart before counting
        server.kill()
        start(server)
        drain(server)
        server.stop()
        start(server)
        try:
            present = present_ids(server)
            assert server.proc is not None
            rss_end = rss_kb(server.proc.pid)
        finally:
            server.stop()
        counts = Counter(present)
        lost = sorted(set(acked) - set(counts))
        duplicated = sorted(name for name, n in counts.items() if n > 1)
        unconfirmed = sorted(set(counts) - set(acked))
        print(f"seconds         {time.monotonic() - began:.0f}")
        print(f"kills           {kills}")
        print(f"attempted       {tally.attempted}")
        print(f"acknowledged    {len(acked)}")
        print(f"present         {len(present)}")
        print(f"unconfirmed     {len(unconfirmed)}")
        print(f"duplicated      {len(duplicated)}")
        print(f"lost            {len(lost)}")
        print(f"imap reads      {tally.imap_reads}")
        print(f"pop3 reads      {tally.pop3_reads}")
        print(f"client errors   {dict(sorted(tally.errors.items()))}")
        print(f"rss start KB    {rss_start}")
        print(f"rss peak KB     {rss_peak}")
        print(f"rss end KB      {rss_end}")
        if lost:
            print("lost:", " ".join(lost[:20]))
        if duplicated:
            print("duplicated:", " ".join(duplicated[:20]))
        ok = not lost and not duplicated and bool(acked)
        print("verdict         " + ("PASS" if ok else "FAIL"))
        return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the load")
    parser.add_argument("--kill-every", type=float, default=3.0,
                        help="mean seconds between kill -9 (0: never)")
    parser.add_argument("--senders", type=int, default=4, help="SMTP clients")
    parser.add_argument("--imap", type=int, default=2, help="IMAP readers")
    parser.add_argument("--pop3", type=int, default=1, help="POP3 readers")
    parser.add_argument("--min-kills", type=int, default=0,
                        help="go on past --seconds until this many kills happened")
    parser.add_argument("--seed", type=int, default=13, help="seed of the kill intervals")
    return soak(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
