"""IMAP: Waypost beside Dovecot, same messages, same machine, same run (issue 5 point 7).

Not a test: run ``.venv/bin/python bench/imap.py [--messages N]`` as root
with the Debian package ``dovecot-imapd`` installed (a private Dovecot runs
in the foreground on a free loopback port, see ``tests/support/dovecot.py``;
the packaged instance is not used). ``--messages 500`` is a quick check.

One mailbox of N messages (default 10,000) is generated once, reproducibly
(``--seed``): 2-50 KB (log-uniform, so most are small), plain text, some
quoted-printable UTF-8, some multipart/alternative with HTML, some
multipart/mixed with a base64 attachment; about 1% of them contain the word
that SEARCH TEXT looks for; most of the older ones are ``\\Seen``, a few
``\\Flagged`` or ``\\Answered``. The same bytes go to

* Dovecot: Maildir files in ``cur/``, as its delivery agent writes them
  (LF line ends, ``,S=,W=`` sizes and ``:2,FLAGS`` in the name, the file time
  as INTERNALDATE), indexed by Dovecot on first access;
* Waypost: stored through its store API in the server's data directory
  before the server starts (body blobs, then the message rows in
  transactions of 500), as local delivery would have stored them.

Then, against both servers, every operation is run once to warm up (Dovecot
builds its index, both fill their caches) and then ``--repeat`` times (3),
each on a fresh connection after LOGIN (and SELECT, except when SELECT is
what is timed); the table shows the median time from sending the command
to its tagged OK:

* ``SELECT INBOX``;
* ``FETCH 1:* (UID FLAGS RFC822.SIZE)``;
* ``FETCH 1:100 BODY.PEEK[]`` (100 whole messages);
* ``SEARCH TEXT "<word>"`` (~1% hits; neither server has a full-text index);
* ``UID STORE <1,000 UIDs> +FLAGS (\\Flagged)`` (UIDs spread over the mailbox,
  none flagged before; undone with ``-FLAGS`` after each run, untimed).

Memory: ``--connections`` (1,000) plain sockets connect and LOGIN (then stay
idle); the table shows how much the server's memory grew: the sum over the
server's processes (Waypost: its one process and any children; Dovecot: the
master and everything under it, imap-login, auth, one ``imap`` per session
...) of RSS, and of PSS, which counts a page shared by N processes as 1/N in
each, so that Dovecot's 1,000 ``imap`` processes are not charged 1,000 times
for the same libraries. Both rows count against the target.

It prints a table with the ratio Waypost/Dovecot per row and a verdict
against the target: no row above 2x Dovecot. Consistency checks (message
count, total RFC822.SIZE, bytes of the 100 messages, SEARCH hits) are printed
for both servers first.

Configuration besides the defaults: Dovecot allows ``--connections``
sessions per user and IP and enough ``imap`` processes
(``mail_max_userip_connections``, ``process_limit``,
``default_client_limit``), and Waypost's ``MaxConnections`` is raised to
match. Dovecot's passwd-file keeps the password in the PLAIN scheme, and the
Waypost account's argon2 hash is made with the cheap test parameters, so
LOGIN costs neither server much. Waypost runs under the test harness
(``tests/support/server.py``).
"""

from __future__ import annotations

import argparse
import itertools
import math
import quopri
import random
import re
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from base64 import encodebytes
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.support

from tests.support.dovecot import (  # noqa: E402
    DovecotInstance,
    descendants,
    dovecot_missing_reason,
    free_port,
    memory_kb,
)
from tests.support.server import WaypostServer  # noqa: E402

from waypost.services import passwords  # noqa: E402
from waypost.services.container import open_services  # noqa: E402
from waypost.services.mailstore import summarize  # noqa: E402
from waypost.storage.interface import INBOX, NewMailMessage  # noqa: E402

DOMAIN = "main.dom"
PASSWORD = "bench-password-1"
HIT_WORD = "zanzibarite"  # appears in no other message, not even as a substring
FETCH_WHOLE = 100
STORE_COUNT = 1000
TARGET = 2.0
LOGIN_BATCH = 50  # connections logging in at once when opening the idle ones


def _words(text: str) -> list[str]:
    return text.split()


WORDS = _words("""
the of and to in is that for it as was with be by on not he this are or his from at which but
have an they you were her she there been one all we their has would when if so no will can more
about said up out them what some could into only time other new two then do these may first any
like now my over such our man me even most made after also did many before must through back
years where much your way well down should because each just those people how too little state
good very make world still own see men work long get here between both life being under never
day same another know while last might us great old year off come since against go came right
used take three meeting project report budget review schedule customer invoice order delivery
shipment contract proposal quarter analysis design release server network update change request
ticket support issue feedback agenda minutes draft final version attached please thanks regards
team office travel flight hotel conference deadline estimate approval payment account balance
statement transfer receipt pricing discount offer product feature roadmap launch marketing sales
training session webinar survey results summary document spreadsheet presentation slides notes
question answer comment reply forward follow reminder tomorrow monday tuesday wednesday thursday
friday morning afternoon evening week month weekend holiday vacation birthday dinner lunch coffee
""")
UMLAUT_WORDS = _words("Grüße Straße Käse Bücher Größe Übersicht café naïve résumé Zürich Malmö")
FIRST = _words("Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy")
LAST = _words("Smith Jones Brown Miller Davis Garcia Wilson Moore Taylor Anderson Thomas Martin")
ORGS = _words("example.org example.net acme.test globex.test initech.test umbrella.test")


# -- the mailbox ----------------------------------------------------------------------


@dataclass
class Message:
    data: bytes  # as sent over IMAP: CRLF line ends
    when: float  # INTERNALDATE
    flags: tuple[str, ...]  # IMAP system flags
    hit: bool  # contains HIT_WORD

    @property
    def maildir_letters(self) -> str:
        letters = {"\\Flagged": "F", "\\Answered": "R", "\\Seen": "S"}
        return "".join(sorted(letters[f] for f in self.flags))


def _lines(rng: random.Random, count: int) -> list[str]:
    """A pool of text lines (~70 characters) to build bodies from quickly."""
    pool = []
    for _ in range(count):
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < 64:
            words.append(rng.choice(WORDS))
        text = " ".join(words)
        pool.append(text[0].upper() + text[1:] + rng.choice([".", ",", "", "?"]))
    return pool


def _text(rng: random.Random, pool: list[str], size: int, hit: bool) -> list[str]:
    lines = rng.choices(pool, k=max(3, size // 71))
    for i in range(5, len(lines), rng.randint(6, 14)):
        lines[i] = ""  # paragraphs
    if hit:
        at = rng.randrange(len(lines))
        lines[at] = f"Remember the {HIT_WORD} figures for the {rng.choice(WORDS)} review."
    return lines


def generate(count: int, seed: int) -> list[Message]:
    rng = random.Random(seed)
    pool = _lines(rng, 4000)
    umlaut_pool = [
        " ".join(rng.choice(WORDS + UMLAUT_WORDS) for _ in range(10)) for _ in range(500)
    ]
    kinds = rng.choices(["plain", "qp", "alternative", "mixed"], weights=[55, 10, 15, 20], k=count)
    candidates = [i for i, kind in enumerate(kinds) if kind != "qp"]
    hits = set(rng.sample(candidates, max(1, round(count / 100))))
    start = time.time() - 365 * 86400
    step = 365 * 86400 / max(count, 1)
    messages = []
    for i, kind in enumerate(kinds):
        when = start + i * step
        size = int(math.exp(rng.uniform(math.log(2048), math.log(50 * 1024))))
        data = _message(rng, i, kind, when, size, pool, umlaut_pool, i in hits)
        recent = i >= count * 0.9
        flags: list[str] = []
        if rng.random() < (0.3 if recent else 0.95):
            flags.append("\\Seen")
            if rng.random() < 0.08:
                flags.append("\\Answered")
        if rng.random() < 0.03:
            flags.append("\\Flagged")
        messages.append(Message(data, when, tuple(flags), i in hits))
    return messages


def _message(
    rng: random.Random,
    i: int,
    kind: str,
    when: float,
    size: int,
    pool: list[str],
    umlaut_pool: list[str],
    hit: bool,
) -> bytes:
    first, last, org = rng.choice(FIRST), rng.choice(LAST), rng.choice(ORGS)
    sender = f"{first.lower()}.{last.lower()}@{org}"
    subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))).capitalize()
    if rng.random() < 0.1:
        subject = "Re: " + subject
    date = formatdate(when, localtime=False)
    head = [
        f"Return-Path: <{sender}>",
        f"Received: from mx{rng.randint(1, 9)}.{org} (mx.{org} [192.0.2.{rng.randint(1, 254)}])",
        f"\tby mail.{DOMAIN} with ESMTPS id {rng.getrandbits(48):012x}",
        f"\tfor <bench@{DOMAIN}>; {date}",
        f'From: "{first} {last}" <{sender}>',
        f"To: Bench User <bench@{DOMAIN}>",
    ]
    if rng.random() < 0.3:
        head.append(f"Cc: {rng.choice(FIRST).lower()}@{rng.choice(ORGS)}")
    head += [
        f"Subject: {subject}",
        f"Date: {date}",
        f"Message-ID: <{i}.{rng.getrandbits(40):010x}@{org}>",
        "MIME-Version: 1.0",
    ]
    budget = max(600, size - sum(len(h) + 2 for h in head) - 200)
    boundary = f"=_part_{i}_{rng.getrandbits(32):08x}"
    if kind == "plain":
        head += ["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit"]
        body = _text(rng, pool, budget, hit)
    elif kind == "qp":
        text = "\n".join(rng.choices(umlaut_pool, k=max(3, budget // 90)))
        encoded = quopri.encodestring(text.encode("utf-8")).decode("ascii")
        head += ["Content-Type: text/plain; charset=utf-8",
                 "Content-Transfer-Encoding: quoted-printable"]  # fmt: skip
        body = encoded.split("\n")
    elif kind == "alternative":
        text = _text(rng, pool, budget // 2, hit)
        html = ["<html><body>"] + [f"<p>{line}</p>" for line in text if line] + ["</body></html>"]
        head.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        body = [
            "This is a multi-part message in MIME format.", "",
            f"--{boundary}", "Content-Type: text/plain; charset=us-ascii", "", *text, "",
            f"--{boundary}", "Content-Type: text/html; charset=us-ascii", "", *html, "",
            f"--{boundary}--",
        ]  # fmt: skip
    else:  # mixed: a short text and an attachment
        attachment = rng.randbytes(max(300, int(budget * 0.7 * 3 / 4)))
        lines = encodebytes(attachment).decode("ascii").split()
        name, ctype = rng.choice([("report.pdf", "application/pdf"), ("photo.jpg", "image/jpeg"),
                                  ("data.xlsx", "application/vnd.openxmlformats-officedocument."
                                   "spreadsheetml.sheet"), ("archive.zip", "application/zip")])
        text = _text(rng, pool, max(300, budget - len(attachment) * 4 // 3), hit)
        head.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
        body = [
            "This is a multi-part message in MIME format.", "",
            f"--{boundary}", "Content-Type: text/plain; charset=us-ascii", "", *text, "",
            f"--{boundary}", f'Content-Type: {ctype}; name="{name}"',
            "Content-Transfer-Encoding: base64",
            f'Content-Disposition: attachment; filename="{name}"', "", *lines, "",
            f"--{boundary}--",
        ]  # fmt: skip
    return ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(body) + "\r\n").encode("utf-8")


# -- loading ------------------------------------------------------------------------------


def load_dovecot(dovecot: DovecotInstance, messages: list[Message]) -> None:
    dovecot.prepare()
    for m in messages:
        dovecot.add_message(m.data, m.maildir_letters, when=m.when, chown=False)
    dovecot.chown_mail()


def load_waypost(data: Path, account: str, messages: list[Message], connections: int) -> str:
    """The account, its messages and the connection limit, straight into the store."""
    services = open_services(data)
    try:
        passwords.configure(**passwords.FAST_PARAMETERS)
        services.directory.create_account(account, password=PASSWORD)
        services.set_setting("MaxConnections", str(connections + 100))
        store = services.store
        domain, name = account.split("@")[1], account.split("@")[0]
        with ThreadPoolExecutor(8) as pool:  # each blob is fsynced: overlap them
            keys = list(pool.map(store.blob_put, (m.data for m in messages)))
        for start in range(0, len(messages), 500):
            batch = [
                NewMailMessage(
                    domain=domain, account=name, mailbox=INBOX, blob=key,
                    blob_size=len(m.data), internal_date=m.when, flags=m.flags,
                    summary=summarize(m.data),
                )
                for m, key in zip(messages[start:start + 500], keys[start:start + 500],
                                  strict=True)
            ]  # fmt: skip
            store.mail_store(batch)
        info = store.mail_mailbox(domain, name, INBOX)
        rows = store.mail_index(domain, name, INBOX)
    finally:
        passwords.reset()
        services.close()
    ok = [(r.size, set(r.flags)) for r in rows] == [(len(m.data), set(m.flags)) for m in messages]
    return (f"{info.messages} messages, {info.size} bytes in {account}'s INBOX: "
            + ("as loaded" if ok else "MISMATCH (sizes, flags or order)"))  # fmt: skip


# -- a minimal IMAP client ---------------------------------------------------------------


class ImapError(Exception):
    pass


_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")
_LITERAL_IN = re.compile(rb"\{(\d+)\}\r\n")


class Client:
    """Just enough IMAP to time commands: send a line, read every response
    (with literals) up to the tagged one; no parsing beyond that."""

    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.tags = itertools.count(1)
        greeting = self._line()
        if not greeting.startswith(b"* OK"):
            raise ImapError(f"greeting: {greeting!r}")

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 18)
        if not chunk:
            raise ImapError("connection closed by the server")
        self.buf += chunk

    def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line, self.buf = self.buf[: end + 2], self.buf[end + 2 :]
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def command(self, text: str) -> list[bytes]:
        """The untagged responses (literals inline); raises unless tagged OK."""
        tag = b"W%d" % next(self.tags)
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        responses = []
        while True:
            line = self._line()
            parts = [line]
            while match := _LITERAL.search(line):
                parts.append(self._exact(int(match.group(1))))
                line = self._line()
                parts.append(line)
            response = b"".join(parts) if len(parts) > 1 else line
            if response.startswith(tag + b" "):
                if response[len(tag) + 1 :].startswith(b"OK"):
                    return responses
                raise ImapError(f"{text[:60]}: {response[:300]!r}")
            responses.append(response)

    def close(self) -> None:
        try:
            self.sock.sendall(b"Z LOGOUT\r\n")
        except OSError:
            pass
        self.sock.close()


@dataclass
class Target:
    name: str
    port: int
    user: str
    pids: Callable[[], list[int]]
    timeout: float
    uids: list[int] = field(default_factory=list)  # in sequence order

    def login(self) -> Client:
        client = Client(self.port, self.timeout)
        client.command(f'LOGIN "{self.user}" "{PASSWORD}"')
        return client

    def session(self) -> Client:
        client = self.login()
        client.command("SELECT INBOX")
        return client


# -- measurements -------------------------------------------------------------------------


@dataclass
class Operation:
    name: str
    run: Callable[[Client], None]  # timed
    select: bool = True  # SELECT before the timed part
    undo: Callable[[Client], None] | None = None  # untimed, after


def operations(target: Target, messages: list[Message]) -> list[Operation]:
    n = len(messages)
    chosen = spread([i for i, m in enumerate(messages) if "\\Flagged" not in m.flags], STORE_COUNT)
    uid_set = ",".join(str(target.uids[i]) for i in chosen)
    last = min(FETCH_WHOLE, n)
    return [
        Operation("SELECT INBOX", lambda c: c.command("SELECT INBOX"), select=False),
        Operation("FETCH 1:* (UID FLAGS RFC822.SIZE)",
                  lambda c: c.command("FETCH 1:* (UID FLAGS RFC822.SIZE)")),
        Operation(f"FETCH 1:{last} BODY.PEEK[]",
                  lambda c: c.command(f"FETCH 1:{last} BODY.PEEK[]")),
        Operation(f"SEARCH TEXT {HIT_WORD}", lambda c: c.command(f'SEARCH TEXT "{HIT_WORD}"')),
        Operation(f"UID STORE {len(chosen)} +FLAGS",
                  lambda c: c.command(f"UID STORE {uid_set} +FLAGS (\\Flagged)"),
                  undo=lambda c: c.command(f"UID STORE {uid_set} -FLAGS.SILENT (\\Flagged)")),
    ]  # fmt: skip


def spread(items: list[int], count: int) -> list[int]:
    if len(items) <= count:
        return items
    step = len(items) / count
    return [items[int(k * step)] for k in range(count)]


def time_operation(target: Target, op: Operation, repeat: int) -> float:
    """Median seconds of ``repeat`` runs after one warm-up, each on a fresh connection."""
    times = []
    for attempt in range(repeat + 1):
        client = target.session() if op.select else target.login()
        try:
            start = time.perf_counter()
            op.run(client)
            elapsed = time.perf_counter() - start
            if op.undo is not None:
                op.undo(client)
        finally:
            client.close()
        if attempt:  # the first was the warm-up
            times.append(elapsed)
    return statistics.median(times)


def check(target: Target, messages: list[Message]) -> str:
    """Does the server hold what was loaded, in the same order? Records its UIDs."""
    last = min(FETCH_WHOLE, len(messages))
    client = target.login()
    try:
        exists = [r for r in client.command("SELECT INBOX") if r.endswith(b" EXISTS\r\n")]
        count = int(exists[-1].split()[1]) if exists else -1
        listing = client.command("FETCH 1:* (UID FLAGS RFC822.SIZE)")
        bodies = client.command(f"FETCH 1:{last} BODY.PEEK[]")
        found = client.command(f'SEARCH TEXT "{HIT_WORD}"')
    finally:
        client.close()
    target.uids = [int(_field(rb"UID (\d+)", r)) for r in listing]
    sizes = [int(_field(rb"RFC822\.SIZE (\d+)", r)) for r in listing]
    flags = [_field(rb"FLAGS \(([^)]*)\)", r).split() for r in listing]
    texts = [_literal(r) for r in bodies]
    hits = [int(n) for n in found[0].split()[2:]] if found else []
    problems = []
    if count != len(messages) or len(listing) != len(messages):
        problems.append(f"{count} messages, {len(listing)} listed")
    if sizes != [len(m.data) for m in messages]:
        problems.append("RFC822.SIZE differs (or the order does)")
    for flag in ("\\Seen", "\\Flagged", "\\Answered"):
        if [flag.encode() in f for f in flags] != [flag in m.flags for m in messages]:
            problems.append(f"{flag} differs")
    if texts != [m.data for m in messages[:last]]:
        problems.append(f"BODY[] of 1:{last} differs")
    if hits != [i + 1 for i, m in enumerate(messages) if m.hit]:
        problems.append(f"SEARCH found {hits[:20]}")
    seen = sum(b"\\Seen" in f for f in flags)
    return (
        f"{target.name:<8} {count} messages, {sum(sizes)} bytes, {seen} \\Seen, "
        f"{sum(map(len, texts))} bytes in 1:{last}, {len(hits)} SEARCH hits: "
        + ("as loaded" if not problems else "MISMATCH: " + "; ".join(problems))
    )


def _field(pattern: bytes, response: bytes) -> bytes:
    match = re.search(pattern, response)
    if match is None:
        raise ImapError(f"no {pattern!r} in {response[:200]!r}")
    return match.group(1)


def _literal(response: bytes) -> bytes:
    match = _LITERAL_IN.search(response)
    if match is None:
        raise ImapError(f"no literal in {response[:200]!r}")
    start = match.end()
    return response[start : start + int(match.group(1))]


def open_idle(target: Target, count: int) -> list[socket.socket]:
    """``count`` connections, each logged in and then left alone."""
    login = f'a LOGIN "{target.user}" "{PASSWORD}"\r\n'.encode()
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            batch = [
                socket.create_connection(("127.0.0.1", target.port), timeout=target.timeout)
                for _ in range(min(LOGIN_BATCH, count - len(socks)))
            ]
            socks += batch
            for sock in batch:
                _expect(sock, b"* OK", b"")
                sock.sendall(login)
            for sock in batch:
                _expect(sock, b"a OK", b"a ")
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _expect(sock: socket.socket, good: bytes, final: bytes) -> None:
    """Read lines until one starts with ``good`` (or, if ``final``, fails at ``final``)."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise ImapError(f"connection closed; got {data!r}")
        data += chunk
        for line in data.split(b"\r\n"):
            if line.startswith(good):
                return
            if final and line.startswith(final):
                raise ImapError(f"LOGIN refused: {line!r}")


def settle(target: Target, seconds: float = 2.0) -> None:
    """Give short-lived processes (logins) time to end, memory time to settle."""
    deadline = time.monotonic() + 30
    last = memory_kb(target.pids())
    while time.monotonic() < deadline:
        time.sleep(seconds)
        now = memory_kb(target.pids())
        if abs(now - last) < max(256, last // 200):
            return
        last = now


def idle_memory(target: Target, count: int) -> tuple[int, int]:
    """(RSS, PSS) growth in kB with ``count`` idle authenticated connections."""
    settle(target)
    pids = target.pids()
    rss0, pss0 = memory_kb(pids, "Rss"), memory_kb(pids, "Pss")
    socks = open_idle(target, count)
    try:
        settle(target)
        pids = target.pids()
        rss1, pss1 = memory_kb(pids, "Rss"), memory_kb(pids, "Pss")
        alive = sum(1 for s in socks if _open(s))
        if alive != count:
            raise ImapError(f"only {alive} of {count} idle connections survived")
    finally:
        for sock in socks:
            sock.close()
    return rss1 - rss0, pss1 - pss0


def _open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def wait_imap(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(512).startswith(b"* OK"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


# -- report -------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    unit: str  # "ms" or "MB"
    values: dict[str, float | None]

    def text(self, target: str) -> str:
        value = self.values.get(target)
        if value is None:
            return "n/a"
        return f"{value * 1000:.1f} ms" if self.unit == "ms" else f"{value / 1024:.1f} MB"

    @property
    def ratio(self) -> float | None:
        w, d = self.values.get("waypost"), self.values.get("dovecot")
        if w is None or d is None or d <= 0:
            return None
        return w / d


def report(rows: list[Row], why_not: str | None) -> None:
    print()
    width = max(len(r.name) for r in rows) + 2
    print(f"{'operation':<{width}} {'Waypost':>12} {'Dovecot':>12} {'Waypost/Dovecot':>16}")
    for row in rows:
        ratio = row.ratio
        shown = f"{ratio:.2f}" if ratio is not None else "n/a"
        w, d = row.text("waypost"), row.text("dovecot")
        print(f"{row.name:<{width}} {w:>12} {d:>12} {shown:>16}")
    print()
    if why_not:
        print(f"verdict: Waypost not measured ({why_not}); target {TARGET:g}x Dovecot not judged")
        return
    missing = [r.name for r in rows if r.ratio is None]
    slow = [f"{r.name} ({r.ratio:.2f}x)" for r in rows if r.ratio is not None and r.ratio > TARGET]
    if slow:
        print(f"verdict: target MISSED, above {TARGET:g}x Dovecot: {', '.join(slow)}")
    elif missing:
        print(f"verdict: incomplete, no ratio for: {', '.join(missing)}")
    else:
        worst = max(rows, key=lambda r: r.ratio or 0)
        print(f"verdict: target met, nothing above {TARGET:g}x Dovecot "
              f"(worst: {worst.name}, {worst.ratio:.2f}x)")  # fmt: skip


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        raise SystemExit(f"need {needed} file descriptors, the hard limit is {hard}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10000, help="messages in the mailbox")
    parser.add_argument("--connections", type=int, default=1000, help="idle connections")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per operation")
    parser.add_argument("--seed", type=int, default=5, help="seed of the generated mailbox")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per command at most")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    reason = dovecot_missing_reason()
    if reason:
        print(f"cannot run: {reason}")
        return 2
    raise_fd_limit(args.connections * 2 + 500)  # inherited by both servers

    workdir = Path(tempfile.mkdtemp(prefix="waypost-bench-imap-"))
    workdir.chmod(0o755)  # Dovecot's users must reach its directory inside
    waypost = WaypostServer(workdir / "var", domain=DOMAIN, log_level="WARNING")
    dovecot = DovecotInstance(workdir, free_port(), users={"bench": PASSWORD},
                              connections=args.connections,
                              keep=args.keep)
    account = f"bench@{DOMAIN}"
    rows: list[Row] = []
    why_not: str | None = None
    try:
        started = time.monotonic()
        print(f"generating {args.messages} messages ...", flush=True)
        messages = generate(args.messages, args.seed)
        total = sum(len(m.data) for m in messages)
        print(f"  {total / 1e6:.1f} MB, {sum(m.hit for m in messages)} with "
              f"{HIT_WORD!r}, {time.monotonic() - started:.1f} s", flush=True)  # fmt: skip

        started = time.monotonic()
        load_dovecot(dovecot, messages)
        print(f"Dovecot: Maildir written in {time.monotonic() - started:.1f} s", flush=True)
        dovecot.start()

        started = time.monotonic()
        waypost.init()
        stored = load_waypost(waypost.data, account, messages, args.connections)
        print(f"Waypost: stored in {time.monotonic() - started:.1f} s, {stored}", flush=True)
        waypost.start()
        targets = [
            Target("dovecot", dovecot.port, "bench", dovecot.pids, args.timeout),
        ]
        waypost_target = Target(
            "waypost", waypost.port("IMAPPort"), account,
            lambda: [waypost.proc.pid, *descendants(waypost.proc.pid)] if waypost.proc else [],
            args.timeout,
        )  # fmt: skip
        if wait_imap(waypost_target.port, 15):
            targets.insert(0, waypost_target)
        else:
            why_not = (f"nothing answers IMAP on port {waypost_target.port}; "
                       "no IMAP listener yet? (grep start_imap src/waypost/server.py)")  # fmt: skip
            print(f"Waypost: {why_not}", flush=True)

        print("consistency (first access, untimed):", flush=True)
        for target in list(targets):
            try:
                print("  " + check(target, messages), flush=True)
            except (ImapError, OSError, ValueError, IndexError) as exc:
                print(f"  {target.name}: cannot measure: {exc}", flush=True)
                targets.remove(target)
                if target.name == "waypost":
                    why_not = f"Waypost IMAP failed: {exc}"

        names = [op.name for op in operations(targets[0], messages)] if targets else []
        results: dict[str, dict[str, float | None]] = {name: {} for name in names}
        for index, name in enumerate(names):
            for target in targets:
                op = operations(target, messages)[index]
                try:
                    seconds = time_operation(target, op, args.repeat)
                except (ImapError, OSError) as exc:
                    print(f"  {target.name}: {name}: {exc}", flush=True)
                    seconds = None
                results[name][target.name] = seconds
                shown = "failed" if seconds is None else f"{seconds * 1000:.1f} ms"
                print(f"  {target.name:<8} {name:<40} {shown}", flush=True)
        rows = [Row(name, "ms", values) for name, values in results.items()]

        rss: dict[str, float | None] = {}
        pss: dict[str, float | None] = {}
        for target in targets:
            try:
                rss[target.name], pss[target.name] = idle_memory(target, args.connections)
            except (ImapError, OSError) as exc:
                print(f"  {target.name}: idle connections: {exc}", flush=True)
                rss[target.name] = pss[target.name] = None
                continue
            kb = rss[target.name] or 0
            print(f"  {target.name:<8} {args.connections} idle connections: "
                  f"RSS +{kb / 1024:.1f} MB ({kb / args.connections:.1f} kB each), "
                  f"PSS +{(pss[target.name] or 0) / 1024:.1f} MB", flush=True)  # fmt: skip
        rows.append(Row(f"memory, {args.connections} idle logins (RSS)", "MB", rss))
        rows.append(Row(f"memory, {args.connections} idle logins (PSS)", "MB", pss))
    finally:
        waypost.stop()
        dovecot.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report(rows, why_not)
    return 0


if __name__ == "__main__":
    sys.exit(main())
