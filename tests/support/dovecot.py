"""A private Dovecot IMAP server on loopback: the reference IMAP server.

Benchmarks and interoperability tests compare Waypost with the IMAP server
most of our users run. :class:`DovecotInstance` runs Debian's ``dovecot``
(package ``dovecot-imapd``) in the foreground (``dovecot -F -c FILE``) as a
child process, with its own configuration, run and state directories, log
file, ``passwd-file`` users and Maildirs, all inside one directory, and
listening only on ``127.0.0.1:PORT`` (plain IMAP; no TLS, no POP3, no
LMTP). The packaged instance (``/etc/dovecot``, ``/run/dovecot``) is never
started or touched.

    with DovecotInstance(tmp, free_port()) as dovecot:
        dovecot.add_message(b"From: a@b.test\\r\\n\\r\\nhello\\r\\n", flags="S")
        imap = imaplib.IMAP4("127.0.0.1", dovecot.port)
        imap.login("bench", dovecot.password)

Dovecot drops privileges: its login processes run as ``dovenull``, its
auth process as ``dovecot`` and the IMAP processes as the mail user
(``mail``), so everything it reads must be reachable by them. When ``tmp``
is not (pytest's ``tmp_path`` lives under a 0700 directory) or its path is
too long for Dovecot's UNIX sockets, the instance works in a fresh
directory under the system temporary directory instead; :attr:`root` says
where. That directory (or ``tmp/dovecot-PORT``) is removed by :meth:`stop`.

Passwords are kept in the PLAIN scheme unless ``scheme`` names another
(``"ARGON2ID"``: hashed once per user by ``doveadm pw``, as Waypost hashes
its own); ``extra`` configuration (an auth cache, say) is appended.

Messages are placed straight into the Maildir (``cur/``, with Dovecot's
``,S=size,W=vsize`` name fields and ``:2,FLAGS``), owned by the mail user;
Dovecot indexes them when a client first opens the mailbox.

Every wait is bounded; :meth:`stop` ends the master with SIGTERM and, if
needed, SIGKILLs the master and any of its remaining processes by pid.
Without Dovecot or without root, tests skip (:func:`require_dovecot`) with
a reason naming the package.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import resource
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

DOVECOT = "/usr/sbin/dovecot"
IMAP_BINARY = "/usr/lib/dovecot/imap"
DOVEADM = "/usr/bin/doveadm"
PACKAGE = "dovecot-imapd"
MAIL_USER = "mail"  # owner of the Maildirs; IMAP processes run as this user
SYSTEM_USERS = ("dovecot", "dovenull")  # default_internal_user, default_login_user
MAX_SOCKET_DIR = 70  # UNIX socket paths are limited to 107 bytes

CONFIG = """\
# private Dovecot for Waypost tests and benchmarks (tests/support/dovecot.py)
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
instance_name = {instance}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
mail_uid = {mail_uid}
mail_gid = {mail_gid}
first_valid_uid = {mail_uid}
first_valid_gid = {mail_gid}
mail_location = maildir:{root}/mail/%u
default_client_limit = {client_limit}
mail_max_userip_connections = {connections}

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/users
}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = {processes}
}}
{extra}
"""


def dovecot_missing_reason() -> str | None:
    """Why a private Dovecot cannot run here, or None."""
    if not (Path(DOVECOT).exists() and Path(IMAP_BINARY).exists()):
        return f"needs Dovecot IMAP (Debian package {PACKAGE})"
    if os.geteuid() != 0:
        return f"a private Dovecot ({PACKAGE}) needs root: it switches to its own users"
    for user in (*SYSTEM_USERS, MAIL_USER):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"user {user!r} is missing (created by the Debian package {PACKAGE})"
    return None


def require_dovecot() -> None:
    """Skip the calling test when Dovecot cannot run (names the package)."""
    import pytest

    reason = dovecot_missing_reason()
    if reason:
        pytest.skip(reason)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _traversable(path: Path) -> bool:
    """Can every user reach ``path`` (each directory on the way has o+x)?"""
    path = path.resolve()
    for directory in (path, *path.parents):
        try:
            mode = directory.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


def _raise_fd_limit() -> None:
    """In the child: as many descriptors as allowed (1,000+ connections)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class DovecotInstance:
    """One private Dovecot serving plain IMAP on ``127.0.0.1:port``.

    ``users`` maps user names to passwords (in the passwd-file, hashed in
    ``scheme``, PLAIN by default);
    ``connections``: how many simultaneous IMAP sessions it must allow
    (per user and IP, and IMAP processes); ``extra``: more configuration
    text appended to the file.
    """

    __test__ = False

    def __init__(
        self,
        tmp: Path,
        port: int | None = None,
        *,
        users: dict[str, str] | None = None,
        connections: int = 100,
        extra: str = "",
        scheme: str = "PLAIN",
        keep: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.users = dict(users or {"bench": "bench-password"})
        self.connections = connections
        self.extra = extra
        self.scheme = scheme
        self.keep = keep
        tmp = Path(tmp)
        wanted = tmp / f"dovecot-{self.port}"
        if _traversable(tmp) and len(str(wanted.resolve())) <= MAX_SOCKET_DIR:
            self.root = wanted
        else:  # see the module docstring; made by prepare()
            self.root = Path(tempfile.gettempdir()) / f"wp-dovecot-{secrets.token_hex(6)}"
        self.config = self.root / "dovecot.conf"
        self.logfile = self.root / "dovecot.log"
        self.stderr = self.root / "stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)

    @property
    def password(self) -> str:
        """The password of the first user."""
        return next(iter(self.users.values()))

    @property
    def user(self) -> str:
        return next(iter(self.users))

    # -- mail ------------------------------------------------------------------

    def maildir(self, user: str | None = None) -> Path:
        """The Maildir of ``user`` (default: the first user)."""
        return self.root / "mail" / (user or self.user)

    def prepare(self) -> DovecotInstance:
        """Create the directories, users and configuration (start() calls this;
        call it first to fill the Maildirs before starting)."""
        mail = pwd.getpwnam(MAIL_USER)
        self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.root.chmod(0o755)  # whatever the umask: dovecot, dovenull, mail pass through
        (self.root / "mail").mkdir(exist_ok=True)
        os.chown(self.root / "mail", mail.pw_uid, mail.pw_gid)
        for user in self.users:
            box = self.maildir(user)
            for sub in ("", "cur", "new", "tmp"):
                (box / sub).mkdir(exist_ok=True)
                os.chown(box / sub, mail.pw_uid, mail.pw_gid)
        users = self.root / "users"
        users.write_text("".join(f"{u}:{self.hashed(p)}::::::\n" for u, p in self.users.items()))
        users.chmod(0o644)
        limit = max(1000, 2 * self.connections + 200)
        self.config.write_text(
            CONFIG.format(
                root=self.root,
                instance=f"waypost-dovecot-{self.port}",
                mail_uid=mail.pw_uid,
                mail_gid=mail.pw_gid,
                port=self.port,
                client_limit=limit,
                connections=self.connections + 10,
                processes=self.connections + 50,
                extra=self.extra,
            )
        )
        return self

    def hashed(self, password: str) -> str:
        """``{SCHEME}...`` as the passwd-file keeps it (``doveadm pw`` unless PLAIN)."""
        if self.scheme == "PLAIN":
            return f"{{PLAIN}}{password}"
        done = subprocess.run(
            [DOVEADM, "pw", "-s", self.scheme, "-p", password],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return done.stdout.strip()

    def set_keywords(self, keywords: list[str], user: str | None = None) -> str:
        """Name Maildir keyword letters (``a`` is ``keywords[0]``, ``b`` the next
        ...) in the Maildir's ``dovecot-keywords``; returns the letters in order."""
        box = self.maildir(user)
        if not (box / "cur").is_dir():
            self.prepare()
        (box / "dovecot-keywords").write_text(
            "".join(f"{i} {name}\n" for i, name in enumerate(keywords))
        )
        return "abcdefghijklmnopqrstuvwxyz"[: len(keywords)]

    def add_message(
        self,
        data: bytes,
        flags: str = "",
        *,
        user: str | None = None,
        when: float | None = None,
        chown: bool = True,
    ) -> Path:
        """Put one message into a Maildir's ``cur/`` as a delivery agent would:
        LF line ends on disk, ``S=`` (file size) and ``W=`` (size with CRLF,
        Dovecot's RFC822.SIZE) in the name, Maildir flag letters (``"S"``,
        ``"FS"``, keywords ``"a"``... see :meth:`set_keywords`) after ``:2,``.
        The file's time (``when``) is the INTERNALDATE; names sort in the
        order of the calls, and so do UIDs."""
        box = self.maildir(user)
        if not (box / "cur").is_dir():
            self.prepare()
        body = data.replace(b"\r\n", b"\n")
        vsize = len(body) + body.count(b"\n")
        when = time.time() if when is None else when
        seq = next(self._names)
        letters = "".join(sorted(set(flags)))
        name = f"{int(when)}.M{seq:06d}P{os.getpid()}.waypost,S={len(body)},W={vsize}:2,{letters}"
        path = box / "cur" / name
        path.write_bytes(body)
        os.utime(path, (when, when))
        if chown:
            mail = pwd.getpwnam(MAIL_USER)
            os.chown(path, mail.pw_uid, mail.pw_gid)
        return path

    def chown_mail(self) -> None:
        """Hand every Maildir file to the mail user (after add_message(chown=False))."""
        mail = pwd.getpwnam(MAIL_USER)
        for dirpath, dirnames, filenames in os.walk(self.root / "mail"):
            for name in (*dirnames, *filenames):
                os.chown(os.path.join(dirpath, name), mail.pw_uid, mail.pw_gid)

    # -- lifecycle ---------------------------------------------------------------

    def start(self, timeout: float = 30) -> DovecotInstance:
        reason = dovecot_missing_reason()
        if reason:
            raise RuntimeError(reason)
        if not _bindable(self.port):
            raise RuntimeError(f"127.0.0.1:{self.port} is already in use")
        if not self.config.exists():
            self.prepare()
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                preexec_fn=_raise_fd_limit,
                start_new_session=True,  # our Ctrl-C is not Dovecot's
            )
        try:
            self._wait_ready(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"dovecot exited with status {self.proc.returncode}:\n{self.log()}"
                )
            with socket.socket() as sock:
                sock.settimeout(2)
                try:
                    sock.connect(("127.0.0.1", self.port))
                    if sock.recv(512).startswith(b"* OK"):
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"Dovecot never answered on 127.0.0.1:{self.port}\n{self.log()}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def pids(self) -> list[int]:
        """The master and every process under it (login, auth, imap ...)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid, *descendants(self.proc.pid)]

    def stop(self, timeout: float = 20) -> None:
        if self.proc is not None:
            stop_tree(self.proc, self.pids()[1:], timeout)
            self.proc = None
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DovecotInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        parts = []
        for path in (self.stderr, self.logfile):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)


# -- processes -------------------------------------------------------------------


def _parent(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses
    return int(text.rsplit(")", 1)[1].split()[1])


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children ...)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = _parent(int(entry))
            if ppid is not None:
                parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def memory_kb(pids: list[int], field: str = "Rss") -> int:
    """Sum over ``pids`` of ``Rss`` or ``Pss`` (kB, /proc/PID/smaps_rollup);
    processes that ended meanwhile count 0."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1])
                break
    return total


def stop_tree(proc: subprocess.Popen[bytes], children: list[int], timeout: float) -> None:
    """SIGTERM to a daemon's master (SIGKILL after ``timeout``); the master
    ends its ``children``, and any straggler is ended by pid."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while children and time.monotonic() < deadline:
        children = [pid for pid in children if running(pid)]
        time.sleep(0.05)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def running(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as ended)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text.rsplit(")", 1)[1].split()[0] != "Z"


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
