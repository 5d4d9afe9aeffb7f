"""A private PostgreSQL cluster on loopback for the store tests.

:class:`PostgresCluster` runs ``initdb`` in a fresh temporary directory,
starts ``postgres`` with ``pg_ctl`` on a free loopback port (TCP only, no
UNIX socket, ``trust`` authentication for the loopback address: a test
cluster holds nothing secret) and stops it at the end (immediate shutdown:
the data is thrown away; then SIGKILL of the postmaster by pid). PostgreSQL
refuses to run as root, so under root (CI) every command runs as the
``postgres`` system user through ``runuser``, in a directory owned by it.

:meth:`PostgresCluster.fresh_database` makes an empty database per test
(``CREATE DATABASE ... TEMPLATE template0`` takes a few tens of
milliseconds) and returns its ``postgresql://`` URL; the ``pg_url`` fixture
drops it after the test. The cluster lives on ``/dev/shm`` when there is
one (fsync off as well: nothing here must survive a crash).

Every wait is bounded (``pg_ctl -w -t``, subprocess timeouts).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

START_TIMEOUT = 60  # seconds; two cores shared by several test runs
SERVICE_USER = "postgres"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_tool(name: str) -> str | None:
    """``initdb``/``pg_ctl``/``postgres``: on PATH, else Debian's versioned
    directory (the package puts only wrappers in /usr/bin), newest first."""
    found = shutil.which(name)
    if found is not None:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/" + name),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                      else 0, reverse=True)
    return str(versions[0]) if versions else None


def postgres_available() -> str | None:
    """Why the cluster cannot run here, or None when it can."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if server_tool(tool) is None:
            return f"{tool} not found (Debian package postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            return f"running as root and there is no {SERVICE_USER!r} user to run PostgreSQL"
    return None


class PostgresCluster:
    """One private cluster; ``with PostgresCluster() as pg: pg.fresh_database()``."""

    def __init__(self) -> None:
        self.port = free_port()
        # RAM when there is a tmpfs: a database is ~8 MB of files to create
        # and remove per test, and the data is thrown away anyway
        shm = Path("/dev/shm")
        where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.root = Path(tempfile.mkdtemp(prefix="waypost-pg-", dir=where))
        self.datadir = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            user = pwd.getpwnam(SERVICE_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._started = False

    def _run(self, tool: str, *argv: str, timeout: float = START_TIMEOUT) -> None:
        cmd = [server_tool(tool) or tool, *argv]
        if self._as_root:
            runuser = (shutil.which("runuser") or next(
                (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.path.exists(p)),
                "runuser"))
            cmd = [runuser, "-u", SERVICE_USER, "--", *cmd]
        done = subprocess.run(cmd, timeout=timeout, cwd=self.root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): "
                               f"{done.stderr.decode(errors='replace')[-2000:]}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port}"
                   " -c unix_socket_directories='' -c fsync=off"
                   " -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.log), "-w",
                  "-t", str(START_TIMEOUT), "-o", options, "start")
        self._started = True

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def fresh_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`fresh_database` (its sessions are
        ended: a test that left a store open does not keep it)."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self._started:
            try:
                self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w",
                          "-t", "30", "stop")
            except (subprocess.SubprocessError, OSError, RuntimeError):
                pid_file = self.datadir / "postmaster.pid"
                try:
                    pid = int(pid_file.read_text().split()[0])
                    os.kill(pid, signal.SIGKILL)
                except (OSError, ValueError, IndexError):
                    pass
            self._started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
