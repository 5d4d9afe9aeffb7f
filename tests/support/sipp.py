"""sipp (Debian package ``sip-tester``) as a test peer: one :class:`Sipp` is
one sipp process running one scenario on 127.0.0.1.

    with Sipp(tmp_path, "call_uas.xml") as uas:          # background (start())
        result = Sipp(tmp_path, "call_uac.xml", remote=uas.address,
                      calls=20, rate=50).run()           # foreground
    assert result.ok, result.report()

A scenario is a sipp built-in name (``uac``, ``uas``, ...: ``-sn``) or a
file of ``tests/sipp/`` (by name, or any path: ``-sf``). The files there:

* ``call_uac.xml`` / ``call_uas.xml``: INVITE/180/200/ACK/BYE, with the
  Record-Route set kept, so ACK and BYE follow a proxy's loose route;
* ``call_uac_auth.xml``: the same, expecting a 407 (or 401) first, answered
  with ``-au``/``-ap`` credentials;
* ``ring_cancel_uas.xml``: rings until CANCELled, answers 487;
  ``cancel_uac.xml``: cancels its own INVITE after the 180;
* ``register.xml``: REGISTER of ``[service]@[domain]`` with digest
  (``-au``/``-ap``); ``register_users.xml``: one REGISTER per user of an
  ``-inf`` file (:func:`write_users`);
* ``message_uac.xml`` / ``message_uas.xml``: MESSAGE (RFC 3428) and its 200;
* ``options_uac.xml``: OPTIONS to the server itself;
* ``indialog_uac.xml`` / ``indialog_uas.xml``: a call with INFO, UPDATE,
  REFER/202 and the callee's NOTIFY inside it, along the Route set;
* ``subscribe_uac.xml`` / ``subscribe_uas.xml``: SUBSCRIBE (presence),
  NOTIFY, unsubscribe (Expires: 0) and the last NOTIFY, in one dialog.

Requests go to ``sip:[service]@[domain]`` from ``sip:[caller]``; the
``-key`` values ``domain`` (default ``127.0.0.1``), ``caller`` (default
``sipp@127.0.0.1``) and ``expires`` (REGISTER, default 3600) can be given
in ``keys``. sipp always sends to ``remote``, whatever the Request-URI.

Digest: sipp answers 401/407 with ``[authentication]``, but (version 3.6,
Debian's) only the *first* challenge of a response and only MD5 (or
AKAv1-MD5): a server that offers SHA-256 first (RFC 8760 §2.4) makes every
such call fail, which :meth:`SippResult.why` names. sipp puts
``uri="sip:REMOTE_IP:PORT"`` in its answer unless ``auth_uri`` is given:
pass the Request-URI without ``sip:`` to a server that checks it.

Choices: the local port is free for both UDP and TCP (a UDP peer needs the
UDP port; sipp binds both for ``t1``); every file (statistics CSV, error
log, screen, message trace) goes to the directory given, named after the
instance; sipp's control port (``-cp``, 8888 by default, so two instances
collide) is a free UDP port too. Every run is bounded twice: sipp's own
``-timeout`` (with ``-timeout_error``, so running out fails) and a process
timeout a few seconds later that kills it. The counts come from the last
row of the ``-trace_stat`` CSV (cumulative columns) that sipp writes when it
ends; a process that dies without writing it reports no calls. A
background instance is stopped with SIGUSR1 (sipp's soft exit, like ``q``:
calls in progress may end), then SIGTERM (they are abandoned), then
SIGKILL by pid if it does not end.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.server import port_is_free

SCENARIOS = Path(__file__).resolve().parent.parent / "sipp"
PACKAGE = "sip-tester"
BUILTIN = ("uac", "uas", "regexp", "branchc", "branchs", "3pcc-A", "3pcc-B", "3pcc-C-A",
           "3pcc-C-B", "uac_pcap")
DEFAULT_KEYS = {"domain": "127.0.0.1", "caller": "sipp@127.0.0.1", "expires": "3600"}
_names = itertools.count(1)


def sipp_binary() -> str | None:
    return shutil.which("sipp")


def require_sipp() -> str:
    """The sipp binary, or skip the calling test naming the package."""
    binary = sipp_binary()
    if binary is None:
        import pytest

        pytest.skip(f"needs sipp (Debian package {PACKAGE})")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for UDP and TCP alike (the kernel picks a UDP one; the
    TCP side is checked, and another is tried when it is taken)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port_is_free(port, host):
            return port
    raise RuntimeError("no port free for both UDP and TCP")


def write_users(path: Path, users: Iterable[tuple[str, str]], order: str = "SEQUENTIAL") -> Path:
    """An ``-inf`` file of ``user;password;[authentication ...]`` lines:
    ``[field0]`` the user, ``[field1]`` the password, ``[field2]`` the
    credentials keyword (sipp expands keywords in an injected field, but not
    ``[fieldN]`` inside ``[authentication ...]``)."""
    lines = [order] + [f"{user};{password};[authentication username={user} password={password}]"
                       for user, password in users]
    path.write_text("\n".join(lines) + "\n")
    return path


MAX_SOCKETS = 4096
"""sipp's ``-max_socket`` with a socket per call (``un``/``tn``)."""


@dataclass
class SippResult:
    """What one sipp process did: its exit status (0: every call succeeded;
    1: at least one failed; 97/99: ended by a command or a signal without
    errors; anything else: sipp itself failed) and its cumulative counters."""

    returncode: int
    successful: int
    failed: int
    created: int
    retransmissions: int
    elapsed: float
    """Seconds sipp counted from its start to its last statistics dump."""
    stats: dict[str, str] = field(default_factory=dict)
    """The last row of the ``-trace_stat`` CSV, by column name."""
    output: str = ""
    errors: str = ""
    """sipp's error log (``-trace_err``): unexpected messages and why."""
    timed_out: bool = False
    """sipp did not end within its process bound and was killed."""

    @property
    def ok(self) -> bool:
        """Every call succeeded, at least one was made, sipp ended by itself."""
        return (self.returncode == 0 and self.failed == 0 and self.successful > 0
                and not self.timed_out)

    @property
    def calls_per_second(self) -> float:
        """Successful calls per second over sipp's elapsed time."""
        return self.successful / self.elapsed if self.elapsed > 0 else 0.0

    def why(self) -> str:
        """Why the calls failed, in a few words: the first unexpected status
        sipp met, a digest challenge it cannot answer, a timeout, or its
        exit status."""
        found = re.search(r"received 'SIP/2\.0 (\d{3}[^\r\n']*)", self.errors)
        if found:
            return f"unexpected {found.group(1).strip()}"
        if "must use MD5" in self.errors:
            # sipp 3.6 answers the first challenge only, and only MD5 (or AKA)
            return ("sipp answers only MD5 digest challenges, and the first one offered "
                    "was another algorithm (SHA-256?)")
        if self.timed_out or "timed out" in self.errors or "timeout" in self.errors.lower():
            return "timed out (no answer)"
        return f"sipp exit {self.returncode}"

    def report(self) -> str:
        """A few lines for an assertion message."""
        return (f"sipp exit {self.returncode}{' (killed: timeout)' if self.timed_out else ''}: "
                f"{self.why() if not self.ok else 'ok'}; {self.successful} successful, {self.failed} failed of {self.created} "
                f"in {self.elapsed:.2f}s\n{self.errors[-3000:]}\n{self.output[-2000:]}")


def _epoch(text: str) -> float:
    """The epoch seconds that end a sipp time column (``date\ttime\tepoch``)."""
    try:
        return float(text.split("\t")[-1])
    except ValueError:
        return 0.0


def _elapsed(stats: Mapping[str, str]) -> float:
    """Seconds from sipp's start to its last statistics dump (the CSV's
    ElapsedTime columns have whole seconds only)."""
    start, now = _epoch(stats.get("StartTime", "")), _epoch(stats.get("CurrentTime", ""))
    return max(0.0, now - start) if start and now else 0.0


def _count(stats: Mapping[str, str], name: str) -> int:
    try:
        return int(stats.get(f"{name}(C)", "0") or 0)
    except ValueError:
        return 0


def read_stats(path: Path) -> dict[str, str]:
    """The last row of a sipp statistics CSV (``;``-separated, a header row
    first), or ``{}`` when there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    rows = list(csv.reader(text.splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return dict(zip(header, last, strict=False))


class Sipp:
    """One sipp instance on ``127.0.0.1``.

    ``scenario``: built-in name or file (see the module docstring);
    ``remote``: ``"host:port"`` to send to (a UAC; a UAS needs none);
    ``port``: local port (a free one when None); ``transport``: ``u1`` (UDP,
    one socket) or ``t1`` (TCP, one connection); ``calls`` (``-m``): stop
    after that many calls; ``rate`` (``-r``, calls per second); ``limit``
    (``-l``, simultaneous calls); ``inf``: an ``-inf`` CSV file;
    ``service`` (``-s``): the user part of the Request-URI; ``auth_user``/
    ``auth_password`` (``-au``/``-ap``); ``auth_uri`` (``-auth_uri``): the
    digest ``uri`` without ``sip:`` -- sipp puts ``sip:REMOTE_IP:PORT``
    there otherwise, which a server that checks it against the
    Request-URI (RFC 7616 §3.4.6; Waypost does) refuses, so pass the
    Request-URI's ``user@domain`` (``domain`` for REGISTER); ``keys``: ``-key`` values
    (``[name]`` in a scenario); ``timeout``: sipp's global bound in
    seconds; ``extra``: more sipp arguments.
    """

    __test__ = False

    def __init__(
        self,
        tmp: Path,
        scenario: str = "uac",
        *,
        remote: str | None = None,
        port: int | None = None,
        transport: str = "u1",
        calls: int | None = None,
        rate: float | None = None,
        limit: int | None = None,
        inf: Path | None = None,
        service: str | None = None,
        auth_user: str | None = None,
        auth_password: str | None = None,
        auth_uri: str | None = None,
        keys: Mapping[str, str] | None = None,
        timeout: float = 30,
        extra: Sequence[str] = (),
        name: str | None = None,
    ) -> None:
        if transport not in ("u1", "t1", "un", "tn"):
            raise ValueError(f"unsupported sipp transport {transport!r}")
        self.tmp = Path(tmp)
        self.scenario = scenario
        self.remote = remote
        self.port = port or free_port()
        self.transport = transport
        self.calls = calls
        self.rate = rate
        self.limit = limit
        self.inf = inf
        self.service = service
        self.auth_user = auth_user
        self.auth_password = auth_password
        self.auth_uri = auth_uri
        self.keys = {**DEFAULT_KEYS, **(keys or {})}
        self.timeout = timeout
        self.extra = tuple(extra)
        stem = Path(scenario).stem if scenario not in BUILTIN else scenario
        self.name = name or f"sipp-{stem}-{self.port}-{next(_names)}"
        self.stat_file = self.tmp / f"{self.name}.csv"
        self.error_file = self.tmp / f"{self.name}.errors.log"
        self.screen_file = self.tmp / f"{self.name}.screen.log"
        self.output_file = self.tmp / f"{self.name}.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self.result: SippResult | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:port``, what a peer passes as ``remote``."""
        return f"127.0.0.1:{self.port}"

    def scenario_args(self) -> list[str]:
        if self.scenario in BUILTIN:
            return ["-sn", self.scenario]
        path = Path(self.scenario)
        if not path.is_absolute() and not path.exists():
            path = SCENARIOS / self.scenario
        if not path.exists():
            raise FileNotFoundError(f"no sipp scenario {self.scenario!r} (looked in {SCENARIOS})")
        return ["-sf", str(path)]

    def command(self) -> list[str]:
        """The whole sipp command line."""
        binary = sipp_binary() or "sipp"
        cmd = [binary]
        if self.remote:
            cmd.append(self.remote)
        cmd += self.scenario_args()
        cmd += ["-i", "127.0.0.1", "-p", str(self.port), "-t", self.transport,
                "-cp", str(free_port()), "-nostdin",
                "-timeout", f"{self.timeout:g}s", "-timeout_error",
                "-trace_stat", "-stf", str(self.stat_file), "-fd", "1",
                "-trace_err", "-error_file", str(self.error_file),
                "-trace_screen", "-screen_file", str(self.screen_file)]
        if self.transport in ("un", "tn"):
            # a socket per call: sipp refuses to start when its default ceiling
            # (50,000) is above the open files allowed
            cmd += ["-max_socket", str(MAX_SOCKETS)]
        if self.calls is not None:
            cmd += ["-m", str(self.calls)]
        if self.rate is not None:
            cmd += ["-r", f"{self.rate:g}"]
        if self.limit is not None:
            cmd += ["-l", str(self.limit)]
        if self.inf is not None:
            cmd += ["-inf", str(self.inf)]
        if self.service is not None:
            cmd += ["-s", self.service]
        if self.auth_user is not None:
            cmd += ["-au", self.auth_user]
        if self.auth_password is not None:
            cmd += ["-ap", self.auth_password]
        if self.auth_uri is not None:
            cmd += ["-auth_uri", self.auth_uri]
        for key, value in self.keys.items():
            cmd += ["-key", key, value]
        cmd += list(self.extra)
        return cmd

    # -- lifecycle ---------------------------------------------------------------

    def start(self, ready_timeout: float = 10) -> Sipp:
        """Run in the background (a UAS) and return once its port is bound."""
        require_sipp()
        self.tmp.mkdir(parents=True, exist_ok=True)
        with open(self.output_file, "wb") as out:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.tmp, start_new_session=True)
        self._started = time.monotonic()
        deadline = self._started + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sipp exited with {self.proc.returncode}:\n{self._output()}")
            if not self._port_free():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"sipp never bound {self.address}:\n{self._output()}")

    def _port_free(self) -> bool:
        kind = socket.SOCK_DGRAM if self.transport.startswith("u") else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", self.port))
            except OSError:
                return False
        return True

    def run(self, timeout: float | None = None) -> SippResult:
        """Run in the foreground to the end (``calls`` done, or sipp's
        ``-timeout``); killed ``timeout`` seconds (default: sipp's own
        bound + 15) after the start at the latest."""
        self.start()
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for a started instance to end by itself (bounded)."""
        assert self.proc is not None, "not started"
        bound = self.timeout + 15 if timeout is None else timeout
        remaining = max(0.1, self._started + bound - time.monotonic())
        timed_out = False
        try:
            self.proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            timed_out = True
            self._kill()
        return self._finish(timed_out)

    def stop(self, grace: float = 10) -> SippResult:
        """End a background instance: SIGUSR1 (sipp lets its calls end,
        their time-wait included, and writes its statistics), SIGTERM three
        seconds later (calls in progress are abandoned, the statistics still
        written), then SIGKILL after ``grace`` seconds."""
        if self.proc is None:
            return self.result or SippResult(0, 0, 0, 0, 0, 0.0)
        timed_out = False
        for sig, wait in ((signal.SIGUSR1, 3.0), (signal.SIGTERM, grace)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait)
        if self.proc.poll() is None:
            timed_out = True
            self._kill()
        return self._finish(timed_out)

    def _kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def _finish(self, timed_out: bool) -> SippResult:
        assert self.proc is not None
        code = self.proc.returncode
        self.proc = None
        stats = read_stats(self.stat_file)
        errors = ""
        with contextlib.suppress(OSError):
            errors = self.error_file.read_text(errors="replace")
        self.result = SippResult(
            returncode=code,
            successful=_count(stats, "SuccessfulCall"),
            failed=_count(stats, "FailedCall"),
            created=_count(stats, "OutgoingCall") + _count(stats, "IncomingCall"),
            retransmissions=_count(stats, "Retransmissions"),
            elapsed=_elapsed(stats),
            stats=stats,
            output=self._output(),
            errors=errors,
            timed_out=timed_out,
        )
        return self.result

    def _output(self) -> str:
        with contextlib.suppress(OSError):
            return self.output_file.read_text(errors="replace")
        return ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def __enter__(self) -> Sipp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
