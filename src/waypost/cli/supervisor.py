"""``waypost serve --workers N``: one supervisor over N worker processes.

Each worker is ``python -m waypost --data D serve --worker I/N`` (``server.py``
runs one process); with ``workers > 1`` every listener binds with
SO_REUSEPORT (``protocols/listen.py``), so the kernel spreads new connections
over the N processes and they share one store. The supervisor serves no
protocol itself. It:

* runs :func:`waypost.server.prepare` first (store migrations, the self-signed
  TLS pair), so N processes do not race to do it;
* starts the workers, each with a pipe whose write end it inherits (its fd
  number in ``WAYPOST_READY_FD``): a worker writes ONE JSON line there once its
  listeners are bound -- ``{"pid", "main_domain", "listeners": [[name, host,
  port], ...]}`` -- or ``{"error": text}`` if it could not start, and closes it.
  Nothing is read from logs;
* prints one banner (today's, plus a line naming the workers and their pids);
* forwards SIGTERM/SIGINT (graceful stop of every worker, then SIGKILL after
  :data:`STOP_TIMEOUT`) and SIGHUP (each worker reloads its TLS pair);
* restarts a worker that dies unexpectedly, logging its exit status or
  signal, with a backoff (:func:`restart_delay`) against crash loops. A dying
  worker costs the connections it held and those waiting in its accept
  backlog (the kernel resets them; clients retry); the others go on.
* If a worker fails while the server starts (a port in use), it stops the
  others and exits non-zero with that worker's error.

No orphans: a worker asks the kernel for SIGTERM when its parent dies
(``prctl(PR_SET_PDEATHSIG)`` on Linux; elsewhere a thread polls
``getppid``), so a ``kill -9`` of the supervisor stops the workers too
(:func:`watch_supervisor`, called by the worker).

Invariants: the supervisor is single-threaded (PR_SET_PDEATHSIG fires when
the *thread* that forked the child ends) and never opens the store after
:func:`waypost.server.prepare`; a worker slot holds at most one live process.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waypost.cli.output import fail

log = logging.getLogger("waypost.supervisor")

READY_FD_ENV = "WAYPOST_READY_FD"
"""The worker's end of its readiness pipe (a file descriptor number)."""
SUPERVISOR_ENV = "WAYPOST_SUPERVISOR"
"""The supervisor's pid: the worker stops when its parent is no longer that."""
START_TIMEOUT = 120.0
"""Seconds the supervisor waits for every worker to report its listeners."""
STOP_TIMEOUT = 20.0
"""Seconds a graceful stop may take before the remaining workers get SIGKILL."""
STABLE_AFTER = 30.0
"""A worker that lived this long and then died is restarted at once."""
MAX_BACKOFF = 30.0
TICK = 0.2
PR_SET_PDEATHSIG = 1


def restart_delay(failures: int) -> float:
    """Seconds before the restart after ``failures`` quick deaths in a row:
    0 for the first, then 1, 2, 4 ... up to :data:`MAX_BACKOFF`."""
    return 0.0 if failures <= 1 else min(MAX_BACKOFF, 2.0 ** (failures - 2))


def describe_exit(code: int) -> str:
    """``Popen.returncode`` in words: a status, or the signal that ended it."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"killed by signal {name}"
    return f"exit status {code}"


# -- the worker's side -----------------------------------------------------------


def supervised() -> bool:
    """Is this process a worker started by a supervisor?"""
    return READY_FD_ENV in os.environ


def watch_supervisor() -> None:
    """Stop (SIGTERM to itself) when the supervisor is gone: by the kernel's
    parent-death signal on Linux, else by a thread polling ``getppid``."""
    try:
        parent = int(os.environ.get(SUPERVISOR_ENV, ""))
    except ValueError:
        return
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # gone before the signal was armed
        log.error("supervisor %d is gone; not starting", parent)
        sys.exit(1)
    if not armed:
        def poll() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=poll, name="waypost-supervisor-watch", daemon=True).start()


def _report(message: dict[str, Any]) -> None:
    text = os.environ.pop(READY_FD_ENV, "")
    if not text:
        return
    try:
        fd = int(text)
        with os.fdopen(fd, "w", encoding="utf-8") as pipe:
            pipe.write(json.dumps(message) + "\n")
    except (ValueError, OSError) as exc:  # the supervisor is gone: watch_supervisor acts
        log.warning("could not report to the supervisor: %s", exc)


def report_ready(main_domain: str, listeners: Sequence[tuple[str, str, int]]) -> None:
    """Tell the supervisor that every listener is bound (once)."""
    _report({"pid": os.getpid(), "main_domain": main_domain,
             "listeners": [list(item) for item in listeners]})


def report_failure(error: str) -> None:
    """Tell the supervisor why this worker could not start (no-op once ready)."""
    _report({"pid": os.getpid(), "error": error})


# -- the supervisor ------------------------------------------------------------------


class StoppedWhileStarting(Exception):
    """SIGTERM/SIGINT came before every worker was ready: a stop, not a failure."""


@dataclass
class Worker:
    """One slot: its index, its current process and readiness pipe."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    pipe: int | None = None
    buffer: bytes = b""
    report: dict[str, Any] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    history: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0


class Supervisor:
    def __init__(self, data_dir: Path, workers: int, serve_args: Sequence[str]) -> None:
        self.data_dir = data_dir
        self.count = workers
        self.serve_args = list(serve_args)
        self.workers = [Worker(i) for i in range(workers)]
        self.stopping = False
        self.hangup = False

    # -- processes

    def spawn(self, worker: Worker) -> None:
        read, write = os.pipe()
        os.set_blocking(read, False)
        env = dict(os.environ, **{READY_FD_ENV: str(write), SUPERVISOR_ENV: str(os.getpid())})
        command = [sys.executable, "-m", "waypost", "--data", str(self.data_dir), "serve",
                   "--worker", f"{worker.index}/{self.count}", *self.serve_args]
        try:
            worker.proc = subprocess.Popen(command, pass_fds=(write,), env=env,
                                           stdin=subprocess.DEVNULL)
        finally:
            os.close(write)
        worker.pipe, worker.buffer, worker.report = read, b"", None
        worker.started = time.monotonic()
        worker.restart_at = None

    def _read(self, worker: Worker) -> None:
        """Take what the worker wrote; at EOF, its report (or an error)."""
        if worker.pipe is None:
            return
        while True:
            try:
                chunk = os.read(worker.pipe, 65536)
            except BlockingIOError:
                return
            if not chunk:
                break
            worker.buffer += chunk
        os.close(worker.pipe)
        worker.pipe = None
        try:
            worker.report = json.loads(worker.buffer.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            worker.report = {"error": "exited before it was ready"}
        if worker.history and "error" not in worker.report:
            log.info("worker %d (pid %d) is serving", worker.index, worker.pid)

    def _close_pipe(self, worker: Worker) -> None:
        if worker.pipe is not None:
            os.close(worker.pipe)
            worker.pipe = None

    def _wait_pipes(self, timeout: float) -> None:
        pipes = {w.pipe: w for w in self.workers if w.pipe is not None}
        if not pipes:
            time.sleep(timeout)
            return
        readable, _, _ = select.select(list(pipes), [], [], timeout)
        for fd in readable:
            self._read(pipes[fd])

    def signal_all(self, sig: signal.Signals) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(sig)

    def stop_all(self) -> None:
        """SIGTERM every worker, wait up to STOP_TIMEOUT, then SIGKILL the rest."""
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in self.workers:
            if worker.proc is None:
                continue
            try:
                worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d (pid %d) did not stop in %.0f s: killed",
                            worker.index, worker.pid, STOP_TIMEOUT)
                worker.proc.kill()
                worker.proc.wait()
            self._close_pipe(worker)

    # -- signals

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _on_hangup(self, signum: int, frame: object) -> None:
        self.hangup = True

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hangup)

    # -- start and run

    def start(self) -> dict[str, Any]:
        """Start every worker and wait for all to be ready: worker 0's report.
        Raises RuntimeError with the first failing worker's error (after
        stopping the others)."""
        for worker in self.workers:
            self.spawn(worker)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            failed = next((w for w in self.workers if w.report and "error" in w.report), None)
            if failed is None:
                failed = next((w for w in self.workers if w.proc is not None and w.pipe is None
                               and w.report is None), None)
            if failed is not None:
                error = (failed.report or {}).get("error", "exited before it was ready")
                self.stop_all()
                raise RuntimeError(f"worker {failed.index} could not start: {error}")
            if all(w.report is not None for w in self.workers):
                return self.workers[0].report or {}
            if self.stopping:
                self.stop_all()
                raise StoppedWhileStarting
            if time.monotonic() > deadline:
                self.stop_all()
                raise RuntimeError(f"the workers were not ready within {START_TIMEOUT:.0f} s")
            self._wait_pipes(TICK)

    def run(self) -> None:
        """Until SIGTERM/SIGINT: forward SIGHUP, restart workers that die."""
        while not self.stopping:
            if self.hangup:
                self.hangup = False
                log.info("SIGHUP: each worker reloads its TLS certificate")
                self.signal_all(signal.SIGHUP)
            now = time.monotonic()
            for worker in self.workers:
                self._watch(worker, now)
            self._wait_pipes(TICK)
        log.info("stopping %d workers", self.count)
        self.stop_all()

    def _watch(self, worker: Worker, now: float) -> None:
        if self.stopping:  # a worker that got the terminal's SIGINT itself is no crash
            return
        if worker.restart_at is not None:
            if now >= worker.restart_at:
                old = worker.history[-1] if worker.history else 0
                self.spawn(worker)
                log.info("worker %d restarted: pid %d (was %d)", worker.index, worker.pid, old)
            return
        if worker.proc is None or (code := worker.proc.poll()) is None:
            return
        self._read(worker)
        self._close_pipe(worker)
        error = (worker.report or {}).get("error")
        lived = now - worker.started
        worker.failures = 1 if lived >= STABLE_AFTER else worker.failures + 1
        delay = restart_delay(worker.failures)
        worker.history.append(worker.pid)
        log.error("worker %d (pid %d) died after %.1f s: %s%s; restarting in %.0f s",
                  worker.index, worker.pid, lived, describe_exit(code),
                  f" ({error})" if error else "", delay)
        worker.proc = None
        worker.restart_at = now + delay


def banner_lines(data_dir: Path, main_domain: str, listeners: Sequence[Sequence[Any]],
                 workers: Sequence[tuple[int, int]] = ()) -> list[str]:
    """What ``waypost serve`` prints when it is up: the listeners, then (with
    several processes) the workers and their pids; "Press Ctrl-C" comes last."""
    lines = [f"Waypost serving data in {data_dir} (Main Domain {main_domain})"]
    lines += [f"  {name:<12} {host}:{port}" for name, host, port in listeners]
    if not listeners:
        lines.append("  (no protocol listeners configured)")
    if workers:
        pids = ", ".join(f"w{index} pid {pid}" for index, pid in workers)
        lines.append(f"  {'workers':<12} {len(workers)}: {pids}")
    return lines


def supervise(data_dir: Path, workers: int, serve_args: Sequence[str], *,
              prepare: Callable[[Path], None], echo: Callable[[str], None],
              extra: Sequence[str] = ()) -> None:
    """Run ``workers`` worker processes until SIGTERM/SIGINT (a CLIError if
    one of them cannot start).
    ``prepare`` readies the store once; ``echo`` prints the banner, with the
    caller's ``extra`` lines (warnings) before "Press Ctrl-C to stop."."""
    supervisor = Supervisor(data_dir, workers, serve_args)
    supervisor.install_signals()
    prepare(data_dir)
    try:
        report = supervisor.start()
    except StoppedWhileStarting:
        log.info("stopped while starting")
        return
    except RuntimeError as exc:
        log.error("%s", exc)
        fail(str(exc))
    for line in banner_lines(data_dir, report.get("main_domain", ""),
                             report.get("listeners", []),
                             [(w.index, w.pid) for w in supervisor.workers]):
        echo(line)
    for line in extra:
        echo(line)
    echo("Press Ctrl-C to stop.")
    log.info("supervising %d workers: %s", workers,
             ", ".join(f"w{w.index} pid {w.pid}" for w in supervisor.workers))
    supervisor.run()
    log.info("stopped")
