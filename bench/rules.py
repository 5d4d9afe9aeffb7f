"""Cost per message of server-wide rules: 0 rules and 100 rules.

Not a test: run ``.venv/bin/python bench/rules.py``. The 100 rules are a
realistic administrator's mix (recipient and sender domain lists, a
dept1-style restriction, spam-header tagging, subject keywords, size
limits, source + route archiving, VIP senders, submit-address networks,
display names); a few of them match some of the messages (Add Header, Tag
Subject, Mark, Store in), most do not, which is the usual case. The
messages are realistic too: a short personal mail, a mail with encoded
words and a dozen Received lines, a newsletter, a 200 KB message with an
attachment.

Two figures per rule count:

* ``engine``: what a message costs in the rules themselves -- building the
  message view (header parse, RFC 2047 decoding on demand), evaluating
  every rule, and rewriting the bytes when a rule changed the header;
* ``enqueuer``: ``Enqueuer.submit`` in the running event loop over a queue
  that returns at once, i.e. the engine plus the worker-thread hops and the
  store-version check the server pays (queueing itself excluded: it costs
  the same with or without rules).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from waypost.services.container import open_services
from waypost.services.message import Recipient, Submission
from waypost.services.router.route import Route
from waypost.services.rules import actions, book
from waypost.services.rules.engine import CompiledRules, MessageView, compile_rules, evaluate
from waypost.services.rules.enqueue import Enqueuer, sources
from waypost.services.rules.model import Level
from waypost.services.rules.text import parse_rules


def make_rules(count: int) -> str:
    rules = []
    for i in range(count):
        kind = i % 10
        name = f'"rule {i}"'
        if kind in (0, 1, 2):
            rules.append(
                f'({1 + i % 9}, {name}, (("Any Recipient", "in", "*@domain{i}.example,'
                f'*@sub.domain{i}.example, postmaster@domain{i}.example")),'
                f' (("Store in", "~archive/d{i}"), ("Add Header", "X-Domain: {i}")))'
            )
        elif kind == 3:
            rules.append(
                f'({1 + i % 9}, {name}, (("Return-Path", "is", "*@dept{i}.company.dom"),'
                f' ("Return-Path", "is not", "boss@dept{i}.company.dom"),'
                f' ("Any Recipient", "not in", "*@dept{i}.company.dom,'
                f'supervisor@hq.company.dom")), (("Reject with", "Not allowed"),'
                ' ("Discard"), ("Stop Processing")))'
            )
        elif kind == 4:
            rules.append(
                f'({1 + i % 9}, {name}, (("Header Field", "is", "X-Spam-Score: {i % 7}*"),'
                ' ("Human Generated", "is", "true")), (("Tag Subject", "[SPAM]"),'
                ' ("Mark", "Junk")))'
            )
        elif kind == 5:
            rules.append(
                f'({1 + i % 9}, {name}, (("Subject", "is", "*keyword{i}*")), (("Mark", "Flagged")))'
            )
        elif kind == 6:
            rules.append(
                f'({1 + i % 9}, {name}, (("Message Size", "greater than", "{10 + i}M")),'
                ' (("Reject with", "Too big")))'
            )
        elif kind == 7:
            rules.append(
                f'({1 + i % 9}, {name}, (("Source", "in", "trusted,authenticated"),'
                f' ("Any Route", "is", "SMTP(relay{i}*")),'
                ' (("Store in", "~archive/out")))'
            )
        elif kind == 8:
            rules.append(
                f'({1 + i % 9}, {name}, (("From", "in", "*@vip{i}.example,'
                f'ceo@corp{i}.example")), (("Add Header", "X-VIP: yes")))'
            )
        else:
            rules.append(
                f'({1 + i % 9}, {name}, (("Submit Address", "in", "10.{i}.0.0/16"),'
                f' ("\'From\' Name", "is", "*Name{i}*")), (("Mark", "Seen")))'
            )
    if not rules:
        return "()"
    # two that match some of the messages, as real rule sets have
    rules[8] = '(9, "vip", (("From", "is", "*@vip8.example")), (("Add Header", "X-VIP: yes")))'
    rules[14] = (
        '(5, "spam", (("Header Field", "is", "X-Spam-Score: 9*")),'
        ' (("Tag Subject", "[SPAM]"), ("Mark", "Junk")))'
    )
    return "(" + ",\n".join(rules) + ")"


def received(n: int) -> bytes:
    return b"".join(
        f"Received: from relay{i}.example.net (relay{i}.example.net [192.0.2.{i}])\r\n"
        f"\tby mx{i}.example.org (Postfix) with ESMTPS id ABC{i}DEF\r\n"
        f"\tfor <alice@main.dom>; Mon, 15 Jan 2024 12:{i:02d}:00 +0000\r\n".encode()
        for i in range(n)
    )


MESSAGES = [
    (
        b"Received: from client ([192.168.1.20])\r\n\tby main.dom (Waypost); now\r\n"
        b"From: Bob Smith <bob@vip8.example>\r\nTo: Alice <alice@main.dom>\r\n"
        b"Subject: Lunch tomorrow?\r\nDate: Mon, 15 Jan 2024 12:00:00 +0000\r\n"
        b"Message-ID: <1@vip8.example>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + b"Shall we meet at noon?\r\n" * 20
    ),
    (
        received(12) + b"From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.de>\r\n"
        b"To: alice@main.dom, bob@other.dom\r\nCc: carol@main.dom\r\n"
        b"Subject: =?UTF-8?B?0J/RgNC40LLQtdGCLCDQvNC40YAh?=\r\n"
        b"X-Spam-Score: 9.1\r\nX-Spam-Flag: YES\r\n"
        b"Message-ID: <2@example.de>\r\n\r\n" + b"Hallo Welt.\r\n" * 50
    ),
    (
        received(4)
        + b"From: News <news@lists.example.com>\r\nTo: subscribers@lists.example.com\r\n"
        b"Subject: Weekly newsletter: keyword55 inside\r\nList-Id: <weekly.lists.example.com>\r\n"
        b"Precedence: list\r\nMessage-ID: <3@lists.example.com>\r\n\r\n"
        + b"<p>News of the week</p>\r\n"
        * 200
    ),
    (
        received(3) + b"From: Carol <carol@partner.example>\r\nTo: alice@main.dom\r\n"
        b"Subject: Contract draft\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n\r\nSee attached.\r\n"
        b"--b1\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b"JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZURlY29kZT4+\r\n"
        * 2600
        + b"--b1--\r\n"
    ),
]
ENVELOPES = [
    ("bob@vip8.example", ["alice@main.dom"], ["LOCAL(alice@main.dom)"], True),
    (
        "juergen@example.de",
        ["alice@main.dom", "bob@other.dom", "carol@main.dom"],
        ["LOCAL(alice@main.dom)", "SMTP(other.dom)bob@other.dom", "LOCAL(carol@main.dom)"],
        False,
    ),
    ("bounces@lists.example.com", ["alice@main.dom"], ["LOCAL(alice@main.dom)"], False),
    ("carol@partner.example", ["x@relay7.example"], ["SMTP(relay7.example)x@relay7.example"], True),
]


def engine_cost(rules: CompiledRules, rounds: int) -> float:
    """Microseconds per message: view + evaluation + rewrite."""
    start = time.perf_counter()
    count = 0
    for _ in range(rounds):
        for body, (sender, rcpts, routes, trusted) in zip(MESSAGES, ENVELOPES, strict=True):
            if rules:
                view = MessageView.of_message(
                    body,
                    mail_from=sender,
                    recipients=rcpts,
                    routes=routes,
                    sources=sources("ESMTP", trusted, None, trusted),
                    submit_address="192.168.1.20",
                )
                decision = evaluate(rules, view)
                if decision.changes_message:
                    actions.rewrite(body, decision.headers, decision.tags)
            count += 1
    return (time.perf_counter() - start) / count * 1e6


class NullQueue:
    async def submit(self, sub: Submission) -> str:
        return "X"


async def enqueuer_cost(enqueuer: Enqueuer, rounds: int) -> float:
    subs = []
    for body, (sender, rcpts, routes, trusted) in zip(MESSAGES, ENVELOPES, strict=True):
        recipients = []
        for address, text in zip(rcpts, routes, strict=True):
            module, _, rest = text.partition("(")
            queue, _, addr = rest.partition(")")
            recipients.append(Recipient(address, Route(module, queue, addr)))
        subs.append(
            Submission(
                sender,
                recipients,
                body,
                client_ip="192.168.1.20",
                trusted=trusted,
                protocol="ESMTP",
            )
        )
    start = time.perf_counter()
    count = 0
    for _ in range(rounds):
        for sub in subs:
            try:
                await enqueuer.submit(sub)
            except Exception:
                pass
            count += 1
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000, help="passes over the 4 messages")
    args = parser.parse_args()
    print(f"{'rules':>5}  {'engine µs/msg':>14}  {'enqueuer µs/msg':>16}  compile")
    for count in (0, 100):
        parsed = parse_rules(make_rules(count), Level.SERVER)
        t0 = time.perf_counter()
        compiled = compile_rules((Level.SERVER, r) for r in parsed)
        compile_ms = (time.perf_counter() - t0) * 1000
        engine_cost(compiled, 50)  # warm up
        engine = engine_cost(compiled, args.rounds)
        with tempfile.TemporaryDirectory() as tmp:
            services = open_services(Path(tmp) / "var", create=True)
            try:
                services.directory.init_server("main.dom")
                services.directory.create_account("archive")
                book.save(services, Level.SERVER, None, parsed)
                version = services.store.version  # what Reception saw at RCPT time
                enqueuer = Enqueuer(
                    services, NullQueue(), is_client=lambda ip: True, version=version
                )
                asyncio.run(enqueuer_cost(enqueuer, 50))
                queued = asyncio.run(enqueuer_cost(enqueuer, max(args.rounds // 4, 100)))
            finally:
                services.close()
        print(f"{count:>5}  {engine:>14.1f}  {queued:>16.1f}  {compile_ms:.1f} ms")


if __name__ == "__main__":
    main()
