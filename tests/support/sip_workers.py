"""Several ``waypost serve --worker I/N`` processes on one data directory and
one port offset (issue 15 point 3), as the SIP worker tests and
``bench/sip.py --workers`` start them: the one place to change when the
supervisor (``serve --workers N``) takes over."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.dovecot import descendants
from tests.support.server import WaypostServer


class WorkerGroup:
    """``workers`` processes sharing ``data`` and the ports; ``first`` is the
    one to administer through (its CLI works on the shared data directory)."""

    def __init__(self, data: Path, workers: int = 2, *, domain: str = "main.dom",
                 log_level: str = "INFO") -> None:
        self.servers: list[WaypostServer] = []
        for index in range(workers):
            server = WaypostServer(data, domain=domain, log_level=log_level,
                                   serve_args=("--worker", f"{index}/{workers}"))
            if self.servers:
                server.offset = self.servers[0].offset
                server.log = data.parent / f"{data.name}-worker{index}.log"
            self.servers.append(server)

    @property
    def first(self) -> WaypostServer:
        return self.servers[0]

    @property
    def data(self) -> Path:
        return self.first.data

    def port(self, setting: str) -> int:
        return self.first.port(setting)

    def cli(self, *args: str, input: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        return self.first.cli(*args, input=input, check=check)

    def init(self) -> WorkerGroup:
        self.first.init()
        return self

    def start(self) -> WorkerGroup:
        started: list[WaypostServer] = []
        try:
            for server in self.servers:
                started.append(server.start())
        except BaseException:
            for server in started:
                server.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def pids(self) -> list[int]:
        """Every process of the group (for weighing it)."""
        found: list[int] = []
        for server in self.servers:
            if server.proc is not None:
                found += [server.proc.pid, *descendants(server.proc.pid)]
        return found

    def logs(self) -> str:
        return "".join(server.logs() for server in self.servers)
