"""SORT and THREAD: Waypost beside Dovecot on one large INBOX (issue 12 point 7).

Not a test: run ``.venv/bin/python bench/imap_sort.py [--messages N]`` as
root with ``dovecot-imapd`` installed. The mailbox is the one ``bench/imap.py``
generates and loads (its loaders are reused, so both servers hold the same
bytes). Every command is sent once cold (the first SORT/THREAD after the
server started: Dovecot builds its cache file, Waypost its sort-key cache),
then ``--repeat`` times warm, each on a fresh connection after LOGIN and
SELECT; it prints the median, the spread (min-max) and the ratio
Waypost/Dovecot per command. Then ``--changed`` times after APPENDing a new
message (keys cached, the answer not: what a busy mailbox costs).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from tests.support.dovecot import (  # noqa: E402
    DovecotInstance,
    dovecot_missing_reason,
    free_port,
)
from tests.support.server import WaypostServer  # noqa: E402

from imap import (  # noqa: E402
    DOMAIN,
    PASSWORD,
    Target,
    check,
    generate,
    load_dovecot,
    load_waypost,
    wait_greeting,
)

COMMANDS = (
    "UID SORT (DATE) UTF-8 FLAGGED",
    "UID SORT (DATE) UTF-8 ALL",
    "UID SORT (REVERSE ARRIVAL) UTF-8 ALL",
    "UID SORT (SUBJECT DATE) UTF-8 ALL",
    "UID SORT (FROM) UTF-8 ALL",
    "UID SORT (TO CC) UTF-8 UNSEEN",
    "UID THREAD REFERENCES UTF-8 ALL",
    "UID THREAD ORDEREDSUBJECT UTF-8 ALL",
)
NEW_MESSAGE = (
    "From: New <new@example.org>\r\nTo: bench@main.dom\r\nSubject: Re: new %d.%d\r\n"
    "Date: Sat, 5 Dec 2026 08:00:00 +0000\r\nMessage-ID: <new%d.%d@example.org>\r\n\r\nhi\r\n"
)


def timed(target: Target, command: str) -> tuple[float, int]:
    client = target.session()
    try:
        start = time.perf_counter()
        responses = client.command(command)
        return time.perf_counter() - start, sum(len(r) for r in responses)
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--changed", type=int, default=3, help="timed runs after a new message")
    args = parser.parse_args()
    if reason := dovecot_missing_reason():
        print(f"cannot run: {reason}")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="waypost-bench-sort-"))
    workdir.chmod(0o755)
    waypost = WaypostServer(workdir / "var", domain=DOMAIN, log_level="WARNING")
    dovecot = DovecotInstance(workdir, free_port(), users={"bench": PASSWORD}, connections=50)
    try:
        messages = generate(args.messages, args.seed)
        dovecot.prepare()
        load_dovecot(dovecot, "bench", messages)
        dovecot.chown_mail()
        dovecot.start()
        waypost.init()
        for line in load_waypost(waypost.data, {f"bench@{DOMAIN}": messages}, [], 50):
            print("Waypost:", line, flush=True)
        waypost.start()
        targets = [
            Target("waypost", waypost.port("IMAPPort"), f"bench@{DOMAIN}", lambda: [], 600),
            Target("dovecot", dovecot.port, "bench", lambda: [], 600),
        ]
        if not wait_greeting(targets[0].port, 15):
            print("Waypost: no IMAP listener")
            return 1
        for target in targets:  # Dovecot may interleave "* OK Searched n%" on large ones
            try:
                print("  " + check(target, messages), flush=True)
            except ValueError as exc:
                print(f"  {target.name}: consistency check not parsed ({exc})", flush=True)
        print(f"{'command':<40} {'server':<8} {'cold':>9} {'warm median':>12} "
              f"{'spread':>17} {'bytes':>9}")  # fmt: skip
        worst = 0.0
        for command in COMMANDS:
            medians = {}
            for target in targets:
                cold, size = timed(target, command)
                warm = [timed(target, command)[0] for _ in range(args.repeat)]
                medians[target.name] = statistics.median(warm)
                print(f"{command:<40} {target.name:<8} {cold * 1000:8.1f}ms "
                      f"{medians[target.name] * 1000:10.1f}ms "
                      f"{min(warm) * 1000:7.1f}-{max(warm) * 1000:7.1f}ms {size:>9}",
                      flush=True)  # fmt: skip
            ratio = medians["waypost"] / medians["dovecot"]
            worst = max(worst, ratio)
            print(f"{command:<40} ratio {ratio:.2f}x", flush=True)
            changed = {}
            for target in targets:  # keys cached, but the answer not: a new message came
                runs = []
                for n in range(args.changed):
                    client = target.session()
                    try:
                        data = NEW_MESSAGE % (n, time.time_ns(), n, time.time_ns())
                        client.command(f"APPEND INBOX {{{len(data)}+}}\r\n{data}")
                        client.command("NOOP")
                        start = time.perf_counter()
                        client.command(command)
                        runs.append(time.perf_counter() - start)
                    finally:
                        client.close()
                changed[target.name] = statistics.median(runs)
                print(f"{command:<40} {target.name:<8} after a new message "
                      f"{changed[target.name] * 1000:10.1f}ms "
                      f"{min(runs) * 1000:7.1f}-{max(runs) * 1000:7.1f}ms", flush=True)  # fmt: skip
            print(f"{command:<40} ratio after a new message "
                  f"{changed['waypost'] / changed['dovecot']:.2f}x", flush=True)  # fmt: skip
        print(f"worst warm ratio: {worst:.2f}x ({'met' if worst <= 1.0 else 'target MISSED'})")
    finally:
        waypost.stop()
        dovecot.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
