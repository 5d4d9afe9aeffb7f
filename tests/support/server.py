"""A real Waypost server process on loopback, for end-to-end tests.

The server runs as ``python -m waypost serve`` in its own data directory,
with every listener shifted by a port offset chosen so that all of its
ports are free. Administration goes through the real ``waypost`` command.
``workers`` is passed as ``serve --workers N`` (default 1: one process, no
supervisor); with more, :attr:`WaypostServer.worker_pids` are the workers'
pids from the banner and :meth:`WaypostServer.children` the live ones.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from waypost import settings as settings_mod

PORT_SETTINGS = [
    s.name
    for s in settings_mod.SETTINGS
    if s.name.endswith("Port") and s.name != "DefaultRemoteSMTPPort"
]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Can both a TCP and a UDP socket bind ``host:port`` (SIP needs both)?"""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


EPHEMERAL_FIRST = 32768
"""Linux's default first ephemeral port (``net.ipv4.ip_local_port_range``):
every shifted port stays below it, so no client socket of another test
(or of a peer) can take a listener's port between the check and the bind."""


def free_offset() -> int:
    defaults = [int(settings_mod.lookup(name).default) for name in PORT_SETTINGS]
    for _ in range(200):
        offset = random.randrange(1024, EPHEMERAL_FIRST - max(defaults))
        if all(port_is_free(port + offset) for port in defaults):
            return offset
    raise RuntimeError("no free port offset found")


class WaypostServer:
    def __init__(self, data: Path, domain: str = "main.dom", log_level: str = "DEBUG",
                 serve_args: tuple[str, ...] = (), workers: int = 1) -> None:
        self.data = data
        self.workers = workers
        self.log_level = log_level
        self.serve_args = serve_args
        """More ``waypost serve`` options, e.g. ``("--log-format", "json")``."""
        self.domain = domain
        self.offset = free_offset()
        self.proc: subprocess.Popen[str] | None = None
        self.log = data.parent / f"{data.name}-server.log"
        self.postmaster_password = ""
        self.banner = ""
        """What ``waypost serve`` printed up to "Press Ctrl-C" (the listeners)."""
        self.worker_pids: list[int] = []
        """The workers' pids as the banner named them (``workers > 1``), in index order."""

    # -- administration --------------------------------------------------

    def cli(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.pop("WAYPOST_DATA", None)
        proc = subprocess.run(
            [sys.executable, "-m", "waypost", "--data", str(self.data), *args],
            capture_output=True,
            text=True,
            input=input,
            env=env,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"waypost {' '.join(args)} failed: {proc.stdout}{proc.stderr}")
        return proc

    def init(self) -> WaypostServer:
        out = self.cli("init", "--domain", self.domain).stdout
        for line in out.splitlines():
            if line.startswith("password"):
                self.postmaster_password = line.split()[-1]
        return self

    def port(self, setting: str) -> int:
        return int(settings_mod.lookup(setting).default) + self.offset

    @property
    def smtp(self) -> int:
        return self.port("SMTPPort")

    @property
    def submission(self) -> int:
        return self.port("SubmissionPort")

    @property
    def smtps(self) -> int:
        return self.port("SMTPSPort")

    @property
    def web(self) -> int:
        """WebUser over HTTP (8100 + offset)."""
        return self.port("WebUserPort")

    @property
    def webs(self) -> int:
        """WebUser over HTTPS (9100 + offset), the server certificate."""
        return self.port("WebUserSPort")

    def url(self, path: str = "/", *, secure: bool = False) -> str:
        """A WebUser URL on loopback (the Host header then is the IP: the Main Domain)."""
        port = self.webs if secure else self.web
        return f"{'https' if secure else 'http'}://127.0.0.1:{port}{path}"

    # -- process ---------------------------------------------------------

    def start(self, timeout: float = 30) -> WaypostServer:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("WAYPOST_DATA", None)
        log = open(self.log, "a")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "waypost",
                "--data",
                str(self.data),
                "serve",
                "--listen",
                "127.0.0.1",
                "--port-offset",
                str(self.offset),
                "--log-level",
                self.log_level,
                "--workers",
                str(self.workers),
                *self.serve_args,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
        log.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "Ctrl-C" in line:
                self.banner = "".join(seen)
                match = re.search(r"^  workers +\d+: (.*)$", self.banner, re.MULTILINE)
                self.worker_pids = ([int(pid) for pid in re.findall(r"pid (\d+)", match[1])]
                                    if match else [])
                self._wait_port(self.smtp, deadline)
                return self
        self.kill()
        raise RuntimeError("server did not start:\n" + "".join(seen) + self.log.read_text())

    @property
    def pid(self) -> int:
        """The ``waypost serve`` process (the supervisor when ``workers > 1``)."""
        assert self.proc is not None
        return self.proc.pid

    def children(self) -> list[int]:
        """The live child processes of ``waypost serve`` (its workers), from /proc."""
        if self.proc is None:
            return []
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return sorted(int(pid) for pid in text.split())

    def _wait_port(self, port: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"port {port} never opened")

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        self._close()
        return code

    def kill(self) -> None:
        """``kill -9``: no chance to flush or clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_for(self, predicate, timeout: float = 20, interval: float = 0.1, what: str = ""):
        """Poll ``predicate`` until it returns a true value (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what or predicate}\n{self.logs()[-4000:]}")
