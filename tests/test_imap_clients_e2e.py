"""Real IMAP clients against a real Waypost (issue 5 point 5).

* ``mbsync`` (Debian package ``isync``) syncs a 1,000-message account into
  a Maildir and back: the first run fetches everything, a second run changes
  nothing (no command that writes, same files, same server state), local
  changes (a flag, a deletion, a new message, a new folder) reach the
  server, and the run after that is quiet again.
* ``mutt`` (Debian package ``mutt``) opens ``~marketing/announce`` after the
  owner granted read rights, and copies what it shows into a local mbox,
  which the test then reads. mutt is a full-screen program: it runs in a
  pseudo-terminal, its keys come from ``push``, and every wait is bounded.

The 1,000 messages are APPENDed in one pipelined session with LITERAL+
literals (the client never waits for ``+``), which takes a few seconds.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient
from tests.support.mutt import muttrc as mutt_config
from tests.support.server import WaypostServer

pytestmark = pytest.mark.peer

PW = "e2e-pw-5678"
DOMAIN = "domain.dom"
COUNT = 1000
TIMEOUT = 120


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("imap-e2e") / "var").init()
    srv.cli("domain", "add", DOMAIN)
    for name in ("sync", "marketing", "john", "mallory"):
        srv.cli("account", "add", f"{name}@{DOMAIN}", "--password", PW)
    srv.start()
    yield srv
    srv.stop()


def imap(server: WaypostServer, user: str) -> IMAPClient:
    c = IMAPClient("127.0.0.1", port=server.port("IMAPPort"), ssl=False, timeout=30)
    c.login(f"{user}@{DOMAIN}", PW)
    return c


def subject(n: int) -> str:
    return f"sync test message {n:04d}"


def append_many(server: WaypostServer, user: str, count: int) -> float:
    """APPEND ``count`` messages in one session, pipelined with LITERAL+."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port("IMAPPort")), 60) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"* OK")
        sock.sendall(f'L LOGIN "{user}@{DOMAIN}" "{PW}"\r\n'.encode())
        assert reader.readline().startswith(b"L OK")
        chunks = []
        for n in range(count):
            body = (
                f"From: sender{n % 17}@example.com\r\nTo: {user}@{DOMAIN}\r\n"
                f"Subject: {subject(n)}\r\nMessage-ID: <sync-{n}@example.com>\r\n"
                f"Date: Mon, 01 Jan 2024 10:{n // 60 % 60:02d}:{n % 60:02d} +0000\r\n\r\n"
                f"Body of message {n}.\r\n" + "filler line\r\n" * (n % 7)
            ).encode()
            flags = "(\\Seen) " if n % 3 == 0 else ""
            chunks.append(
                b"A%d APPEND INBOX %s{%d+}\r\n%s\r\n" % (n, flags.encode(), len(body), body)
            )
        sock.sendall(b"".join(chunks))
        done = 0
        while done < count:
            line = reader.readline()
            assert line, "connection closed during the APPENDs"
            if line.startswith(b"A"):
                assert b" OK [APPENDUID" in line, line
                done += 1
        sock.sendall(b"Z LOGOUT\r\n")
    return time.monotonic() - started


# -- mbsync ------------------------------------------------------------------------------


def mbsync_config(server: WaypostServer, root: Path) -> Path:
    (root / "mail").mkdir(parents=True, exist_ok=True)
    config = root / "mbsyncrc"
    config.write_text(
        f"""IMAPAccount waypost
Host 127.0.0.1
Port {server.port("IMAPPort")}
User sync@{DOMAIN}
Pass {PW}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account waypost

MaildirStore local
Path {root}/mail/
Inbox {root}/mail/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Sync All
Create Both
Expunge Both
SyncState *
"""
    )
    return config


def mbsync(config: Path) -> str:
    """One run with network debugging (every IMAP command it sends is shown)."""
    proc = subprocess.run(
        ["mbsync", "-Dn", "-c", str(config), "-a"],
        capture_output=True, text=True, timeout=TIMEOUT, errors="replace",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "error" not in proc.stderr.lower(), proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def maildir(root: Path, box: str = "INBOX") -> dict[str, Path]:
    """Subject -> file of the messages in a local Maildir folder."""
    found = {}
    for sub in ("cur", "new"):
        for path in (root / "mail" / box / sub).glob("*"):
            m = re.search(rb"^Subject: (.*?)\r?$", path.read_bytes(), re.M)
            assert m, path
            found[m.group(1).decode()] = path
    return found


def writes(log: str) -> list[str]:
    """The commands that change the server, from ``mbsync -Dn`` output."""
    return [line for line in log.splitlines()
            if re.search(r">>> \d+ (UID )?(STORE|APPEND|EXPUNGE|CREATE|DELETE|MOVE|COPY)\b",
                         line)]  # fmt: skip


def server_state(server: WaypostServer) -> tuple[int, int, dict[int, tuple]]:
    c = imap(server, "sync")
    try:
        info = c.select_folder("INBOX", readonly=True)
        flags = c.fetch(c.search(["ALL"]), ["FLAGS"]) if info[b"EXISTS"] else {}
        return (
            info[b"EXISTS"],
            info[b"UIDNEXT"],
            {n: tuple(sorted(d[b"FLAGS"])) for n, d in flags.items()},
        )
    finally:
        c.logout()


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="needs mbsync (Debian package isync)")
def test_mbsync_syncs_1000_messages_both_ways(server: WaypostServer, tmp_path: Path) -> None:
    took = append_many(server, "sync", COUNT)
    assert took < 60, f"1,000 pipelined APPENDs took {took:.1f} s"
    config = mbsync_config(server, tmp_path)

    first = mbsync(config)
    local = maildir(tmp_path)
    assert len(local) == COUNT
    assert set(local) == {subject(n) for n in range(COUNT)}
    assert local[subject(0)].name.endswith(",S")  # \Seen came along as the S flag
    # the bytes arrived unchanged
    c = imap(server, "sync")
    c.select_folder("INBOX", readonly=True)
    body = c.fetch([6], ["BODY.PEEK[]"])[6][b"BODY[]"]
    c.logout()
    stored = re.sub(rb"(?m)^X-TUID: .*\n", b"", local[subject(5)].read_bytes())  # mbsync's mark
    assert stored.replace(b"\r\n", b"\n") == body.replace(b"\r\n", b"\n")
    assert not writes(first), writes(first)[:5]

    # a second run changes nothing, on either side
    before_files = sorted(p.name for p in local.values())
    before_server = server_state(server)
    second = mbsync(config)
    assert not writes(second), writes(second)[:5]
    assert sorted(p.name for p in maildir(tmp_path).values()) == before_files
    assert server_state(server) == before_server

    # local changes reach the server: a flag, a deletion, a new message, a new folder
    flagged = local[subject(10)]
    base, _, letters = flagged.name.partition(":2,")
    flagged.rename(flagged.with_name(f"{base}:2,{''.join(sorted(letters + 'F'))}"))
    local[subject(20)].unlink()
    new = b"From: me@example.com\r\nSubject: written locally\r\n\r\nlocal body\r\n"
    (tmp_path / "mail" / "INBOX" / "new" / "1700000000.local.host").write_bytes(new)
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "mail" / "Local" / sub).mkdir(parents=True, exist_ok=True)
    (tmp_path / "mail" / "Local" / "new" / "1700000001.local.host").write_bytes(
        b"Subject: in a new folder\r\n\r\nx\r\n"
    )
    third = mbsync(config)
    assert writes(third), "the local changes were not sent"

    c = imap(server, "sync")
    c.select_folder("INBOX", readonly=True)
    assert len(c.search(["ALL"])) == COUNT  # one deleted, one added
    assert c.search(["SUBJECT", subject(20)]) == []
    hit = c.search(["SUBJECT", subject(10)])
    assert hit and b"\\Flagged" in c.fetch(hit, ["FLAGS"])[hit[0]][b"FLAGS"]
    assert len(c.search(["SUBJECT", "written locally"])) == 1
    c.select_folder("Local", readonly=True)
    assert len(c.search(["SUBJECT", "in a new folder"])) == 1
    c.logout()

    fourth = mbsync(config)
    assert not writes(fourth), writes(fourth)[:5]
    assert len(maildir(tmp_path)) == COUNT


# -- mutt ----------------------------------------------------------------------------------


def run_in_pty(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, bytes]:
    """Run a full-screen program in a pseudo-terminal until it exits (or is
    killed after ``timeout``); returns its exit status and screen output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 132, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True, close_fds=True)  # fmt: skip
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the program closed the terminal
                    break
                if not data:
                    break
                output += data
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        os.close(master)
    return proc.returncode, bytes(output)


@pytest.mark.skipif(shutil.which("mutt") is None, reason="needs mutt (Debian package mutt)")
def test_mutt_opens_a_foreign_mailbox_after_the_owner_grants_read(
    server: WaypostServer, tmp_path: Path
) -> None:
    owner = imap(server, "marketing")
    owner.create_folder("announce")
    owner.append("announce", b"From: marketing@domain.dom\r\nSubject: Quarterly all-hands "
                             b"on Friday\r\n\r\nPlease come.\r\n")  # fmt: skip
    owner.append("announce", b"From: marketing@domain.dom\r\nSubject: New logo\r\n\r\nSee.\r\n")
    owner.setacl("announce", "john", "lr")
    owner.logout()

    home = tmp_path / "home"
    home.mkdir()
    saved = tmp_path / "saved.mbox"
    port = server.port("IMAPPort")
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(mutt_config(f"john@{DOMAIN}", PW, port))
    env = {
        "HOME": str(home), "TERM": "xterm", "LANG": "C.UTF-8", "PATH": os.environ["PATH"],
        "MAILCAP": "/dev/null",
    }  # fmt: skip
    keys = f"<tag-pattern>~A<enter><tag-prefix><copy-message>{saved}<enter><quit>"
    status, screen = run_in_pty(
        ["mutt", "-n", "-F", str(muttrc), "-f", f"imap://127.0.0.1:{port}/~marketing/announce",
         "-e", f'push "{keys}"'],
        env, timeout=60,
    )  # fmt: skip
    text = screen.decode("utf-8", "replace")
    assert saved.exists(), f"mutt saved nothing (exit {status}):\n{text[-3000:]}"
    mbox = saved.read_bytes()
    assert b"Subject: Quarterly all-hands on Friday" in mbox
    assert b"Subject: New logo" in mbox
    assert mbox.count(b"\nFrom ") + mbox.startswith(b"From ") == 2
    assert "Quarterly all-hands" in text  # and it showed them in its index

    # without the grant, the same command finds nothing to open
    muttrc.write_text(muttrc.read_text().replace(f"john@{DOMAIN}", f"mallory@{DOMAIN}"))
    other = tmp_path / "other.mbox"
    keys = f"<tag-pattern>~A<enter><tag-prefix><copy-message>{other}<enter><quit>"
    status, screen = run_in_pty(
        ["mutt", "-n", "-F", str(muttrc), "-f", f"imap://127.0.0.1:{port}/~marketing/announce",
         "-e", f'push "{keys}"'],
        env, timeout=60,
    )  # fmt: skip
    assert not other.exists()
