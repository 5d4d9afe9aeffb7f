"""A private Postfix on a loopback address: the real "other" mail server.

Tests that relay mail need a receiver that behaves like the servers our
users actually run (the "old server" of a migration, a customer's relay, a
backup MX). :class:`PostfixInstance` runs Debian's ``postfix`` with its own
configuration, queue and data directories inside one temporary directory,
listening on ``IP:PORT`` (by default port 25 of 127.0.0.2, so that MX
records can point at it), and delivers every accepted message to a Maildir
per domain through Postfix's ``virtual`` agent. :meth:`messages` returns
what was stored, as ``(envelope recipient, bytes)``; the recipient comes
from the ``Delivered-To:`` field that ``virtual`` writes.

The packaged instance (``/etc/postfix``) is never started or touched. The
instance is stopped with ``postfix -c DIR stop`` and, failing that, by
killing the master process it started (by its pid file). Every wait is
bounded.

    with PostfixInstance("127.0.0.2", domains=["domain.dom"]) as old:
        ...send to 127.0.0.2:25...
        rcpt, data = old.wait_for_messages(1)[0]

Binding port 25 needs root; without root or without Postfix, tests skip
(:func:`require_postfix`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
MAIL_UID = "nobody"  # virtual delivery refuses root; any unprivileged user will do

MASTER_CF = """\
{listen} inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix_missing_reason() -> str | None:
    """Why a private Postfix cannot run here, or None."""
    if not Path(POSTFIX).exists():
        return "needs Postfix (Debian package postfix)"
    if os.geteuid() != 0:
        return "a private Postfix on port 25 needs root"
    return None


def require_postfix() -> None:
    """Skip the calling test when Postfix cannot run (names the package)."""
    import pytest

    reason = postfix_missing_reason()
    if reason:
        pytest.skip(reason)


class PostfixInstance:
    """One private Postfix. ``domains`` are the mail domains it accepts
    (every local part; one Maildir per domain under ``mail/``)."""

    __test__ = False

    def __init__(
        self,
        ip: str = "127.0.0.2",
        port: int = 25,
        *,
        domains: Iterable[str] = ("example.test",),
        hostname: str | None = None,
        extra: dict[str, str] | None = None,
        keep: bool = False,
    ) -> None:
        if not ip.startswith("127."):
            raise ValueError("tests use loopback addresses only")
        self.ip, self.port = ip, port
        self.domains = [d.lower() for d in domains]
        self.hostname = hostname or f"postfix-{ip.replace('.', '-')}.test"
        self.extra = dict(extra or {})
        self.keep = keep
        # named now, made by start(): an instance never started leaves nothing
        self.root = Path(tempfile.gettempdir()) / f"waypost-postfix-{secrets.token_hex(6)}"
        self.config = self.root / "etc"
        self.queue = self.root / "queue"
        self.data = self.root / "data"
        self.mail = self.root / "mail"
        self.maillog = self.root / "maillog"
        self.running = False

    # -- configuration -----------------------------------------------------

    def _write_config(self) -> None:
        user = pwd.getpwnam(MAIL_UID)
        # Postfix daemons (user postfix) and virtual (user nobody) must reach
        # their directories: the root stays root-owned but traversable.
        self.root.mkdir(mode=0o755)
        self.root.chmod(0o755)  # whatever the umask
        for d in (self.config, self.queue, self.data, self.mail):
            d.mkdir(exist_ok=True)
            d.chmod(0o755)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.data, postfix_user.pw_uid, postfix_user.pw_gid)
        os.chown(self.mail, user.pw_uid, user.pw_gid)
        maps = self.config / "virtual_mailboxes"
        # one Maildir per domain, every local part (virtual refuses regexp
        # substitution, so no Maildir per recipient: Delivered-To tells them apart)
        maps.write_text("".join(f"@{d} {d}/\n" for d in self.domains))
        params = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "command_directory": "/usr/sbin",
            "daemon_directory": "/usr/lib/postfix/sbin",
            "shlib_directory": "/usr/lib/postfix",
            "meta_directory": "/etc/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.hostname,
            "mydomain": self.hostname,
            "myorigin": "$myhostname",
            "mydestination": "",
            "relay_domains": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            # 127.0.0.2 answers on lo without being an interface address,
            # which inet_interfaces insists on; the smtpd line of master.cf
            # names IP:PORT itself, so nothing listens anywhere else.
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_peername_lookup": "no",
            "smtpd_banner": "$myhostname ESMTP Postfix",
            "virtual_mailbox_domains": ", ".join(self.domains),
            "virtual_mailbox_base": str(self.mail),
            "virtual_mailbox_maps": f"texthash:{maps}",
            "virtual_uid_maps": f"static:{user.pw_uid}",
            "virtual_gid_maps": f"static:{user.pw_gid}",
            "virtual_minimum_uid": "1",
            "virtual_mailbox_limit": "0",
            # relayed mail must arrive as sent: no header rewriting or added
            # Message-ID/Date for clients on our own addresses
            "local_header_rewrite_clients": "",
            "always_add_missing_headers": "no",
            # a test Postfix never sends anywhere (its bounces included)
            "default_transport": "error:outbound mail is disabled in this test instance",
            "relay_transport": "error:outbound mail is disabled in this test instance",
            "disable_dns_lookups": "yes",
            "smtp_host_lookup": "native",
            "append_dot_mydomain": "no",
            "biff": "no",
            "readme_directory": "no",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "syslog_name": f"postfix-{self.ip}",
            "message_size_limit": str(50 * 1024 * 1024),
        }
        params.update(self.extra)
        main = "".join(f"{k} = {v}\n" for k, v in params.items())
        (self.config / "main.cf").write_text(main)
        listen = f"{self.ip}:{self.port}"
        (self.config / "master.cf").write_text(MASTER_CF.format(listen=listen))

    def _postfix(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _diagnose(self, step: str) -> str:
        """Postfix's commands print errors only to a terminal (else syslog):
        run the failed step again under ``script`` to see why."""
        text = self.log()
        script = shutil.which("script")
        if script:
            cmd = f"{POSTFIX} -c {self.config} {step}"
            again = subprocess.run(
                [script, "-qec", cmd, "/dev/null"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            text += again.stdout + again.stderr
        return text

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout: float = 30) -> PostfixInstance:
        reason = postfix_missing_reason()
        if reason:
            raise RuntimeError(reason)
        if not _bindable(self.ip, self.port):
            raise RuntimeError(f"{self.ip}:{self.port} is already in use")
        self._write_config()
        for step in ("set-permissions", "check", "start"):
            done = self._postfix(step)
            if done.returncode != 0:
                raise RuntimeError(f"postfix {step} failed:\n{self._diagnose(step)}")
        self.running = True
        try:
            self._wait_listening(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                sock.settimeout(1)
                if sock.connect_ex((self.ip, self.port)) == 0:
                    banner = sock.recv(512)
                    if banner.startswith(b"220"):
                        return
            time.sleep(0.05)
        raise RuntimeError(f"Postfix never answered on {self.ip}:{self.port}\n{self.log()}")

    def master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, timeout: float = 20) -> None:
        if self.running:
            pid = self.master_pid()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._postfix("stop", timeout=timeout)
            if pid is not None:
                _wait_gone(pid, timeout)
            self.running = False
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what arrived ---------------------------------------------------------

    def messages(self) -> list[tuple[str, bytes]]:
        """Every stored message, oldest first, as (envelope recipient, bytes).

        Maildir files are written to ``tmp/`` and renamed into ``new/``, so
        a file seen in ``new/`` or ``cur/`` is complete.
        """
        found: list[tuple[float, str, Path]] = []
        if not self.mail.exists():
            return []
        for sub in ("new", "cur"):
            for path in self.mail.glob(f"*/{sub}/*"):
                with contextlib.suppress(FileNotFoundError):
                    found.append((path.stat().st_mtime, path.name, path))
        out = []
        for _mtime, _name, path in sorted(found):
            data = path.read_bytes()
            out.append((_delivered_to(data) or "", data))
        return out

    def count(self) -> int:
        """How many messages are stored (cheap: counts files only)."""
        if not self.mail.exists():
            return 0
        return sum(1 for sub in ("new", "cur") for _ in self.mail.glob(f"*/{sub}/*"))

    def wait_for_messages(self, count: int, timeout: float = 30) -> list[tuple[str, bytes]]:
        """Poll until at least ``count`` messages are stored (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.messages()
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(
            f"Postfix on {self.ip} stored {len(self.messages())} of {count} messages\n"
            + self.log()[-4000:]
        )

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""


def _delivered_to(data: bytes) -> str | None:
    """The first ``Delivered-To:`` of the header (virtual puts it on top)."""
    head = data.split(b"\n\n", 1)[0]
    for line in head.split(b"\n"):
        if line.lower().startswith(b"delivered-to:"):
            return line.split(b":", 1)[1].strip().decode("utf-8", "replace")
    return None


def _bindable(ip: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


def _wait_gone(pid: int, timeout: float) -> None:
    """Wait for our master process to exit; kill it (by pid) if it does not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
