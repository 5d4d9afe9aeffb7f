"""The How To's two server-wide rules, end to end over real SMTP sessions
(rules.md §6), and rule loops in a running server.

A real Waypost on loopback with ``ClientIPAddresses`` = 127.0.0.2: mail sent
from 127.0.0.2 is trusted (a user of the server), mail from 127.0.0.1 comes
"from the Internet". Remote recipients (``*@example.com``) are relayed to an
SMTP sink through the Router record ``example.com =
example.com@127.0.0.1.PORT._via``. Rules are set with ``waypost rules set``
exactly as rules.md §6 writes them.
"""

from __future__ import annotations

import itertools
import smtplib
import time
from collections.abc import Iterator

import pytest
from tests.support.mailbox import read_mailbox
from tests.support.server import WaypostServer
from tests.support.smtp_sink import SMTPSink

UNTRUSTED = "127.0.0.1"
TRUSTED = "127.0.0.2"

COPY_OUTGOING = """
    ( 9, "Copy outgoing",
      ( ("Source", "in", "trusted,authenticated") ),
      ( ("Store in", "~security/outgoing") ) )
"""
DEPT1 = """
    ( 9, "dept1 limits",
      ( ("Return-Path", "is", "*@dept1.company.dom"),
        ("Return-Path", "is not", "boss@dept1.company.dom"),
        ("Any Recipient", "not in", "*@dept1.company.dom,supervisor@hq.company.dom") ),
      ( ("Reject with", "You are not allowed to send mail to these addresses"),
        ("Discard"), ("Stop Processing") ) )
"""
REFUSAL = "You are not allowed to send mail to these addresses"

ACCOUNTS = [
    "security",
    "alice",
    "ann@dept1.company.dom",
    "bob@dept1.company.dom",
    "boss@dept1.company.dom",
    "supervisor@hq.company.dom",
]
MAILBOXES = [
    ("security@main.dom", "outgoing"),
    ("alice@main.dom", "INBOX"),
    ("ann@dept1.company.dom", "INBOX"),
    ("bob@dept1.company.dom", "INBOX"),
    ("boss@dept1.company.dom", "INBOX"),
    ("supervisor@hq.company.dom", "INBOX"),
]

_counter = itertools.count(1)


@pytest.fixture(scope="module")
def sink() -> Iterator[SMTPSink]:
    with SMTPSink(hostname="mx.example.com") as s:
        yield s


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sink: SMTPSink) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("rules") / "var", domain="main.dom").init()
    srv.cli("domain", "add", "dept1.company.dom")
    srv.cli("domain", "add", "hq.company.dom")
    for account in ACCOUNTS:
        srv.cli("account", "add", account, "--password", "rules-pw-1234")
    srv.cli("settings", "set", "ClientIPAddresses", TRUSTED)
    srv.cli("router", "set", "-", input=f"example.com = example.com@127.0.0.1.{sink.port}._via\n")
    srv.cli("rules", "set", "-", input=f"( {COPY_OUTGOING}, {DEPT1} )")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def subject(label: str) -> str:
    return f"{label} #{next(_counter)} {time.monotonic_ns()}"


def send(
    server: WaypostServer,
    sender: str,
    rcpts: list[str],
    subj: str,
    *,
    source: str = TRUSTED,
    login: str | None = None,
) -> None:
    data = (
        f"From: {sender}\r\nTo: {', '.join(rcpts)}\r\nSubject: {subj}\r\n"
        f"Message-ID: <{abs(hash(subj))}@client.example>\r\n\r\nHello.\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30, source_address=(source, 0)) as c:
        c.ehlo("client.example")
        if login:
            c.login(login, "rules-pw-1234")
        assert c.sendmail(sender, rcpts, data) == {}


def stored(server: WaypostServer, account: str, mailbox: str, subj: str) -> list[bytes]:
    return [
        m
        for m in read_mailbox(server.data, account, mailbox)
        if f"Subject: {subj}\r\n".encode() in m
    ]


def at_sink(sink: SMTPSink, subj: str) -> list:
    return [m for m in sink.messages if f"Subject: {subj}\r\n".encode() in m.data]


def wait_stored(server: WaypostServer, account: str, subj: str, mailbox: str = "INBOX") -> bytes:
    return server.wait_for(
        lambda: stored(server, account, mailbox, subj), what=f"{subj!r} in {account}/{mailbox}"
    )[0]


def wait_sink(server: WaypostServer, sink: SMTPSink, subj: str):
    return server.wait_for(lambda: at_sink(sink, subj), what=f"{subj!r} at the sink")[0]


def everywhere(server: WaypostServer, sink: SMTPSink, subj: str) -> list[str]:
    """Every place a message with this subject reached."""
    places = [f"{a}/{b}" for a, b in MAILBOXES if stored(server, a, b, subj)]
    return places + (["sink"] if at_sink(sink, subj) else [])


def settle(server: WaypostServer, sink: SMTPSink) -> None:
    """Make sure earlier mail has had every chance to arrive: a later message
    to a local and a remote recipient has been delivered, and the queue is empty."""
    marker = subject("marker")
    send(server, "alice@main.dom", ["alice@main.dom", "x@example.com"], marker)
    wait_stored(server, "alice@main.dom", marker)
    wait_sink(server, sink, marker)
    server.wait_for(
        lambda: "the queue is empty" in server.cli("queue", "list").stdout, what="an empty queue"
    )


# -- 6.1 Keep a copy of all outgoing mail in ~security/outgoing ---------------------------


def test_mail_from_a_client_address_is_copied_and_still_delivered(server, sink) -> None:
    subj = subject("outgoing from a client address")
    send(server, "alice@main.dom", ["x@example.com", "bob@dept1.company.dom"], subj)
    message = wait_sink(server, sink, subj)
    assert message.rcpts == ["x@example.com"] and message.mail_from == "alice@main.dom"
    wait_stored(server, "bob@dept1.company.dom", subj)
    copy = wait_stored(server, "security@main.dom", subj, "outgoing")
    assert copy.startswith(b"Return-Path: <alice@main.dom>\r\n")
    shown = server.cli("mailbox", "show", "security", "outgoing").stdout
    assert subj in shown
    settle(server, sink)
    assert len(stored(server, "security@main.dom", "outgoing", subj)) == 1  # once
    assert read_mailbox(server.data, "security@main.dom") == []  # not in INBOX


def test_authenticated_mail_is_copied(server, sink) -> None:
    subj = subject("outgoing authenticated")
    send(server, "alice@main.dom", ["x@example.com"], subj, source=UNTRUSTED, login="alice")
    wait_sink(server, sink, subj)
    wait_stored(server, "security@main.dom", subj, "outgoing")


def test_mail_from_the_internet_is_not_copied(server, sink) -> None:
    subj = subject("inbound")
    send(server, "x@example.com", ["alice@main.dom"], subj, source=UNTRUSTED)
    wait_stored(server, "alice@main.dom", subj)
    settle(server, sink)
    assert stored(server, "security@main.dom", "outgoing", subj) == []


# -- 6.2 dept1 users write only inside dept1 and to the supervisor -----------------------------


@pytest.mark.parametrize(
    ("sender", "rcpts", "where"),
    [
        ("ann@dept1.company.dom", ["bob@dept1.company.dom"], ["bob@dept1.company.dom/INBOX"]),
        (
            "ann@dept1.company.dom",
            ["supervisor@hq.company.dom"],
            ["supervisor@hq.company.dom/INBOX"],
        ),
        ("boss@dept1.company.dom", ["x@example.com"], ["sink"]),
    ],
)
def test_dept1_rule_lets_these_through(server, sink, sender, rcpts, where) -> None:
    subj = subject(f"dept1 allowed {sender} {rcpts}")
    send(server, sender, rcpts, subj)
    if where == ["sink"]:
        wait_sink(server, sink, subj)
    else:
        account = where[0].split("/")[0]
        wait_stored(server, account, subj)
    settle(server, sink)
    # delivered, and (sent by a trusted client) copied for security
    assert sorted(everywhere(server, sink, subj)) == sorted([*where, "security@main.dom/outgoing"])


def test_mail_from_outside_to_dept1_is_delivered(server, sink) -> None:
    subj = subject("dept1 inbound")
    send(server, "x@example.com", ["ann@dept1.company.dom"], subj, source=UNTRUSTED)
    wait_stored(server, "ann@dept1.company.dom", subj)
    settle(server, sink)
    assert everywhere(server, sink, subj) == ["ann@dept1.company.dom/INBOX"]


@pytest.mark.parametrize(
    "rcpts",
    [
        ["x@example.com"],
        ["bob@dept1.company.dom", "x@example.com"],
        ["supervisor@hq.company.dom", "bob@dept1.company.dom", "x@example.com"],
    ],
)
def test_dept1_rule_refuses_the_whole_message_at_end_of_data(server, sink, rcpts) -> None:
    subj = subject(f"dept1 refused {rcpts}")
    data = f"From: ann@dept1.company.dom\r\nSubject: {subj}\r\n\r\nHello.\r\n".encode()
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30, source_address=(TRUSTED, 0)) as c:
        c.ehlo("client.example")
        assert c.mail("ann@dept1.company.dom")[0] == 250
        for rcpt in rcpts:  # every recipient is accepted at RCPT time...
            assert c.rcpt(rcpt)[0] == 250
        code, text = c.data(data)  # ...and the message refused after the final dot
        assert (code, text) == (554, f"5.7.1 {REFUSAL}".encode())
        assert c.noop()[0] == 250  # the session goes on
    settle(server, sink)
    assert everywhere(server, sink, subj) == []  # nothing to anyone, not even the copy


def test_dept1_refusal_through_sendmail_names_the_rule_text(server, sink) -> None:
    subj = subject("dept1 refused sendmail")
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(server, "ann@dept1.company.dom", ["x@example.com"], subj)
    assert info.value.smtp_code == 554
    assert REFUSAL.encode() in info.value.smtp_error
    assert "rejected by rule 'dept1 limits'" in server.logs()


# -- the variant: only mail that leaves the server --------------------------------------------


def test_any_route_variant_copies_only_mail_that_leaves(server, sink) -> None:
    variant = COPY_OUTGOING.replace(
        '("Source", "in", "trusted,authenticated")', '("Any Route", "is", "SMTP*")'
    )
    server.cli("rules", "set", "-", input=f"( {variant}, {DEPT1} )")
    try:
        local_only = subject("variant local")
        leaving = subject("variant leaving")
        inbound = subject("variant inbound")
        send(server, "alice@main.dom", ["bob@dept1.company.dom"], local_only)
        send(server, "alice@main.dom", ["x@example.com"], leaving)
        send(server, "y@example.com", ["alice@main.dom"], inbound, source=UNTRUSTED)
        wait_stored(server, "security@main.dom", leaving, "outgoing")
        settle(server, sink)
        assert stored(server, "security@main.dom", "outgoing", local_only) == []
        assert stored(server, "security@main.dom", "outgoing", inbound) == []
    finally:
        server.cli("rules", "set", "-", input=f"( {COPY_OUTGOING}, {DEPT1} )")


# -- account rules and loops in the running server ----------------------------------------------


def test_a_mirror_loop_between_accounts_ends_with_a_logged_error(server, sink) -> None:
    server.cli(
        "rules",
        "set",
        "--account",
        "ann@dept1.company.dom",
        "-",
        input='(5, "m", (), (("Mirror to", "bob@dept1.company.dom")))',
    )
    server.cli(
        "rules",
        "set",
        "--account",
        "bob@dept1.company.dom",
        "-",
        input='(5, "m", (), (("Mirror to", "ann@dept1.company.dom")))',
    )
    try:
        subj = subject("mirror loop")
        send(server, "x@example.com", ["ann@dept1.company.dom"], subj, source=UNTRUSTED)
        server.wait_for(
            lambda: len(stored(server, "ann@dept1.company.dom", "INBOX", subj)) == 2,
            what="the mirrored copy back in ann's INBOX",
        )
        settle(server, sink)
        assert len(stored(server, "ann@dept1.company.dom", "INBOX", subj)) == 2
        assert len(stored(server, "bob@dept1.company.dom", "INBOX", subj)) == 1
        assert "rule loop: the rules of ann@dept1.company.dom already generated" in server.logs()
    finally:
        for account in ("ann@dept1.company.dom", "bob@dept1.company.dom"):
            server.cli("rules", "set", "--account", account, "-", input="()")


def test_an_account_rule_rejects_with_a_dsn(server, sink) -> None:
    server.cli(
        "rules",
        "set",
        "--account",
        "supervisor@hq.company.dom",
        "-",
        input='(5, "no alice", (("From", "is", "alice@*")),'
        ' (("Reject with", "The supervisor does not read alice")))',
    )
    try:
        subj = subject("to the supervisor")
        send(server, "alice@main.dom", ["supervisor@hq.company.dom"], subj)
        dsn = server.wait_for(
            lambda: [
                m
                for m in read_mailbox(server.data, "alice@main.dom")
                if b"The supervisor does not read alice" in m
            ],
            what="the DSN with the rule's text",
        )[0]
        assert b"supervisor@hq.company.dom" in dsn and b"Return-Path: <>" in dsn
        assert stored(server, "supervisor@hq.company.dom", "INBOX", subj) == []
    finally:
        server.cli("rules", "set", "--account", "supervisor@hq.company.dom", "-", input="()")
