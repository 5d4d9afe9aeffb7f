"""SMTP throughput: Waypost beside Postfix, same machine, same run (issue 3 point 9).

Not a test: run ``.venv/bin/python bench/smtp_throughput.py`` as root with
the Debian package ``postfix`` installed (its private instance listens on
port 25 of 127.0.0.2; the packaged instance is not used).

``smtp-source`` (from the postfix package) sends 5 KB messages to local
accounts with 1 and with 20 concurrent sessions, first to Waypost, then to
a Postfix that delivers to Maildirs through its ``virtual`` agent. Each
session is one ``smtp-source`` process that keeps its connection
(``-d``) and writes to its own account, as many users' mail would; every
message goes to one recipient.

* *accepted/s*: messages divided by the time until every ``smtp-source``
  finished, i.e. until the last ``250`` after DATA;
* *delivered/s*: messages divided by the time until all of them were in
  the mailboxes (Waypost: its Mailstore's message counts; Postfix: files
  in the Maildirs).

It prints a table and the ratio Waypost/Postfix of delivered/s at 20
sessions. Both servers run with their own defaults, except that Waypost
runs under the test harness (``tests/support/server.py``), which logs at
DEBUG level.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.support

from tests.support.postfix import PostfixInstance, postfix_missing_reason  # noqa: E402
from tests.support.server import WaypostServer  # noqa: E402

from waypost.cli.serve import default_workers  # noqa: E402
from waypost.services.container import Services, open_services  # noqa: E402
from waypost.services.mailstore import Mailstore  # noqa: E402
from waypost.storage.interface import INBOX, NotFound  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
SIZE = 5 * 1024
SESSIONS = (1, 20)
DOMAIN = "bench.dom"
POSTFIX_IP = "127.0.0.2"
STALL = 30.0  # seconds without a new delivery before a run is declared stuck


@dataclass
class Result:
    target: str
    sessions: int
    messages: int
    accepted: float  # seconds until every message was accepted
    delivered: float  # seconds until every message was in a mailbox

    @property
    def accepted_rate(self) -> float:
        return self.messages / self.accepted

    @property
    def delivered_rate(self) -> float:
        return self.messages / self.delivered


def account(i: int) -> str:
    return f"user{i:02d}@{DOMAIN}"


def blast(host: str, port: int, sessions: int, messages: int, timeout: float) -> None:
    """``sessions`` smtp-source processes, one connection and one account
    each, ``messages`` in all; returns when every one has finished."""
    per, extra = divmod(messages, sessions)
    procs = []
    for i in range(sessions):
        count = per + (1 if i < extra else 0)
        procs.append(
            subprocess.Popen(
                [SMTP_SOURCE, "-d", "-s", "1", "-m", str(count), "-l", str(SIZE),
                 "-M", "client.bench", "-f", "sender@client.bench", "-t", account(i + 1),
                 "-S", "benchmark", f"{host}:{port}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    failed = []
    for proc in procs:
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        if proc.returncode != 0:
            failed.append(out)
    if failed:
        raise RuntimeError("smtp-source failed:\n" + "\n".join(failed))


def measure(
    target: str,
    host: str,
    port: int,
    sessions: int,
    messages: int,
    count: Callable[[], int],
    timeout: float,
) -> Result:
    base = count()
    start = time.monotonic()
    blast(host, port, sessions, messages, timeout)
    accepted = time.monotonic() - start
    deadline = start + timeout
    seen, progress = count(), time.monotonic()
    while seen < base + messages:
        now = time.monotonic()
        if now > deadline or now - progress > STALL:
            raise RuntimeError(
                f"{target}: every message was accepted, but only {seen - base} of "
                f"{messages} reached a mailbox ({now - progress:.0f} s without progress)"
            )
        time.sleep(0.02)
        latest = count()
        if latest != seen:
            seen, progress = latest, time.monotonic()
    delivered = time.monotonic() - start
    return Result(target, sessions, messages, accepted, delivered)


class WaypostCounter:
    """Messages in the accounts' INBOXes, read through the Mailstore."""

    def __init__(self, data: Path, accounts: list[str]) -> None:
        self.services: Services = open_services(data)
        self.store = Mailstore(self.services.store)
        self.accounts = accounts

    def __call__(self) -> int:
        total = 0
        for address in self.accounts:
            try:
                total += self.store.mailbox(address, INBOX).messages
            except NotFound:
                pass
        return total

    def close(self) -> None:
        self.services.close()


def report(results: list[Result]) -> None:
    print()
    print(f"{'server':<8} {'sessions':>8} {'messages':>8} {'accepted/s':>11} {'delivered/s':>12}")
    for r in results:
        print(
            f"{r.target:<8} {r.sessions:>8} {r.messages:>8} "
            f"{r.accepted_rate:>11.1f} {r.delivered_rate:>12.1f}"
        )
    by = {(r.target, r.sessions): r for r in results}
    for sessions in SESSIONS:
        w, p = by.get(("waypost", sessions)), by.get(("postfix", sessions))
        if w and p:
            print(
                f"Waypost/Postfix at {sessions:>2} session(s): "
                f"accepted {w.accepted_rate / p.accepted_rate:.2f}, "
                f"delivered {w.delivered_rate / p.delivered_rate:.2f}"
            )
    w, p = by.get(("waypost", 20)), by.get(("postfix", 20))
    if w and p:
        print(f"ratio Waypost/Postfix, delivered/s at 20 sessions: "
              f"{w.delivered_rate / p.delivered_rate:.2f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500, help="messages per run")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run at most")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="waypost serve --workers (default: as serve, the number of cores)")
    args = parser.parse_args()
    reason = postfix_missing_reason()
    if reason or not Path(SMTP_SOURCE).exists():
        print(f"cannot run: {reason or 'smtp-source missing (Debian package postfix)'}")
        return 2

    accounts = [account(i + 1) for i in range(max(SESSIONS))]
    workdir = Path(tempfile.mkdtemp(prefix="waypost-bench-"))
    waypost = WaypostServer(workdir / "var", domain="main.dom", log_level="WARNING",
                            workers=args.workers)
    postfix = PostfixInstance(POSTFIX_IP, domains=[DOMAIN], hostname="postfix.bench")
    counter: WaypostCounter | None = None
    results: list[Result] = []
    try:
        print("setting up Waypost and Postfix ...", flush=True)
        waypost.init()
        waypost.cli("domain", "add", DOMAIN)
        for address in accounts:
            waypost.cli("account", "add", address, "--password", "bench-password-1")
        waypost.start()
        pids = waypost.worker_pids or [waypost.pid]
        print(f"Waypost: serve --workers {args.workers} (pids {pids})",
              flush=True)
        postfix.start()
        counter = WaypostCounter(waypost.data, accounts)
        for sessions in SESSIONS:
            for name, host, port, count in (
                ("waypost", "127.0.0.1", waypost.smtp, counter),
                ("postfix", POSTFIX_IP, 25, postfix.count),
            ):
                result = measure(name, host, port, sessions, args.messages, count, args.timeout)
                print(
                    f"  {name} {sessions:>2} session(s): accepted in {result.accepted:.2f} s, "
                    f"delivered in {result.delivered:.2f} s",
                    flush=True,
                )
                results.append(result)
    finally:
        if counter is not None:
            counter.close()
        postfix.stop()
        waypost.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
