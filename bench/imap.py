"""IMAP: Waypost beside Dovecot, same messages, same machine, same run (issues 5 and 12).

Not a test: run ``.venv/bin/python bench/imap.py`` as root with the Debian
package ``dovecot-imapd`` installed (a private Dovecot runs in the foreground
on a free loopback port, see ``tests/support/dovecot.py``; the packaged
instance is not used). ``--messages 500 --connections 50 --repeat 1
--duration 3`` is a quick check; ``--only ops`` or ``--only rates`` runs one
half.

**Mailboxes.** One INBOX per size in ``--messages`` (default 10,000 and
50,000, each its own account), each generated once, reproducibly (``--seed``),
and the same bytes loaded into both servers: 2-50 KB (log-uniform, so most
are small), plain text, some quoted-printable UTF-8, some
multipart/alternative with HTML, some multipart/mixed with a base64
attachment; about 1% of them contain the word that SEARCH TEXT looks for;
most of the older ones are ``\\Seen``, a few ``\\Flagged`` or ``\\Answered``,
1% ``\\Deleted`` and 5% carry the keyword ``$Junk``. Dovecot gets Maildir
files in ``cur/`` as its delivery agent writes them (LF line ends,
``,S=,W=`` sizes, ``:2,FLAGS`` with ``$Junk`` as letter ``a`` of
``dovecot-keywords``, the file time as INTERNALDATE), indexed on first
access; Waypost gets them through its store API before the server starts
(body blobs, then message rows in transactions of 500), as local delivery
would have stored them. Consistency checks (message count, sizes, flags, the
bytes of 100 messages, SEARCH TEXT and flag-search hits) are printed first.

**Single operations**, per mailbox: each run once to warm up (Dovecot builds
its index, both fill their caches), then ``--repeat`` times (3), each on a
fresh connection after LOGIN (and SELECT, except when SELECT is timed), from
sending the command to its tagged OK: ``SELECT INBOX``; ``FETCH 1:* (UID
FLAGS RFC822.SIZE)``; ``FETCH 1:100 BODY.PEEK[]``; ``SEARCH TEXT "<word>"``
(neither server has a full-text index); ``UID SEARCH UNSEEN``, ``FLAGGED``,
``DELETED`` and ``KEYWORD $Junk``; ``UID STORE <1,000 UIDs> +FLAGS
(\\Flagged)`` (UIDs spread over the mailbox, none flagged before; undone
untimed after each run).

**Logins per second**: 10 client processes at once, each connecting,
LOGIN, LOGOUT, closing, again and again for ``--duration`` seconds (10),
all on one account. **Mixed workload**: 10 client processes, each on its own
account (``mix0`` ... ``mix9``, an INBOX of 100 messages each, so clients do
not wait on each other's mailbox locks in either server), in rounds: LOGIN,
SELECT INBOX, ``FETCH <last 5> (FLAGS BODY.PEEK[])``, ``STORE <last 5>
+FLAGS (\\Flagged)`` (``-FLAGS`` every other round), ``APPEND`` one message
(a synchronizing literal), ``STORE 1 +FLAGS.SILENT (\\Deleted)``, EXPUNGE,
LOGOUT; and the same with the session kept open (LOGIN and SELECT once,
before the timed run starts).
A client keeps its message count from the untagged EXISTS and EXPUNGE it
receives, as a real one must (the EXPUNGE also removes the mix's own
``\\Deleted`` messages). Commands completed per second, per command and in
total; the mean latency per command is printed as the run goes. A command
that fails is printed as an ERROR, listed again under the table, and makes
the verdict INVALID (a client reconnects after one, so the rate would measure
reconnections). Every account logs in once before
(both servers' credential caches are warm). Each run is ``--duration``
seconds, the servers taking turns, ``--repeat`` times.

**Memory** (measured once, not repeated: a process keeps the memory it
grew, so a second round would show about nothing): ``--connections`` (1,000)
plain sockets connect and LOGIN (then stay idle); how much the server's
memory grew: the sum over the server's
processes (Waypost: its one process and any children; Dovecot: the master
and everything under it, one ``imap`` per session ...) of RSS, and of PSS,
which counts a page shared by N processes as 1/N in each, so that Dovecot's
1,000 ``imap`` processes are not charged 1,000 times for the same libraries.

Every row shows min-max over the repeats and the ratio Waypost/Dovecot of
the medians; the verdict is against the targets of issue 12: every time and
memory row at most 1.0x Dovecot's, logins/s and mixed-workload commands/s
at least Dovecot's. A markdown table for the README follows.

**Configuration** (printed at the start): passwords hashed with ARGON2ID in
Dovecot's passwd-file (``doveadm pw``, libsodium's default cost, m=64 MiB,
t=3) as Waypost stores them (argon2-cffi's default, m=64 MiB, t=3, p=4), and
Dovecot's auth cache on (``auth_cache_size``, ``auth_cache_ttl`` equal to
Waypost's ``LoginCacheTime``, verification in auth workers so both cores
serve it), as Waypost has its verified-credentials cache. Dovecot 2.3's
cache keeps the password *hash*, so a cached login still runs argon2 there;
that is Dovecot's behaviour, not a handicap we add. Dovecot otherwise runs
its defaults (high-security login processes), allows ``--connections``
sessions per user and IP and enough ``imap`` processes
(``mail_max_userip_connections``, ``process_limit``,
``default_client_limit``); Waypost's ``MaxConnections`` is raised to match
and it runs under the test harness (``tests/support/server.py``).
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
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

from argon2 import PasswordHasher

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

from waypost.cli.serve import default_workers  # noqa: E402
from waypost.services.container import open_services  # noqa: E402
from waypost.services.mailstore import summarize  # noqa: E402
from waypost.settings import lookup  # noqa: E402
from waypost.storage.interface import INBOX, NewMailMessage  # noqa: E402

DOMAIN = "main.dom"
PASSWORD = "bench-password-1"
HIT_WORD = "zanzibarite"  # appears in no other message, not even as a substring
FETCH_WHOLE = 100
STORE_COUNT = 1000
TARGET = 1.0  # times and memory at most this times Dovecot's, rates at least
LOGIN_BATCH = 50  # connections logging in at once when opening the idle ones
KEYWORD = "$Junk"  # carried by about 5% of the messages; 1% are deleted
MAILDIR_LETTERS = {"\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T",
                   KEYWORD: "a"}  # fmt: skip
CLIENTS = 10  # concurrent clients of the login and mixed workloads
MIX_MESSAGES = 100  # in each mixed-workload client's INBOX
MIX_FETCH = 5  # the last messages fetched and stored per round
LOGIN_LEAD = 15.0
"""Seconds the kept-open clients have to log in before the clock starts (10
argon2 logins at once on a loaded machine took Dovecot 4 s, which counted
against its rate when they were inside the timed run)."""
LOGIN_USER = "login"


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
        return "".join(sorted(MAILDIR_LETTERS[f] for f in self.flags))


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
    # added later: a separate stream, so the messages above stay as they were
    extra = random.Random(seed + 1)
    for m in messages:
        more = [f for f, share in (("\\Deleted", 0.01), (KEYWORD, 0.05)) if extra.random() < share]
        m.flags += tuple(more)
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
        name, ctype = rng.choice(
            [
                ("report.pdf", "application/pdf"),
                ("photo.jpg", "image/jpeg"),
                ("data.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
                ("archive.zip", "application/zip"),
            ]
        )
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


def load_dovecot(dovecot: DovecotInstance, user: str, messages: list[Message]) -> None:
    dovecot.set_keywords([KEYWORD], user)
    for m in messages:
        dovecot.add_message(m.data, m.maildir_letters, user=user, when=m.when, chown=False)


def load_waypost(
    data: Path, boxes: dict[str, list[Message]], logins: list[str], connections: int
) -> list[str]:
    """The accounts (``boxes``: account -> its INBOX; ``logins``: accounts with
    an empty one), their messages and the connection limit, straight into the
    store. Passwords are hashed with Waypost's default argon2 parameters."""
    services = open_services(data)
    lines = []
    try:
        for account in [*boxes, *logins]:
            services.directory.create_account(account, password=PASSWORD)
        services.set_setting("MaxConnections", str(connections + 100))
        store = services.store
        for account, messages in boxes.items():
            name, domain = account.split("@")
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
            ok = [(r.size, set(r.flags)) for r in rows] == [
                (len(m.data), set(m.flags)) for m in messages
            ]
            lines.append(f"{info.messages} messages, {info.size} bytes in {account}'s INBOX: "
                         + ("as loaded" if ok else "MISMATCH (sizes, flags or order)"))  # fmt: skip
    finally:
        services.close()
    return lines


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

    def _response(self) -> bytes:
        line = self._line()
        parts = [line]
        while match := _LITERAL.search(line):
            parts.append(self._exact(int(match.group(1))))
            line = self._line()
            parts.append(line)
        return b"".join(parts) if len(parts) > 1 else line

    def command(self, text: str, literal: bytes | None = None) -> list[bytes]:
        """The untagged responses (literals inline); raises unless tagged OK.
        ``literal``: sent after ``text`` as a synchronizing literal (APPEND)."""
        tag = b"W%d" % next(self.tags)
        if literal is None:
            self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + text.encode() + b" {%d}\r\n" % len(literal))
        responses = []
        while True:
            response = self._response()
            if literal is not None and response.startswith(b"+"):
                self.sock.sendall(literal + b"\r\n")
                literal = None
                continue
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


def exists(responses: list[bytes]) -> int:
    """The last ``* N EXISTS`` among ``responses`` (-1 if none)."""
    found = [r for r in responses if r.endswith(b" EXISTS\r\n")]
    return int(found[-1].split()[1]) if found else -1


def track(count: int, responses: list[bytes]) -> int:
    """The selected mailbox's message count after ``responses``, as a client
    must keep it (RFC 3501 §7.3.1, §7.4.1): ``* N EXISTS`` sets it, each
    ``* N EXPUNGE`` lowers it by one. An EXPUNGE can remove more than the
    message the round marked (another ``\\Deleted`` message of the mix)."""
    for response in responses:
        if response.endswith(b" EXISTS\r\n"):
            count = int(response.split()[1])
        elif response.endswith(b" EXPUNGE\r\n"):
            count -= 1
    return count


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


# -- single operations --------------------------------------------------------------------


@dataclass
class Operation:
    name: str
    run: Callable[[Client], None]  # timed
    select: bool = True  # SELECT before the timed part
    undo: Callable[[Client], None] | None = None  # untimed, after


FLAG_SEARCHES = ("UNSEEN", "FLAGGED", "DELETED", f"KEYWORD {KEYWORD}")


def flag_search_uids(target: Target, messages: list[Message]) -> dict[str, list[int]]:
    """What each of :data:`FLAG_SEARCHES` must find."""
    wanted: dict[str, Callable[[Message], bool]] = {
        "UNSEEN": lambda m: "\\Seen" not in m.flags,
        "FLAGGED": lambda m: "\\Flagged" in m.flags,
        "DELETED": lambda m: "\\Deleted" in m.flags,
        f"KEYWORD {KEYWORD}": lambda m: KEYWORD in m.flags,
    }
    return {
        key: [uid for uid, m in zip(target.uids, messages, strict=True) if test(m)]
        for key, test in wanted.items()
    }


def operations(target: Target, messages: list[Message]) -> list[Operation]:
    n = len(messages)
    chosen = spread([i for i, m in enumerate(messages) if "\\Flagged" not in m.flags], STORE_COUNT)
    uid_set = ",".join(str(target.uids[i]) for i in chosen)
    last = min(FETCH_WHOLE, n)

    def command(text: str) -> Callable[[Client], None]:
        def run(client: Client) -> None:
            client.command(text)

        return run

    return [
        Operation("SELECT INBOX", command("SELECT INBOX"), select=False),
        Operation("FETCH 1:* (UID FLAGS RFC822.SIZE)",
                  command("FETCH 1:* (UID FLAGS RFC822.SIZE)")),
        Operation(f"FETCH 1:{last} BODY.PEEK[]", command(f"FETCH 1:{last} BODY.PEEK[]")),
        Operation(f"SEARCH TEXT {HIT_WORD}", command(f'SEARCH TEXT "{HIT_WORD}"')),
        *[Operation(f"UID SEARCH {key}", command(f"UID SEARCH {key}")) for key in FLAG_SEARCHES],
        Operation(f"UID STORE {len(chosen)} +FLAGS",
                  command(f"UID STORE {uid_set} +FLAGS (\\Flagged)"),
                  undo=command(f"UID STORE {uid_set} -FLAGS.SILENT (\\Flagged)")),
    ]  # fmt: skip


def spread(items: list[int], count: int) -> list[int]:
    if len(items) <= count:
        return items
    step = len(items) / count
    return [items[int(k * step)] for k in range(count)]


def time_operation(target: Target, op: Operation, repeat: int) -> list[float]:
    """Seconds of ``repeat`` runs after one warm-up, each on a fresh connection."""
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
    return times


def check(target: Target, messages: list[Message]) -> str:
    """Does the server hold what was loaded, in the same order? Records its UIDs."""
    last = min(FETCH_WHOLE, len(messages))
    client = target.login()
    try:
        count = exists(client.command("SELECT INBOX"))
        # only the FETCH responses: Dovecot also sends "* OK Searched n%" and
        # "* OK Indexing" progress lines on a large mailbox
        listing = _fetches(client.command("FETCH 1:* (UID FLAGS RFC822.SIZE)"))
        bodies = _fetches(client.command(f"FETCH 1:{last} BODY.PEEK[]"))
        found = client.command(f'SEARCH TEXT "{HIT_WORD}"')
        target.uids = [int(_field(rb"UID (\d+)", r)) for r in listing]
        flag_hits = {key: _numbers(client.command(f"UID SEARCH {key}")) for key in FLAG_SEARCHES}
    finally:
        client.close()
    sizes = [int(_field(rb"RFC822\.SIZE (\d+)", r)) for r in listing]
    flags = [_field(rb"FLAGS \(([^)]*)\)", r).split() for r in listing]
    texts = [_literal(r) for r in bodies]
    hits = _numbers(found)
    problems = []
    if count != len(messages) or len(listing) != len(messages):
        problems.append(f"{count} messages, {len(listing)} listed")
    if sizes != [len(m.data) for m in messages]:
        problems.append("RFC822.SIZE differs (or the order does)")
    for flag in MAILDIR_LETTERS:
        if [flag.encode() in f for f in flags] != [flag in m.flags for m in messages]:
            problems.append(f"{flag} differs")
    if texts != [m.data for m in messages[:last]]:
        problems.append(f"BODY[] of 1:{last} differs")
    if hits != [i + 1 for i, m in enumerate(messages) if m.hit]:
        problems.append(f"SEARCH found {hits[:20]}")
    for key, uids in flag_search_uids(target, messages).items():
        if sorted(flag_hits[key]) != uids:
            problems.append(f"UID SEARCH {key} found {len(flag_hits[key])}, not {len(uids)}")
    seen = sum(b"\\Seen" in f for f in flags)
    return (
        f"{target.name:<8} {count} messages, {sum(sizes)} bytes, {seen} \\Seen, "
        f"{sum(map(len, texts))} bytes in 1:{last}, {len(hits)} SEARCH hits, "
        + ", ".join(f"{len(v)} {k.split()[0]}" for k, v in flag_hits.items())
        + ": "
        + ("as loaded" if not problems else "MISMATCH: " + "; ".join(problems))
    )


def _fetches(responses: list[bytes]) -> list[bytes]:
    """The untagged ``* n FETCH`` responses among ``responses``."""
    return [r for r in responses if re.match(rb"\* \d+ FETCH ", r)]


def _numbers(responses: list[bytes]) -> list[int]:
    """The numbers of an untagged ``* SEARCH`` response."""
    found = [r for r in responses if r.startswith(b"* SEARCH")]
    return [int(n) for n in found[0].split()[2:]] if found else []


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


# -- concurrent clients: logins and the mixed workload ----------------------------------
#
# Each client is its own process (forked: the clients' Python must not share
# one GIL and so throttle the faster server); they start together at a given
# wall-clock time and count what completed before the end time.


class _Stop(Exception):
    """The run's time is up."""


@dataclass
class Tally:
    """Per command: completed count and seconds spent waiting for them."""

    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def timed(self, name: str, stop_at: float, call: Callable[[], list[bytes]]) -> list[bytes]:
        start = time.perf_counter()
        responses = call()
        now = time.perf_counter()
        if time.time() > stop_at:
            raise _Stop
        self.counts[name] = self.counts.get(name, 0) + 1
        self.seconds[name] = self.seconds.get(name, 0.0) + now - start
        return responses

    def add(self, other: Tally) -> None:
        for name, count in other.counts.items():
            self.counts[name] = self.counts.get(name, 0) + count
            self.seconds[name] = self.seconds.get(name, 0.0) + other.seconds[name]
        self.errors += other.errors


def _sleep_until(moment: float) -> None:
    while (left := moment - time.time()) > 0:
        time.sleep(min(left, 0.5))


def login_client(port: int, user: str, start_at: float, stop_at: float, timeout: float) -> Tally:
    """LOGIN and LOGOUT on a fresh connection, again and again."""
    tally = Tally()
    _sleep_until(start_at)
    while time.time() < stop_at and len(tally.errors) < 20:
        try:
            client = Client(port, timeout)
            try:
                tally.timed("LOGIN", stop_at,
                            lambda c=client: c.command(f'LOGIN "{user}" "{PASSWORD}"'))  # fmt: skip
                tally.timed("LOGOUT", stop_at, lambda c=client: c.command("LOGOUT"))
            finally:
                client.sock.close()
        except _Stop:
            break
        except (ImapError, OSError) as exc:
            tally.errors.append(str(exc)[:200])
    return tally


MIXED_FRESH = ("LOGIN", "SELECT", "FETCH", "STORE", "APPEND", "EXPUNGE", "LOGOUT")
MIXED_OPEN = ("FETCH", "STORE", "APPEND", "EXPUNGE")


def mixed_client(port: int, user: str, keep_open: bool, appended: list[bytes],
                 start_at: float, stop_at: float, timeout: float) -> Tally:  # fmt: skip
    """The usual IMAP stress mix on one account's INBOX, in rounds: (LOGIN,
    SELECT,) FETCH the last few messages' FLAGS and BODY.PEEK[], STORE
    +FLAGS or -FLAGS \\Flagged on them, APPEND one message, STORE \\Deleted
    on the first and EXPUNGE it (so the INBOX keeps its size), (LOGOUT).
    ``keep_open``: one session for the whole run; else one per round."""
    tally = Tally()
    rounds = itertools.count()
    client: Client | None = None
    if keep_open:  # log in before the clock starts: the rate is of the commands after
        try:
            client = Client(port, timeout)
            client.command(f'LOGIN "{user}" "{PASSWORD}"')
            n = exists(client.command("SELECT INBOX"))
        except (ImapError, OSError) as exc:
            tally.errors.append(str(exc)[:200])
            client = None
    _sleep_until(start_at)
    while time.time() < stop_at and len(tally.errors) < 20:
        try:
            if client is None:
                client = Client(port, timeout)
                tally.timed("LOGIN", stop_at,
                            lambda c=client: c.command(f'LOGIN "{user}" "{PASSWORD}"'))  # fmt: skip
                n = exists(tally.timed("SELECT", stop_at,
                                       lambda c=client: c.command("SELECT INBOX")))  # fmt: skip
            first = max(1, n - MIX_FETCH + 1)
            sign = "+-"[next(rounds) % 2]
            commands = [
                ("FETCH", f"FETCH {first}:{n} (FLAGS BODY.PEEK[])", None),
                ("STORE", f"STORE {first}:{n} {sign}FLAGS (\\Flagged)", None),
                ("APPEND", "APPEND INBOX (\\Seen)", appended[n % len(appended)]),
                ("STORE", "STORE 1 +FLAGS.SILENT (\\Deleted)", None),
                ("EXPUNGE", "EXPUNGE", None),
            ]
            for name, text, literal in commands:
                call = lambda c=client, t=text, lit=literal: c.command(t, lit)  # noqa: E731
                responses = tally.timed(name, stop_at, call)
                n = track(n, responses)
            if not keep_open:
                tally.timed("LOGOUT", stop_at, lambda c=client: c.command("LOGOUT"))
                client.sock.close()
                client = None
        except _Stop:
            break
        except (ImapError, OSError) as exc:
            tally.errors.append(str(exc)[:200])
            if client is not None:
                client.sock.close()
            client = None
    if client is not None:
        client.close()
    return tally


def concurrent(work: Callable[..., Tally], jobs: list[tuple[object, ...]], duration: float,
               lead: float = 1.0) -> Tally:  # fmt: skip
    """Run ``work(*job, start_at, stop_at, timeout)`` in one process per job,
    ``lead`` seconds after now (time for the processes to start, and log in)."""
    start_at = time.time() + lead
    stop_at = start_at + duration
    total = Tally()
    context = multiprocessing.get_context("fork")
    with context.Pool(len(jobs)) as pool:
        results = [pool.apply_async(work, (*job, start_at, stop_at, duration + 60)) for job in jobs]
        for result in results:
            total.add(result.get(timeout=duration + 120))
    return total


# -- memory -------------------------------------------------------------------------------


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


def wait_greeting(port: int, timeout: float, greeting: bytes = b"* OK") -> bool:
    """Whether a server on ``port`` says ``greeting`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(512).startswith(greeting):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


# -- report -------------------------------------------------------------------------------


@dataclass
class Row:
    """One measured row: the values of every repeat per server. ``unit``
    ``ms`` and ``MB`` are costs (lower is better), ``/s`` a rate."""

    name: str
    unit: str
    values: dict[str, list[float]]
    errors: dict[str, int] = field(default_factory=dict)  # failed commands per server

    def median(self, target: str) -> float | None:
        values = self.values.get(target)
        return statistics.median(values) if values else None

    def text(self, target: str) -> str:
        values = self.values.get(target)
        if not values:
            return "n/a"
        low, high = min(values), max(values)
        if self.unit == "ms":
            one = (lambda v: f"{v * 1000:.1f}") if high < 10 else (lambda v: f"{v * 1000:,.0f}")
        elif self.unit == "MB":
            one = lambda v: f"{v / 1024:.1f}"  # noqa: E731
        else:
            one = lambda v: f"{v:,.0f}"  # noqa: E731
        shown = one(low) if one(low) == one(high) else f"{one(low)}-{one(high)}"
        return f"{shown} {self.unit}"

    @property
    def higher_better(self) -> bool:
        return self.unit == "/s"

    @property
    def ratio(self) -> float | None:
        w, d = self.median("waypost"), self.median("dovecot")
        if w is None or d is None or d <= 0:
            return None
        return w / d

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        if ratio is None:
            return None
        return ratio >= TARGET if self.higher_better else ratio <= TARGET


def report(rows: list[Row], why_not: str | None, repeat: int) -> None:
    print()
    width = max(len(r.name) for r in rows) + 2
    print(f"{'operation':<{width}} {'Waypost':>18} {'Dovecot':>18} {'Waypost/Dovecot':>16}")
    for row in rows:
        ratio = row.ratio
        shown = f"{ratio:.2f}" if ratio is not None else "n/a"
        w, d = row.text("waypost"), row.text("dovecot")
        print(f"{row.name:<{width}} {w:>18} {d:>18} {shown:>16}")
    print(f"\n(min-max of {repeat} runs; the ratio is of the medians)\n")
    print("| operation | Waypost | Dovecot | Waypost/Dovecot |")
    print("|---|---:|---:|---:|")
    for row in rows:
        ratio = row.ratio
        shown = f"{ratio:.2f}" if ratio is not None else "n/a"
        print(f"| {row.name} | {row.text('waypost')} | {row.text('dovecot')} | {shown} |")
    print()
    failed = [f"{r.name} ({', '.join(f'{n} {t}' for t, n in r.errors.items())})"
              for r in rows if r.errors]  # fmt: skip
    if failed:  # a rate with failed commands measures reconnections, not the server
        print(f"ERRORS: commands failed, these rates are not comparable: {'; '.join(failed)}")
    if why_not:
        print(f"verdict: Waypost not measured ({why_not}); target not judged")
        return
    missing = [r.name for r in rows if r.met is None]
    missed = [f"{r.name} ({r.ratio:.2f}x)" for r in rows if r.met is False]
    if failed:
        print("verdict: INVALID run, commands failed (see ERRORS above)")
    elif missed:
        print(f"verdict: target MISSED (times and memory at most {TARGET:g}x Dovecot's, "
              f"rates at least {TARGET:g}x): {', '.join(missed)}")  # fmt: skip
    elif missing:
        print(f"verdict: incomplete, no ratio for: {', '.join(missing)}")
    else:
        print(f"verdict: target met: no time or memory above {TARGET:g}x Dovecot's, "
              f"no rate below {TARGET:g}x")  # fmt: skip


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        raise SystemExit(f"need {needed} file descriptors, the hard limit is {hard}")


# -- the run ------------------------------------------------------------------------------


DOVECOT_AUTH = """\
auth_cache_size = 10M
auth_cache_ttl = {ttl} secs
auth_cache_verify_password_with_worker = yes
"""


def configuration(dovecot: DovecotInstance, cache_time: str) -> str:
    hashed = dovecot.hashed(PASSWORD)
    cost = hashed.split("$")[3] if hashed.count("$") >= 4 else "no hashing cost"
    hasher = PasswordHasher()  # what Waypost hashes with by default (services/passwords.py)
    params = {"t": hasher.time_cost, "m": hasher.memory_cost, "p": hasher.parallelism}
    return "\n".join(
        (
            "configuration:",
            f"  Dovecot {dovecot.scheme} in its passwd-file ({cost}), auth cache: "
            + dovecot.extra.strip().replace("\n", ", "),
            "  Dovecot logins: its default high-security mode (one imap-login process per "
            "connection) and one imap process per session",
            f"  Waypost argon2id ({', '.join(f'{k}={v}' for k, v in params.items())}), "
            f"verified-credentials cache LoginCacheTime={cache_time} s",
            f"  {CLIENTS} client processes on the same machine as both servers",
        )
    )


def measure_ops(targets: list[Target], label: str, messages: list[Message],
                repeat: int) -> list[Row]:  # fmt: skip
    names = [op.name for op in operations(targets[0], messages)] if targets else []
    rows = []
    for index, name in enumerate(names):
        values: dict[str, list[float]] = {}
        for target in targets:
            op = operations(target, messages)[index]
            try:
                values[target.name] = time_operation(target, op, repeat)
            except (ImapError, OSError) as exc:
                print(f"  {target.name}: {label}{name}: {exc}", flush=True)
                continue
            shown = ", ".join(f"{t * 1000:.1f}" for t in values[target.name])
            print(f"  {target.name:<8} {label}{name:<40} {shown} ms", flush=True)
        rows.append(Row(f"{label}{name}", "ms", values))
    return rows


def measure_rates(servers: list[tuple[str, int, Callable[[str], str]]], mixes: list[list[bytes]],
                  duration: float, repeat: int) -> list[Row]:  # fmt: skip
    """Logins/s and the mixed workload (fresh sessions, kept-open sessions):
    ``repeat`` runs of ``duration`` seconds, the servers taking turns."""
    kinds: list[tuple[str, Callable[..., Tally], Callable[[Callable[[str], str]], list[tuple[object, ...]]], tuple[str, ...]]] = [  # noqa: E501
        ("logins", login_client, lambda user: [(user(LOGIN_USER),)] * CLIENTS, ("LOGIN",)),
        ("mixed, a session per round", mixed_client,
         lambda user: [(user(f"mix{k}"), False, mixes[k]) for k in range(CLIENTS)], MIXED_FRESH),
        ("mixed, sessions kept open", mixed_client,
         lambda user: [(user(f"mix{k}"), True, mixes[k]) for k in range(CLIENTS)], MIXED_OPEN),
    ]  # fmt: skip
    for _name, port, user in servers:  # both servers' caches learn every password first
        for account in [LOGIN_USER, *(f"mix{k}" for k in range(CLIENTS))]:
            client = Client(port, 120)
            client.command(f'LOGIN "{user(account)}" "{PASSWORD}"')
            client.close()
    rows = []
    for kind, work, jobs, commands in kinds:
        rates: dict[str, dict[str, list[float]]] = {c: {} for c in (*commands, "total")}
        errors: dict[str, int] = {}
        for _ in range(repeat):
            for name, port, user in servers:
                lead = LOGIN_LEAD if kind.endswith("kept open") else 1.0
                tally = concurrent(work, [(port, *job) for job in jobs(user)], duration, lead)
                total = sum(tally.counts.get(c, 0) for c in commands)
                for command in commands:
                    rates[command].setdefault(name, []).append(
                        tally.counts.get(command, 0) / duration
                    )
                rates["total"].setdefault(name, []).append(total / duration)
                if tally.errors:
                    errors[name] = errors.get(name, 0) + len(tally.errors)
                latency = ", ".join(
                    f"{c} {tally.counts.get(c, 0) / duration:.0f}/s "
                    f"{1000 * tally.seconds.get(c, 0) / max(tally.counts.get(c, 0), 1):.1f} ms"
                    for c in commands
                )
                print(f"  {name:<8} {kind}: {total / duration:.0f} commands/s ({latency})"
                      + (f"; {len(tally.errors)} ERRORS: {tally.errors[:3]}"
                         if tally.errors else ""), flush=True)  # fmt: skip
        if kind == "logins":
            rows.append(Row(f"LOGIN/s, {CLIENTS} clients", "/s", rates["LOGIN"], errors))
            continue
        for command in (*commands, "total"):
            label = "commands" if command == "total" else command
            rows.append(Row(f"{kind}: {label}/s", "/s", rates[command], errors))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages",
        default="10000,50000",
        help="messages in the INBOXes, comma-separated: one mailbox per size",
    )
    parser.add_argument(
        "--connections", type=int, default=1000, help="idle connections (0: no memory rows)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per row")
    parser.add_argument(
        "--duration", type=float, default=10, help="seconds of each login or mixed-workload run"
    )
    parser.add_argument(
        "--only",
        choices=("ops", "rates", "all"),
        default="all",
        help="single operations, the concurrent rates, or both",
    )
    parser.add_argument(
        "--dovecot-scheme",
        default="ARGON2ID",
        help="Dovecot's password scheme (PLAIN: the figures of issue 12's report)",
    )
    parser.add_argument("--seed", type=int, default=5, help="seed of the generated mailboxes")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per command at most")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="waypost serve --workers (default: as serve, the number of cores)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.messages.split(",") if n.strip()]
    reason = dovecot_missing_reason()
    if reason:
        print(f"cannot run: {reason}")
        return 2
    raise_fd_limit(args.connections * 2 + 500)  # inherited by both servers

    workdir = Path(tempfile.mkdtemp(prefix="waypost-bench-imap-"))
    workdir.chmod(0o755)  # Dovecot's users must reach its directory inside
    waypost = WaypostServer(workdir / "var", domain=DOMAIN, log_level="WARNING",
                            workers=args.workers)
    cache_time = lookup("LoginCacheTime").default
    users = [f"bench{n}" for n in sizes] + [LOGIN_USER] + [f"mix{k}" for k in range(CLIENTS)]
    dovecot = DovecotInstance(workdir, free_port(), users=dict.fromkeys(users, PASSWORD),
                              connections=max(args.connections, CLIENTS * 2),
                              extra=DOVECOT_AUTH.format(ttl=cache_time), scheme=args.dovecot_scheme,
                              keep=args.keep)  # fmt: skip
    rows: list[Row] = []
    why_not: str | None = None
    try:
        print(configuration(dovecot, cache_time), flush=True)
        boxes: dict[str, list[Message]] = {}
        for n in sizes if args.only != "rates" else []:
            started = time.monotonic()
            boxes[f"bench{n}"] = messages = generate(n, args.seed)
            total = sum(len(m.data) for m in messages)
            print(f"generated {n} messages: {total / 1e6:.1f} MB, {sum(m.hit for m in messages)} "
                  f"with {HIT_WORD!r}, {time.monotonic() - started:.1f} s", flush=True)  # fmt: skip
        mix = generate(MIX_MESSAGES, args.seed + 2) if args.only != "ops" else []
        for k in range(CLIENTS if mix else 0):
            boxes[f"mix{k}"] = mix

        started = time.monotonic()
        dovecot.prepare()
        for user, messages in boxes.items():
            load_dovecot(dovecot, user, messages)
        dovecot.chown_mail()
        print(f"Dovecot: Maildirs written in {time.monotonic() - started:.1f} s", flush=True)
        dovecot.start()

        started = time.monotonic()
        waypost.init()
        stored = load_waypost(waypost.data, {f"{u}@{DOMAIN}": m for u, m in boxes.items()},
                              [f"{LOGIN_USER}@{DOMAIN}"], args.connections)  # fmt: skip
        print(f"Waypost: stored in {time.monotonic() - started:.1f} s", flush=True)
        for line in stored:
            if not line.endswith("as loaded") or "bench" in line:
                print("  " + line, flush=True)
        waypost.start()
        pids = waypost.worker_pids or [waypost.pid]
        print(f"Waypost: serve --workers {args.workers} (pids {pids})",
              flush=True)
        waypost_port = waypost.port("IMAPPort")
        servers: list[tuple[str, int, Callable[[str], str]]] = [
            ("dovecot", dovecot.port, lambda user: user),
        ]
        if wait_greeting(waypost_port, 15):
            servers.insert(0, ("waypost", waypost_port, lambda user: f"{user}@{DOMAIN}"))
        else:
            why_not = f"nothing answers IMAP on port {waypost_port}"
            print(f"Waypost: {why_not}", flush=True)

        def pids_of(name: str) -> Callable[[], list[int]]:
            if name == "dovecot":
                return dovecot.pids
            proc = waypost.proc
            return lambda: [proc.pid, *descendants(proc.pid)] if proc else []

        for n in sizes if args.only != "rates" else []:
            messages = boxes[f"bench{n}"]
            targets = [Target(name, port, user(f"bench{n}"), pids_of(name), args.timeout)
                       for name, port, user in servers]  # fmt: skip
            print(f"consistency of the {n:,}-message INBOX (first access, untimed):", flush=True)
            for target in list(targets):
                try:
                    print("  " + check(target, messages), flush=True)
                except (ImapError, OSError, ValueError, IndexError) as exc:
                    print(f"  {target.name}: cannot measure: {exc}", flush=True)
                    targets.remove(target)
                    if target.name == "waypost":
                        why_not = f"Waypost IMAP failed: {exc}"
            rows += measure_ops(targets, f"{n:,}: ", messages, args.repeat)
        del boxes

        if args.connections and args.only != "rates":
            rss: dict[str, list[float]] = {}
            pss: dict[str, list[float]] = {}
            # once: Waypost's process keeps the memory it grew (Python reuses its
            # arenas), so a second round in the same process would show ~0
            for name, port, user in servers:
                target = Target(name, port, user(f"bench{sizes[0]}"), pids_of(name),
                                args.timeout)  # fmt: skip
                try:
                    r, p = idle_memory(target, args.connections)
                except (ImapError, OSError) as exc:
                    print(f"  {name}: idle connections: {exc}", flush=True)
                    continue
                rss[name], pss[name] = [r], [p]
                print(f"  {name:<8} {args.connections} idle connections: "
                      f"RSS +{r / 1024:.1f} MB ({r / args.connections:.1f} kB each), "
                      f"PSS +{p / 1024:.1f} MB", flush=True)  # fmt: skip
            rows.append(Row(f"memory, {args.connections:,} idle logins (RSS)", "MB", rss))
            rows.append(Row(f"memory, {args.connections:,} idle logins (PSS)", "MB", pss))

        if args.only != "ops":  # after the memory rows: this grows both servers' memory
            appended = [[m.data for m in mix[k::CLIENTS]] for k in range(CLIENTS)]
            rows += measure_rates(servers, appended, args.duration, args.repeat)
    finally:
        waypost.stop()
        dovecot.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if rows:
        report(rows, why_not, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
