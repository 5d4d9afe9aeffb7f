"""Router lookups per second for tables of 100, 10,000 and 100,000 records.

Not a test: run ``.venv/bin/python bench/router.py``. The table has a
realistic mix (exact domain records, relay/backup records with ``._via``,
address records, wildcard domain and address records, kind and relaying
prefixes); the addresses routed hit every kind of record, local accounts
and misses. The figure must stay flat (within 2x) as the table grows,
because lookups use hash maps and the wildcard index, never a scan.
"""

from __future__ import annotations

import argparse
import random
import time

from waypost.services.router import compile_table, route
from waypost.services.router.view import DirectorySnapshot, DirObject, DomainView, ObjectKind

SIZES = (100, 10_000, 100_000)


def make_table(size: int, rng: random.Random) -> str:
    lines = []
    for i in range(size):
        kind = i % 10
        if kind in (0, 1):
            lines.append(f"Relay:backup{i}.example = backup{i}.example._via")
        elif kind == 2:
            lines.append(f"www.site{i}.example = site{i}.example")
        elif kind == 3:
            lines.append(f"<info{i}@corp{i}.example> = user{i % 1000}@local.dom")
        elif kind == 4:
            lines.append(f"*.host{i}.example = *@host{i}.example")
        elif kind == 5:
            lines.append(f"<*-request@lists{i}.example> = *-owner@lists{i}.example")
        elif kind == 6:
            lines.append(f"NoRelay:filtered{i}.example = filtered{i}.example@127.0.0.1.26._via")
        elif kind == 7:
            lines.append(f"Signal:voip{i}.example = voip{i}.example@sip.provider.example.5060._via")
        elif kind == 8:
            lines.append(f"Relay:fw{i}.example = fw{i}.example@firewall{i}.example.25._via")
        else:
            lines.append(f"Access:*.pages{i}.example = *@fict{i}")
    rng.shuffle(lines)
    return "\n".join(lines) + "\n"


def make_addresses(size: int, count: int, rng: random.Random) -> list[tuple[str, bool]]:
    out = []
    for _ in range(count):
        i = rng.randrange(size)
        kind = rng.randrange(8)
        if kind == 0:
            out.append((f"bob@backup{i - i % 10}.example", False))
        elif kind == 1:
            out.append((f"x@www.site{i - i % 10 + 2}.example", False))
        elif kind == 2:
            out.append((f"info{i - i % 10 + 3}@corp{i - i % 10 + 3}.example", False))
        elif kind == 3:
            out.append((f"x@a{i}.host{i - i % 10 + 4}.example", True))
        elif kind == 4:
            out.append((f"dev-request@lists{i - i % 10 + 5}.example", False))
        elif kind == 5:
            out.append((f"user{rng.randrange(1000)}@local.dom", False))
        elif kind == 6:
            out.append((f"nobody@miss{i}.example", True))
        else:
            out.append((f"user{rng.randrange(1000)}", False))
    return out


def make_snapshot() -> DirectorySnapshot:
    objects = {("local.dom", f"user{i}"): DirObject(ObjectKind.ACCOUNT, f"user{i}")
               for i in range(1000)}
    objects.update({("main.dom", f"user{i}"): DirObject(ObjectKind.ACCOUNT, f"user{i}")
                    for i in range(1000)})
    return DirectorySnapshot(
        main_domain="main.dom",
        domains={"main.dom": DomainView("main.dom"), "local.dom": DomainView("local.dom")},
        objects=objects,
    )


def measure(size: int, lookups: int, seed: int) -> tuple[float, float, int]:
    rng = random.Random(seed)
    text = make_table(size, rng)
    started = time.perf_counter()
    table = compile_table(text, ["main.dom"])
    compile_s = time.perf_counter() - started
    snap = make_snapshot()
    addresses = make_addresses(size, lookups, rng)
    ok = 0
    started = time.perf_counter()
    for address, trusted in addresses:
        if route(address, "mail", trusted, table, snap).error is None:
            ok += 1
    elapsed = time.perf_counter() - started
    return lookups / elapsed, compile_s, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rates = []
    print(f"{'records':>10} {'lookups/s':>12} {'compile s':>10} {'routed':>8}")
    for size in SIZES:
        rate, compile_s, ok = measure(size, args.lookups, args.seed)
        rates.append(rate)
        print(f"{size:>10,} {rate:>12,.0f} {compile_s:>10.2f} {ok / args.lookups:>8.0%}")
    spread = max(rates) / min(rates)
    verdict = "flat" if spread <= 2 else "NOT flat"
    print(f"fastest/slowest = {spread:.2f} ({verdict}: must stay within 2x)")


if __name__ == "__main__":
    main()
