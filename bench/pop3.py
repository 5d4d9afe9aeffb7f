"""POP3: Waypost beside Dovecot, same messages, same machine, same run (issue 12 point 7).

Not a test: run ``.venv/bin/python bench/pop3.py [--messages N] [--repeat R]``
as root with the Debian packages ``dovecot-imapd`` and ``dovecot-pop3d``
installed (a private Dovecot runs in the foreground on free loopback ports,
see ``tests/support/dovecot.py``; the packaged instance is not used).

``--clients`` accounts (default 10) each get the same ``--messages``
messages (default 1,000) of about ``--size`` octets (10 KB): the generator
of ``bench/imap.py`` (plain text, quoted-printable, multipart with HTML or a
base64 attachment), with a line starting with a dot in every tenth message
so dot-stuffing is exercised. Dovecot gets them as Maildir files, Waypost
through its store API before the server starts (one blob per distinct body,
shared by the accounts, as local delivery stores them).

Three workloads, each for one client and for ``--clients`` clients at once
(each on its own maildrop: POP3 locks a maildrop per session), each after
login (untimed) on a fresh connection:

* ``LIST+UIDL``: LIST and UIDL of the whole maildrop, 10 times over
  (20 x N messages listed; once takes about a millisecond, too short to time);
* ``RETR all``: RETR 1 .. N, one command after the other as most clients do;
* ``TOP n 10 all``: TOP n 10 for every message.

A client is a process of its own (so the clients do not share one
interpreter lock) with a minimal raw-socket POP3 client that only looks for
the end of each response. Timed: from the moment every client is logged in
and told to start to the last client's last response; messages/s are the
messages of all clients over that time. CPU: user + system seconds of the
server over the same span (Waypost: its process; Dovecot: the master and
every process under it, including the POP3 processes that ended and were
reaped by the master). Each workload runs once to warm up (Dovecot builds
its index and caches, both fill the page cache; the warm-up of ``RETR all``
for one client also checks every byte against what was loaded) and then
``--repeat`` times (3); the table shows the median and the min-max spread.

The verdict: the target is at least Dovecot's messages/s in every row.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.support

from tests.support.dovecot import (  # noqa: E402
    DovecotInstance,
    descendants,
    dovecot_missing_reason,
    free_port,
)
from tests.support.pop3 import Pop3Refused as Pop3Error  # noqa: E402
from tests.support.pop3 import RawPop3  # noqa: E402
from tests.support.server import WaypostServer  # noqa: E402

import imap as imap_bench  # noqa: E402  (bench/imap.py: the message generator)
from waypost.cli.serve import default_workers  # noqa: E402
from waypost.services import passwords  # noqa: E402
from waypost.services.container import open_services  # noqa: E402
from waypost.services.mailstore import summarize  # noqa: E402
from waypost.storage.interface import INBOX, NewMailMessage  # noqa: E402

DOMAIN = imap_bench.DOMAIN
PASSWORD = imap_bench.PASSWORD
POP3_BINARY = "/usr/lib/dovecot/pop3"
TOP_LINES = 10
LIST_ROUNDS = 10  # one LIST and one UIDL take about a millisecond: too short to time alone
TARGET = 1.0  # Waypost's messages/s at least Dovecot's

DOVECOT_POP3 = """
protocols = imap pop3
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""


# -- the maildrop ---------------------------------------------------------------------


def generate(count: int, size: int, seed: int) -> list[bytes]:
    """``count`` messages of about ``size`` octets, CRLF line ends; every tenth
    has a body line that starts with a dot (dot-stuffed on the wire)."""
    rng = random.Random(seed)
    pool = imap_bench._lines(rng, 2000)
    umlauts = [" ".join(rng.choice(imap_bench.WORDS) for _ in range(10)) for _ in range(100)]
    kinds = rng.choices(["plain", "qp", "alternative", "mixed"], weights=[55, 10, 15, 20], k=count)
    start = time.time() - 30 * 86400
    messages = []
    for i, kind in enumerate(kinds):
        data = imap_bench._message(rng, i, kind, start + i * 60, size, pool, umlauts, False)
        if i % 10 == 0:
            data = data.replace(b"\r\n\r\n", b"\r\n\r\n.signature follows\r\n..\r\n", 1)
        messages.append(data)
    return messages


def account_names(clients: int) -> list[str]:
    return [f"pop{i}" for i in range(clients)]


def load_waypost(data: Path, names: list[str], messages: list[bytes]) -> str:
    """The accounts and their messages, straight into the store."""
    services = open_services(data)
    try:
        passwords.configure(**passwords.FAST_PARAMETERS)
        store = services.store
        with ThreadPoolExecutor(8) as pool:  # each blob is fsynced: overlap them
            keys = list(pool.map(store.blob_put, messages))
        when = time.time() - 86400
        for name in names:
            services.directory.create_account(f"{name}@{DOMAIN}", password=PASSWORD)
            for start in range(0, len(messages), 500):
                store.mail_store([
                    NewMailMessage(
                        domain=DOMAIN, account=name, mailbox=INBOX, blob=key,
                        blob_size=len(m), internal_date=when + i, summary=summarize(m),
                    )
                    for i, (m, key) in enumerate(zip(messages[start:start + 500],
                                                     keys[start:start + 500], strict=True))
                ])  # fmt: skip
        info = store.mail_mailbox(DOMAIN, names[-1], INBOX)
    finally:
        passwords.reset()
        services.close()
    return f"{len(names)} x {info.messages} messages, {info.size} bytes each"


def load_dovecot(dovecot: DovecotInstance, names: list[str], messages: list[bytes]) -> None:
    dovecot.prepare()
    when = time.time() - 86400
    for name in names:
        for i, data in enumerate(messages):
            dovecot.add_message(data, "", user=name, when=when + i, chown=False)
    dovecot.chown_mail()


# -- a minimal POP3 client ------------------------------------------------------------


class Client(RawPop3):
    """Just enough POP3 to time commands (see tests/support/pop3.py)."""

    def body(self, text: str) -> bytes:
        """The body of a multi-line response, still dot-stuffed, without the end line."""
        return self.multi(text)[1][:-3]

    def close(self) -> None:
        try:
            self.quit()
        except (OSError, Pop3Error):
            self.sock.close()


def unstuff(body: bytes) -> bytes:
    body = body.replace(b"\r\n..", b"\r\n.")
    return body[1:] if body.startswith(b"..") else body


# -- workloads ------------------------------------------------------------------------


def listing(client: Client, count: int) -> int:
    for _ in range(LIST_ROUNDS):
        for verb in ("LIST", "UIDL"):
            lines = client.body(verb).count(b"\r\n")
            if lines != count:
                raise Pop3Error(f"{verb} listed {lines} messages, not {count}")
    return 2 * count * LIST_ROUNDS


def retr_all(client: Client, count: int) -> int:
    for n in range(1, count + 1):
        client.body(f"RETR {n}")
    return count


def top_all(client: Client, count: int) -> int:
    for n in range(1, count + 1):
        client.body(f"TOP {n} {TOP_LINES}")
    return count


WORKLOADS: dict[str, Callable[[Client, int], int]] = {
    "LIST+UIDL": listing,
    "RETR all": retr_all,
    f"TOP n {TOP_LINES} all": top_all,
}


@dataclass
class Target:
    name: str
    port: int
    users: list[str]  # login names, one per client
    pids: Callable[[], list[int]]
    timeout: float


def _client(target: Target, user: str, workload: str, count: int, ready: mp.Queue,
            go: mp.Event, done: mp.Queue, finish: mp.Event) -> None:  # fmt: skip
    """One client process: log in, report ready, run when told, report."""
    try:
        client = Client(target.port, target.timeout)
        client.login(user, PASSWORD)
    except (OSError, Pop3Error) as exc:
        ready.put(f"login of {user}: {exc}")
        return
    ready.put("")
    if not go.wait(target.timeout):
        return
    try:
        start = time.monotonic()
        messages = WORKLOADS[workload](client, count)
        done.put((start, time.monotonic(), messages, ""))
    except (OSError, Pop3Error) as exc:
        done.put((0.0, 0.0, 0, f"{user}: {exc}"))
    finish.wait(target.timeout)
    client.close()


def cpu_seconds(pids: list[int], which: slice = slice(11, 15)) -> float:
    """utime + stime of the processes and their reaped children (clock ticks -> s)."""
    ticks = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        ticks += sum(int(f) for f in fields[which])  # utime stime cutime cstime
    return ticks / CLOCK_TICKS


CLOCK_TICKS = 100  # replaced in main() by os.sysconf("SC_CLK_TCK")


SYSTEM = slice(12, 15, 2)  # stime, cstime


def run(target: Target, workload: str, clients: int, count: int) -> tuple[float, float, float]:
    """(messages/s, server CPU seconds, of which in the kernel) of one timed run."""
    ctx = mp.get_context("fork")
    ready: mp.Queue = ctx.Queue()
    done: mp.Queue = ctx.Queue()
    go, finish = ctx.Event(), ctx.Event()
    procs = [
        ctx.Process(target=_client, args=(target, target.users[i], workload, count, ready, go,
                                          done, finish), daemon=True)
        for i in range(clients)
    ]  # fmt: skip
    for proc in procs:
        proc.start()
    try:
        problems = [p for p in (ready.get(timeout=target.timeout) for _ in procs) if p]
        if problems:
            raise Pop3Error("; ".join(problems))
        cpu0, sys0 = cpu_seconds(target.pids()), cpu_seconds(target.pids(), SYSTEM)
        go.set()
        results = [done.get(timeout=target.timeout) for _ in procs]
        cpu1, sys1 = cpu_seconds(target.pids()), cpu_seconds(target.pids(), SYSTEM)
        finish.set()
    finally:
        go.set()
        finish.set()
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
    problems = [r[3] for r in results if r[3]]
    if problems:
        raise Pop3Error("; ".join(problems))
    elapsed = max(r[1] for r in results) - min(r[0] for r in results)
    return sum(r[2] for r in results) / elapsed, cpu1 - cpu0, sys1 - sys0


def check(target: Target, messages: list[bytes]) -> str:
    """Does RETR give back every message byte for byte, and UIDL one id each?"""
    client = Client(target.port, target.timeout)
    try:
        client.login(target.users[0], PASSWORD)
        stat = client.ok("STAT").split()
        ids = client.body("UIDL").splitlines()
        digest, wrong = hashlib.sha256(), []
        for n, data in enumerate(messages, 1):
            got = unstuff(client.body(f"RETR {n}"))
            digest.update(got)
            if got != data:
                wrong.append(n)
    finally:
        client.close()
    problems = []
    if int(stat[1]) != len(messages):
        problems.append(f"STAT says {stat[1]} messages")
    if len({line.split()[1] for line in ids}) != len(messages):
        problems.append("UIDL ids are not one per message")
    if wrong:
        problems.append(f"RETR differs for {len(wrong)} messages, first {wrong[:5]}")
    return (f"{target.name:<8} {stat[1].decode()} messages, {stat[2].decode()} octets: "
            + ("as loaded" if not problems else "MISMATCH: " + "; ".join(problems)))  # fmt: skip


# -- report ---------------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    clients: int
    rates: dict[str, list[float]]  # target -> messages/s of each run
    cpu: dict[str, list[float]]  # target -> server CPU seconds of each run

    def ratios(self) -> list[float]:
        """Waypost/Dovecot messages/s, run by run (the runs alternate)."""
        w, d = self.rates.get("waypost", []), self.rates.get("dovecot", [])
        return [a / b for a, b in zip(w, d, strict=False) if b > 0]


def _spread(values: list[float], fmt: str) -> str:
    if not values:
        return "n/a"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:{fmt}} ({low:{fmt}}-{high:{fmt}})"


def report(rows: list[Row], why_not: str | None) -> None:
    print()
    head = (f"{'workload':<14} {'clients':>7} {'Waypost msg/s':>26} {'Dovecot msg/s':>26} "
            f"{'W/D msg/s':>20} {'Waypost CPU s':>20} {'Dovecot CPU s':>20}")  # fmt: skip
    print(head)
    for row in rows:
        print(f"{row.workload:<14} {row.clients:>7} "
              f"{_spread(row.rates.get('waypost', []), ',.0f'):>26} "
              f"{_spread(row.rates.get('dovecot', []), ',.0f'):>26} "
              f"{_spread(row.ratios(), '.2f'):>20} "
              f"{_spread(row.cpu.get('waypost', []), '.2f'):>20} "
              f"{_spread(row.cpu.get('dovecot', []), '.2f'):>20}")  # fmt: skip
    print("(median of the runs, min-max in brackets; W/D: Waypost/Dovecot, run by run)")
    print()
    if why_not:
        print(f"verdict: Waypost not measured ({why_not}); target not judged")
        return
    slow = [f"{r.workload} x{r.clients} ({statistics.median(r.ratios()):.2f}x)"
            for r in rows if r.ratios() and statistics.median(r.ratios()) < TARGET]  # fmt: skip
    missing = [f"{r.workload} x{r.clients}" for r in rows if not r.ratios()]
    if slow:
        print(f"verdict: target MISSED, below Dovecot's messages/s (median): {', '.join(slow)}")
    elif missing:
        print(f"verdict: incomplete, no ratio for: {', '.join(missing)}")
    else:
        worst = min(rows, key=lambda r: statistics.median(r.ratios()))
        print(f"verdict: target met, every row at least Dovecot's messages/s (worst: "
              f"{worst.workload} x{worst.clients}, "
              f"{statistics.median(worst.ratios()):.2f}x)")  # fmt: skip


def main() -> int:
    global CLOCK_TICKS
    import os

    CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per maildrop")
    parser.add_argument("--size", type=int, default=10 * 1024, help="octets per message, about")
    parser.add_argument("--clients", type=int, default=10, help="clients at once (and accounts)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per workload")
    parser.add_argument("--seed", type=int, default=12, help="seed of the generated messages")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run at most")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="waypost serve --workers (default: as serve, the number of cores)")
    parser.add_argument("--only", default="", help="run only workloads whose name contains this")
    args = parser.parse_args()
    reason = dovecot_missing_reason()
    if reason is None and not Path(POP3_BINARY).exists():
        reason = "needs Dovecot POP3 (Debian package dovecot-pop3d)"
    if reason:
        print(f"cannot run: {reason}")
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="waypost-bench-pop3-"))
    workdir.chmod(0o755)  # Dovecot's users must reach its directory inside
    names = account_names(args.clients)
    pop3_port = free_port()
    waypost = WaypostServer(workdir / "var", domain=DOMAIN, log_level="WARNING",
                            workers=args.workers)
    dovecot = DovecotInstance(workdir, free_port(), users=dict.fromkeys(names, PASSWORD),
                              connections=args.clients * 2, keep=args.keep,
                              extra=DOVECOT_POP3.format(port=pop3_port))  # fmt: skip
    rows: list[Row] = []
    why_not: str | None = None
    try:
        started = time.monotonic()
        messages = generate(args.messages, args.size, args.seed)
        total = sum(map(len, messages))
        print(f"generated {len(messages)} messages, {total / 1e6:.1f} MB, "
              f"{time.monotonic() - started:.1f} s", flush=True)  # fmt: skip
        started = time.monotonic()
        load_dovecot(dovecot, names, messages)
        print(f"Dovecot: Maildirs written in {time.monotonic() - started:.1f} s", flush=True)
        dovecot.start()
        started = time.monotonic()
        waypost.init()
        stored = load_waypost(waypost.data, names, messages)
        print(f"Waypost: stored in {time.monotonic() - started:.1f} s, {stored}", flush=True)
        waypost.start()
        pids = waypost.worker_pids or [waypost.pid]
        print(f"Waypost: serve --workers {args.workers} (pids {pids})",
              flush=True)

        targets = [Target("dovecot", pop3_port, names, dovecot.pids, args.timeout)]
        wport = waypost.port("POP3Port")
        if imap_bench.wait_greeting(wport, 15, b"+OK"):
            targets.insert(0, Target(
                "waypost", wport, [f"{n}@{DOMAIN}" for n in names],
                lambda: [waypost.proc.pid, *descendants(waypost.proc.pid)] if waypost.proc
                else [], args.timeout,
            ))  # fmt: skip
        else:
            why_not = f"nothing answers POP3 on port {wport}"
        if not imap_bench.wait_greeting(pop3_port, 15, b"+OK"):
            print(f"Dovecot: nothing answers POP3 on port {pop3_port}\n{dovecot.log()}")
            targets.pop()

        print("consistency (first access, untimed):", flush=True)
        for target in list(targets):
            try:
                print("  " + check(target, messages), flush=True)
            except (Pop3Error, OSError, ValueError, IndexError) as exc:
                print(f"  {target.name}: cannot measure: {exc}", flush=True)
                targets.remove(target)
                if target.name == "waypost":
                    why_not = f"Waypost POP3 failed: {exc}"

        for workload in [w for w in WORKLOADS if args.only.lower() in w.lower()]:
            for clients in sorted({1, args.clients}):
                row = Row(workload, clients, {}, {})
                for attempt in range(args.repeat + 1):
                    for target in targets:  # alternate, so both see the same machine
                        try:
                            rate, cpu, system = run(target, workload, clients, len(messages))
                        except (Pop3Error, OSError) as exc:
                            print(f"  {target.name}: {workload} x{clients}: {exc}", flush=True)
                            continue
                        label = "warm-up" if attempt == 0 else f"run {attempt}"
                        print(f"  {target.name:<8} {workload:<14} x{clients:<3} {label:<8} "
                              f"{rate:>10,.0f} msg/s  CPU {cpu:.2f} s ({system:.2f} s system)",
                              flush=True)  # fmt: skip
                        if attempt:
                            row.rates.setdefault(target.name, []).append(rate)
                            row.cpu.setdefault(target.name, []).append(cpu)
                rows.append(row)
    finally:
        waypost.stop()
        dovecot.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report(rows, why_not)
    return 0


if __name__ == "__main__":
    sys.exit(main())
