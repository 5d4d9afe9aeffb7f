"""SIP: Waypost beside Kamailio, same calls, same machine, same run (issue 14 point 8).

Not a test: run ``.venv/bin/python bench/sip.py [--calls N] [--users N]
[--repeat R] [--workers N]`` with the Debian packages ``sip-tester`` (sipp) and
``kamailio`` installed. A private Kamailio runs in the foreground on a free
loopback port (``tests/support/kamailio.py``: tm, rr, registrar with
usrloc in memory, digest against plain passwords in an htable); Waypost is
``waypost serve`` on a fresh data directory with ``--port-offset``
(``tests/support/server.py``); the packaged Kamailio is not used.

Both get the same accounts and the same policy (Waypost's, which the
Kamailio configuration copies): calls *to* a local user are not
challenged, a local user calling *out* is (407), REGISTER always is (401).
The demo accounts (``alice``, the caller, and ``callee``) are made with the
``waypost account add --odmr`` command (the password kept sealed, which SIP
digest needs); the ``--users`` registration accounts straight through the
Directory API (thousands of CLI processes would take minutes); the Router
record that sends ``remote.bench.test`` to the UAS with the ``waypost
router set`` command. Kamailio gets the same names and passwords.

Measurements, in this order (registrations before calls: memory that
calls allocate and free would be reused by registrations unseen), each run
once to warm up and then ``--repeat`` times (3), the targets alternating
run by run so both see the same machine:

* **REGISTERs/s, digest auth**: ``register_users.xml``, ``--users`` (5,000)
  distinct users per run, each REGISTER challenged (401) and sent again:
  completed registrations per second;
* **memory per registration**: the server's proportional set size (PSS:
  Kamailio's shared memory, where its location table lives, counted once
  over its processes) after the run's registrations minus before, over the
  registrations made. Every run registers new users, so each run adds
  ``--users`` contacts. One run's figure is noisy (memory freed earlier is
  reused unseen), so the growth over all runs (warm-up included) is printed
  too.
* **calls/s, no auth**: sipp ``call_uac.xml`` -> proxy -> sipp
  ``call_uas.xml`` (INVITE/180/200/ACK/BYE, Record-Route followed),
  ``--calls`` calls (2,000) offered at ``--rate`` (10,000/s: as fast as the
  proxy answers) with at most
  ``--limit`` (100) at once, to ``callee@sip.bench.test``, registered (with
  digest) from the UAS's address: completed calls per second over sipp's
  elapsed time, and failed calls;
* **calls/s, digest auth**: the same from ``alice@sip.bench.test`` to
  ``callee@remote.bench.test`` (``call_uac_auth.xml``): the proxy answers
  407, sipp ACKs it and sends the INVITE again with credentials, the proxy
  relays it to the UAS (Waypost: ``Signal:`` Router record with the UAS's
  address and port; Kamailio: its forward target);

Waypost's SIP proxy may not be there yet: when nothing answers OPTIONS on
its SIP port, or calls fail, the reason is printed (the first unexpected
status sipp saw) and Kamailio's figures are still printed. Debian's sipp
(3.6) answers only MD5 digest challenges and only the first one offered:
a server offering SHA-256 first (RFC 8760 §2.4) cannot be measured with
it, and the bench says so; Waypost's default offers SHA-256 first, so the
bench sets ``SIPDigestAlgorithms`` to ``MD5`` (what the Kamailio
configuration does too) unless ``--set`` names it. The table shows
the median and the min-max spread; W/K is Waypost/Kamailio run by run.
The target: at least half of Kamailio's calls per second with no failed
call (both call rows).

``--workers N`` (1) runs Waypost as N processes ``serve --worker I/N`` on
one data directory sharing the ports (``tests/support/sip_workers.py``).
The kernel hashes each source address and port to one worker, so with
several workers sipp's callers and registering phones send each call from
its own socket (``-t un``; ``--sipp-transport`` chooses, ``u1``, one
socket for everything, by default with one worker), for Kamailio too; the
UAS answers on one socket either way.

Waypost runs with its default settings but that one; ``--set
NAME=VALUE`` changes one for the run (e.g. ``--set SIPTimerT1=1000``).

Every sipp run is cut at ``--timeout`` seconds (30): what it had not done
by then counts as failed (a server that slow misses the target anyway), so
a whole run stays under 10 minutes (about one with Kamailio alone).
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.support

from tests.support.dovecot import descendants, memory_kb  # noqa: E402
from tests.support.kamailio import KamailioInstance, kamailio_missing_reason  # noqa: E402
from tests.support.server import WaypostServer  # noqa: E402
from tests.support.sip_workers import WorkerGroup  # noqa: E402
from tests.support.sipp import Sipp, SippResult, free_port, sipp_binary, write_users  # noqa: E402

from waypost.services import passwords  # noqa: E402
from waypost.services.container import open_services  # noqa: E402

DOMAIN = "sip.bench.test"
REMOTE = "remote.bench.test"
CALLER, CALLEE = "alice", "callee"
TARGET = 0.5  # Waypost's calls/s at least half of Kamailio's
CALL_ROWS = ("calls/s, no auth", "calls/s, digest auth")
REG_ROW = "REGISTERs/s, digest auth"
MEM_ROW = "bytes per registration"


def password(user: str) -> str:
    return f"pw-{user}-bench"


@dataclass
class Target:
    """One server under test: where it listens and how to weigh it."""

    name: str
    address: str  # host:port of its SIP listener (UDP)
    uas_port: int  # the callee's UAS (registered contact; the calling-out target)
    pids: Callable[[], list[int]]
    tmp: Path
    weighed: dict[str, int] = field(default_factory=dict)  # kB before/after, registered

    def memory_kb(self) -> int:
        return memory_kb(self.pids(), "Pss")


@dataclass
class Row:
    measure: str
    values: dict[str, list[float]] = field(default_factory=dict)  # target -> value per run
    failed: dict[str, list[int]] = field(default_factory=dict)  # target -> failures per run

    def ratios(self) -> list[float]:
        w, k = self.values.get("waypost", []), self.values.get("kamailio", [])
        return [a / b for a, b in zip(w, k, strict=False) if b > 0]


# -- one run of each measurement ----------------------------------------------------


def call_run(target: Target, auth: bool, args: argparse.Namespace) -> SippResult:
    with Sipp(target.tmp, "call_uas.xml", port=target.uas_port, timeout=args.timeout + 30):
        if auth:
            uac = Sipp(target.tmp, "call_uac_auth.xml", remote=target.address, service=CALLEE,
                       keys={"domain": REMOTE, "caller": f"{CALLER}@{DOMAIN}"},
                       auth_user=CALLER, auth_password=password(CALLER),
                       auth_uri=f"{CALLEE}@{REMOTE}", calls=args.calls,
                       rate=args.rate, limit=args.limit, timeout=args.timeout,
                       transport=args.sipp_transport)
        else:
            uac = Sipp(target.tmp, "call_uac.xml", remote=target.address, service=CALLEE,
                       keys={"domain": DOMAIN}, calls=args.calls, rate=args.rate,
                       limit=args.limit, timeout=args.timeout, transport=args.sipp_transport)
        return uac.run()


def register_run(target: Target, users: Sequence[str], args: argparse.Namespace
                 ) -> tuple[SippResult, float]:
    """Register ``users``; the result and the PSS growth in bytes per
    registration (``target.weighed`` keeps the first and last weights)."""
    inf = write_users(target.tmp / f"users-{target.name}-{users[0]}.csv",
                      [(u, password(u)) for u in users])
    before = target.memory_kb()
    result = Sipp(target.tmp, "register_users.xml", remote=target.address, inf=inf,
                  calls=len(users), rate=args.rate, limit=args.limit, auth_uri=DOMAIN,
                  keys={"domain": DOMAIN}, timeout=args.timeout,
                  transport=args.sipp_transport).run()
    time.sleep(0.5)  # let the last answers' work settle before weighing
    after = target.memory_kb()
    target.weighed.setdefault("before", before)
    target.weighed["after"] = after
    target.weighed["registered"] = target.weighed.get("registered", 0) + result.successful
    per = (after - before) * 1024 / result.successful if result.successful else 0.0
    return result, per


def register_callee(target: Target) -> SippResult:
    """The callee's phone registers from the UAS's address (digest)."""
    return Sipp(target.tmp, "register.xml", remote=target.address, port=target.uas_port,
                service=CALLEE, auth_user=CALLEE, auth_password=password(CALLEE),
                auth_uri=DOMAIN, calls=1,
                keys={"domain": DOMAIN}, timeout=10).run()


def sip_ping(address: str, timeout: float = 1.0) -> str | None:
    """One OPTIONS to the server itself over UDP: the status line, or None."""
    host, port = address.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        here = sock.getsockname()[1]
        probe = (f"OPTIONS sip:{address} SIP/2.0\r\n"
                 f"Via: SIP/2.0/UDP 127.0.0.1:{here};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
                 f"From: <sip:bench@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
                 f"To: <sip:{address}>\r\nCall-ID: {secrets.token_hex(8)}@127.0.0.1\r\n"
                 "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        sock.sendto(probe.encode(), (host, int(port)))
        try:
            return sock.recv(65535).split(b"\r\n", 1)[0].decode(errors="replace")
        except OSError:
            return None


# -- set-up ---------------------------------------------------------------------------


def user_names(count: int) -> list[str]:
    return [f"u{i:06d}" for i in range(count)]


def setup_waypost(waypost: WaypostServer | WorkerGroup, users: list[str], uas_port: int,
                  settings: Sequence[str] = ()) -> None:
    """Demo accounts, the Router record and ``settings`` (``NAME=VALUE``)
    through the CLI; the many registration accounts through the Directory
    API (server not running)."""
    waypost.init()
    for item in settings:
        name, _, value = item.partition("=")
        waypost.cli("settings", "set", name.strip(), value.strip())
    for user in (CALLER, CALLEE):
        waypost.cli("account", "add", f"{user}@{DOMAIN}", "--password", password(user), "--odmr")
    waypost.cli("router", "set", "-",
                input=f"Signal:{REMOTE} = {REMOTE}@127.0.0.1.{uas_port}._via\n")
    services = open_services(waypost.data)
    try:
        passwords.configure(**passwords.FAST_PARAMETERS)
        for start in range(0, len(users), 1000):
            with services.store.transaction():
                for user in users[start:start + 1000]:
                    services.directory.create_account(
                        f"{user}@{DOMAIN}", password=password(user),
                        settings={"PasswordEncryption": "argon2+cram-md5"})
    finally:
        passwords.reset()
        services.close()


def waypost_pids(waypost: WaypostServer | WorkerGroup) -> list[int]:
    if isinstance(waypost, WorkerGroup):
        return waypost.pids()
    return [waypost.proc.pid, *descendants(waypost.proc.pid)] if waypost.proc else []


# -- report ---------------------------------------------------------------------------


def _spread(values: Sequence[float], fmt: str) -> str:
    if not values:
        return "n/a"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:{fmt}} ({low:{fmt}}-{high:{fmt}})"


def report(rows: list[Row], why_not: str | None) -> bool:
    """Print the table and the verdict; True when the target is met."""
    print()
    print(f"{'measure':<26} {'Waypost':>24} {'Kamailio':>24} {'W/K':>18} "
          f"{'failed W':>10} {'failed K':>10}")
    for row in rows:
        print(f"{row.measure:<26} {_spread(row.values.get('waypost', []), ',.0f'):>24} "
              f"{_spread(row.values.get('kamailio', []), ',.0f'):>24} "
              f"{_spread(row.ratios(), '.2f'):>18} "
              f"{sum(row.failed.get('waypost', [])) if 'waypost' in row.failed else 'n/a':>10} "
              f"{sum(row.failed.get('kamailio', [])) if 'kamailio' in row.failed else 'n/a':>10}")
    print("(median of the runs, min-max in brackets; W/K: Waypost/Kamailio, run by run; "
          "failed: calls or REGISTERs failed over all runs)")
    print()
    print("Target: at least half of Kamailio's calls per second with no failed call")
    if why_not:
        print(f"verdict: Waypost not measured ({why_not}); target NOT met")
        return False
    calls = [row for row in rows if row.measure in CALL_ROWS]
    if not calls:  # --only left the call rows out
        print("verdict: no calls measured (--only)")
        return False
    missing = [row.measure for row in calls if not row.ratios()]
    slow = [f"{row.measure} ({statistics.median(row.ratios()):.2f}x)"
            for row in calls if row.ratios() and statistics.median(row.ratios()) < TARGET]
    failed = [f"{row.measure} ({sum(row.failed.get('waypost', []))} failed)"
              for row in calls if sum(row.failed.get("waypost", [])) > 0]
    if missing:
        print(f"verdict: target NOT met: no ratio for {', '.join(missing)}")
        return False
    if slow or failed:
        print(f"verdict: target NOT met: {', '.join(slow + failed)}")
        return False
    worst = min(calls, key=lambda row: statistics.median(row.ratios()))
    print(f"verdict: target met (worst: {worst.measure}, "
          f"{statistics.median(worst.ratios()):.2f}x Kamailio, no failed call)")
    return True


# -- main -----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per run")
    parser.add_argument("--rate", type=float, default=10000,
                        help="calls (REGISTERs) offered per second")
    parser.add_argument("--limit", type=int, default=100, help="calls (REGISTERs) at once")
    parser.add_argument("--users", type=int, default=5000, help="registrations per run")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement")
    parser.add_argument("--children", type=int, default=4, help="Kamailio worker processes")
    parser.add_argument("--timeout", type=float, default=30,
                        help="seconds per run at most (the rest counts as failed)")
    parser.add_argument("--workers", type=int, default=1,
                        help="Waypost worker processes (serve --worker I/N)")
    parser.add_argument("--sipp-transport", choices=("u1", "un"), default=None,
                        help="sipp's UDP sockets for callers and registering phones: one "
                        "(u1) or one per call (un); default un with several workers")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--only", default="", help="run only measures whose name contains this")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a Waypost setting for this run (waypost settings set); repeatable")
    args = parser.parse_args()
    if args.sipp_transport is None:
        args.sipp_transport = "un" if args.workers > 1 else "u1"
    reason = kamailio_missing_reason() or (
        None if sipp_binary() else "needs sipp (Debian package sip-tester)")
    if reason:
        print(f"cannot run: {reason}")
        return 2

    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="waypost-bench-sip-"))
    runs = args.repeat + 1
    users = user_names(args.users * runs)
    slices = [users[i * args.users:(i + 1) * args.users] for i in range(runs)]
    waypost: WaypostServer | WorkerGroup
    if args.workers > 1:
        waypost = WorkerGroup(workdir / "var", args.workers, domain=DOMAIN,
                              log_level="WARNING")
    else:
        waypost = WaypostServer(workdir / "var", domain=DOMAIN, log_level="WARNING")
    kam_uas, way_uas = free_port(), free_port()
    kamailio = KamailioInstance(
        workdir, users={u: password(u) for u in (CALLER, CALLEE, *users)}, auth=True,
        forward=f"127.0.0.1:{kam_uas}", domain=DOMAIN, children=args.children, debug=-1,
        keep=args.keep)
    # REGISTERs first: calls free memory that registrations would reuse unweighed
    rows = [Row(name) for name in (REG_ROW, MEM_ROW, *CALL_ROWS)]
    targets: list[Target] = []
    why_not: str | None = None
    try:
        started = time.monotonic()
        kamailio.start()
        print(f"Kamailio {kamailio.address}: started in {time.monotonic() - started:.1f} s "
              f"({len(kamailio.pids())} processes, {len(users) + 2} users)", flush=True)
        started = time.monotonic()
        wanted = list(args.set)
        if not any(item.partition("=")[0].strip().lower() == "sipdigestalgorithms"
                   for item in wanted):
            wanted.insert(0, "SIPDigestAlgorithms=MD5")  # all sipp answers (see above)
        setup_waypost(waypost, users, way_uas, wanted)
        waypost.start()
        wport = waypost.port("SIPPort")
        print(f"Waypost 127.0.0.1:{wport}: set up and started in "
              f"{time.monotonic() - started:.1f} s ({len(users) + 2} accounts, "
              f"{args.workers} worker(s), sipp -t {args.sipp_transport})", flush=True)

        kam_dir, way_dir = workdir / "kamailio-runs", workdir / "waypost-runs"
        kam_dir.mkdir()
        way_dir.mkdir()
        targets = [Target("kamailio", kamailio.address, kam_uas, kamailio.pids, kam_dir)]
        answer = sip_ping(f"127.0.0.1:{wport}")
        if answer is None:
            why_not = f"nothing answers SIP OPTIONS on 127.0.0.1:{wport}"
            print(f"Waypost: {why_not}", flush=True)
        else:
            targets.insert(0, Target("waypost", f"127.0.0.1:{wport}", way_uas,
                                     lambda: waypost_pids(waypost), way_dir))
        for target in list(targets):
            registered = register_callee(target)
            if not registered.ok:
                print(f"{target.name}: the callee cannot register: {registered.why()}",
                      flush=True)
                if target.name == "waypost":
                    why_not = f"REGISTER failed: {registered.why()}"
                    targets.remove(target)
        if not [t for t in targets if t.name == "kamailio"]:
            print(f"Kamailio does not work:\n{kamailio.log()[-3000:]}")
            return 1

        only = args.only.lower()
        wanted = [row for row in rows if row.measure != MEM_ROW and only in row.measure.lower()]
        for row in wanted:
            for attempt in range(runs):
                for target in targets:  # alternate, so both see the same machine
                    label = "warm-up" if attempt == 0 else f"run {attempt}"
                    if row.measure in CALL_ROWS:
                        result = call_run(target, row.measure == CALL_ROWS[1], args)
                        extra = ""
                    else:
                        result, per = register_run(target, slices[attempt], args)
                        extra = f"  {per:,.0f} bytes/registration"
                        if attempt and result.successful:
                            rows[1].values.setdefault(target.name, []).append(per)
                    note = "" if result.ok else f"  ({result.why()})"
                    expected = args.calls if row.measure in CALL_ROWS else args.users
                    print(f"  {target.name:<8} {row.measure:<26} {label:<8} "
                          f"{result.calls_per_second:>9,.0f}/s  {result.successful:>6} ok "
                          f"{max(result.failed, expected - result.successful):>5} failed"
                          f"{extra}{note}", flush=True)
                    if attempt:
                        row.values.setdefault(target.name, []).append(result.calls_per_second)
                        # unfinished at the time limit counts as failed too
                        row.failed.setdefault(target.name, []).append(
                            max(result.failed, expected - result.successful))
        rows = [row for row in rows if row in wanted or (row.measure == MEM_ROW and any(
            w.measure == REG_ROW for w in wanted))]
    finally:
        with contextlib.suppress(Exception):
            waypost.stop()
        kamailio.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    for target in targets:  # one run's growth is noisy (freed memory reused): all runs
        w = target.weighed
        if w.get("registered"):
            print(f"{target.name}: {(w['after'] - w['before']) * 1024 / w['registered']:,.0f} "
                  f"bytes per registration over all {w['registered']:,} registrations")
    report(rows, why_not)
    print(f"(whole run: {time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
