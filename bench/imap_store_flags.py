"""UID STORE of 1,000 UIDs spread over a 50,000-message INBOX: Waypost beside
a private Dovecot (issue 12 point 5). Not a test; run as root with
``dovecot-imapd`` installed: ``.venv/bin/python bench/imap_store_flags.py
[--messages N] [--repeat R]``.

Both servers get the same small messages (Dovecot: Maildir ``cur/`` files;
Waypost: through its store API before it starts). Each timed run is a fresh
session: LOGIN, SELECT, then ``UID STORE <set> +FLAGS (\\Flagged)`` from
sending to the tagged OK, undone untimed with ``-FLAGS.SILENT``; the median
of ``--repeat`` runs after one warm-up is printed with the ratio.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.support

from tests.support.dovecot import DovecotInstance, dovecot_missing_reason, free_port  # noqa: E402
from tests.support.server import WaypostServer  # noqa: E402

from waypost.services import passwords  # noqa: E402
from waypost.services.container import open_services  # noqa: E402
from waypost.storage.interface import INBOX, NewMailMessage  # noqa: E402

DOMAIN = "bench.dom"
PASSWORD = "bench-password-1"
COUNT = 1000


def message(i: int) -> bytes:
    head = f"From: a{i}@example.com\r\nTo: b@example.com\r\nSubject: message {i}\r\n"
    return (head + f"Message-ID: <{i}@example.com>\r\n\r\n" + "body line\r\n" * 20).encode()


def load_waypost(data: Path, n: int) -> None:
    services = open_services(data)
    try:
        passwords.configure(**passwords.FAST_PARAMETERS)
        services.directory.create_account(f"bench@{DOMAIN}", password=PASSWORD)
        store = services.store
        with ThreadPoolExecutor(8) as pool:  # each blob is fsynced: overlap them
            keys = list(pool.map(store.blob_put, (message(i) for i in range(n))))
        for start in range(0, n, 1000):
            store.mail_store([
                NewMailMessage(
                    domain=DOMAIN, account="bench", mailbox=INBOX, blob=keys[i],
                    blob_size=len(message(i)), internal_date=1.7e9 + i,
                    flags=("\\Seen",) if i % 3 else (),
                )
                for i in range(start, min(n, start + 1000))
            ])  # fmt: skip
    finally:
        passwords.reset()
        services.close()


class Client:
    def __init__(self, port: int, user: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=600)
        self.buf = b""
        self.n = 0
        self.line()
        self.command(f'LOGIN "{user}" "{PASSWORD}"')
        self.command("SELECT INBOX")

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 18)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def command(self, text: str) -> list[bytes]:
        self.n += 1
        tag = b"T%d" % self.n
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        lines = []
        while not (line := self.line()).startswith(tag + b" "):
            lines.append(line)
        if not line.startswith(tag + b" OK"):
            raise RuntimeError(line.decode(errors="replace"))
        return lines

    def close(self) -> None:
        self.sock.close()


def timed(port: int, user: str, repeat: int) -> float:
    probe = Client(port, user)
    lines = probe.command("UID FETCH 1:* (UID)")
    probe.close()
    uids = [int(x.split(b"UID ")[1].rstrip(b")")) for x in lines if b"FETCH" in x]
    chosen = [uids[int(k * len(uids) / COUNT)] for k in range(min(COUNT, len(uids)))]
    uid_set = ",".join(map(str, chosen))
    times = []
    for attempt in range(repeat + 1):
        client = Client(port, user)
        start = time.perf_counter()
        client.command(f"UID STORE {uid_set} +FLAGS (\\Flagged)")
        elapsed = time.perf_counter() - start
        client.command(f"UID STORE {uid_set} -FLAGS.SILENT (\\Flagged)")
        client.close()
        if attempt:
            times.append(elapsed)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    if reason := dovecot_missing_reason():
        print(f"cannot run: {reason}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="waypost-bench-store-"))
    work.chmod(0o755)
    waypost = WaypostServer(work / "var", domain=DOMAIN, log_level="WARNING")
    dovecot = DovecotInstance(work, free_port(), users={"bench": PASSWORD}, connections=10)
    try:
        dovecot.prepare()
        for i in range(args.messages):
            dovecot.add_message(message(i), "S" if i % 3 else "", when=1.7e9 + i, chown=False)
        dovecot.chown_mail()
        dovecot.start()
        waypost.init()
        load_waypost(waypost.data, args.messages)
        waypost.start()
        ours = timed(waypost.port("IMAPPort"), f"bench@{DOMAIN}", args.repeat)
        theirs = timed(dovecot.port, "bench", args.repeat)
        print(f"UID STORE {COUNT} of {args.messages}: waypost {ours * 1000:.1f} ms, "
              f"dovecot {theirs * 1000:.1f} ms, ratio {ours / theirs:.2f}")  # fmt: skip
    finally:
        waypost.stop()
        dovecot.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
