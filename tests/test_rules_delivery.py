"""Rules in the running services, over a real store and queue: server-wide
rules at submission (the Enqueuer), domain and account rules at local
delivery, generated messages, loops and failing actions."""

from __future__ import annotations

import asyncio
import email
import logging
from email import policy

import pytest
from tests.support.delivery import harness, run
from tests.support.services import body, routed, submission

from waypost.services.container import Services
from waypost.services.mailstore import Mailstore
from waypost.services.rules import book
from waypost.services.rules.engine import LOOP_HEADER
from waypost.services.rules.enqueue import (
    CHAIN_PARAM,
    MARK_PARAM,
    Enqueuer,
    RuleRejected,
    generated_id,
)
from waypost.services.rules.model import Level
from waypost.services.rules.text import parse_rules
from waypost.storage.interface import NotFound


def set_rules(svc: Services, level: Level, target: str | None, text: str) -> None:
    book.save(svc, level, target, parse_rules(text, level))


def box(svc: Services, account: str, mailbox: str = "INBOX") -> list[bytes]:
    store = Mailstore(svc.store)
    try:
        return [
            store.read_message(account, mailbox, m.uid)
            for m in store.list_messages(account, mailbox)
        ]
    except NotFound:
        return []


def flags(svc: Services, account: str, mailbox: str = "INBOX") -> list[tuple[str, ...]]:
    return [m.flags for m in Mailstore(svc.store).list_messages(account, mailbox)]


def deliver_all(
    services: Services,
    *subs,
    client: bool = False,
    rounds: int = 3,
) -> list[str | Exception]:
    """Submit through the Enqueuer (server rules), then run delivery rounds."""

    async def go() -> list[str | Exception]:
        queue, runner = await harness(services)
        enqueuer = Enqueuer(services, queue, is_client=lambda ip: client)
        out: list[str | Exception] = []
        try:
            for sub in subs:
                try:
                    out.append(await enqueuer.submit(sub))
                except RuleRejected as exc:
                    out.append(exc)
            for _ in range(rounds):
                await runner.run_once()
            await enqueuer.drain()
        finally:
            await queue.close()
        return out

    return run(go)


@pytest.fixture
def users(svc: Services) -> Services:
    d = svc.directory
    for name in ("security", "bob", "archive"):
        d.create_account(name)
    return svc


# -- server-wide rules at submission ----------------------------------------------------


def test_server_store_in_copies_into_a_foreign_mailbox_created_on_first_use(users) -> None:
    set_rules(
        users,
        Level.SERVER,
        None,
        '(9, "Copy outgoing", (("Source", "in", "trusted,authenticated")),'
        ' (("Store in", "~security/outgoing")))',
    )
    sub = submission(users, "alice@main.dom")
    sub.trusted = True
    sub.auth_user = "bob@main.dom"
    deliver_all(users, sub)
    assert len(box(users, "alice@main.dom")) == 1  # the original is delivered
    (copy,) = box(users, "security@main.dom", "outgoing")
    assert copy.endswith(body())
    assert box(users, "security@main.dom") == []  # not also in INBOX
    assert users.store.queue_list() == []
    # untrusted mail is not copied
    deliver_all(users, submission(users, "alice@main.dom"))
    assert len(box(users, "security@main.dom", "outgoing")) == 1


def test_server_reject_queues_nothing(users) -> None:
    set_rules(
        users,
        Level.SERVER,
        None,
        '(9, r, (("Subject", "is", "*forbidden*")), (("Reject with", "Not here"),'
        ' ("Redirect to", "bob@main.dom"), ("Store in", "~security/x")))',
    )
    (result,) = deliver_all(
        users, submission(users, "alice@main.dom", data=body("a forbidden word"))
    )
    assert isinstance(result, RuleRejected) and result.text == "Not here" and result.rule == "r"
    assert users.store.queue_list() == []
    assert box(users, "alice@main.dom") == box(users, "bob@main.dom") == []


def test_server_discard_removes_every_recipient_but_keeps_store_in_copies(users) -> None:
    set_rules(
        users,
        Level.SERVER,
        None,
        '((9, d, (("Subject", "is", "drop")), (("Discard"))),'
        ' (8, m, (("Subject", "is", "move")), (("Store in", "~archive/moved"), ("Discard"))))',
    )
    first, second = deliver_all(
        users,
        submission(users, "alice@main.dom", data=body("drop")),
        submission(users, "alice@main.dom", data=body("move")),
    )
    assert isinstance(first, str) and isinstance(second, str)
    assert box(users, "alice@main.dom") == []
    assert len(box(users, "archive@main.dom", "moved")) == 1


def test_a_failing_store_in_never_loses_the_message(users, caplog) -> None:
    set_rules(
        users, Level.SERVER, None, '(9, m, (), (("Store in", "~nosuchuser/box"), ("Discard")))'
    )
    with caplog.at_level(logging.ERROR, "waypost.rules"):
        deliver_all(users, submission(users, "alice@main.dom"))
    assert len(box(users, "alice@main.dom")) == 1  # Discard ignored: the copy failed
    assert "no such account" in caplog.text and "Discard ignored" in caplog.text


def test_server_add_header_tag_subject_and_mark(users) -> None:
    set_rules(
        users,
        Level.SERVER,
        None,
        '(9, t, (("Header Field", "is", "X-Spam-Flag: YES")), (("Tag Subject", "[SPAM]"),'
        ' ("Add Header", "X-Rule: spam"), ("Mark", "Junk, Seen")))',
    )
    deliver_all(
        users,
        submission(
            users,
            "alice@main.dom",
            data=body("=?UTF-8?B?0J/RgNC40LLQtdGC?=", extra=b"X-Spam-Flag: YES\r\n"),
        ),
    )
    (stored,) = box(users, "alice@main.dom")
    msg = email.message_from_bytes(stored, policy=policy.default)
    assert str(msg["Subject"]) == "[SPAM] Привет" and msg["X-Rule"] == "spam"
    assert sorted(flags(users, "alice@main.dom")[0]) == ["$Junk", "\\Seen"]


def test_server_redirect_mirror_keep_the_sender_and_are_not_ruled_again(users) -> None:
    set_rules(
        users,
        Level.SERVER,
        None,
        '(9, r, (("Any Recipient", "is", "alice@*")), (("Redirect to", "bob@main.dom"),'
        ' ("Mirror to", "archive@main.dom")))',
    )
    deliver_all(users, submission(users, "alice@main.dom", mail_from="ext@remote.example"))
    assert len(box(users, "alice@main.dom")) == 1
    (redirected,) = box(users, "bob@main.dom")
    assert redirected.startswith(b"Return-Path: <ext@remote.example>\r\n")
    assert f"{LOOP_HEADER}: server@main.dom".encode() in redirected
    (mirrored,) = box(users, "archive@main.dom")
    assert mirrored == b"Return-Path: <ext@remote.example>\r\n" + body()  # exact copy


# -- domain and account rules at local delivery ----------------------------------------------


def test_account_store_in_creates_the_mailbox_and_keeps_inbox(users) -> None:
    set_rules(
        users,
        Level.ACCOUNT,
        "alice",
        '(5, s, (("Subject", "is", "*report*")),'
        ' (("Store in", "Reports/2024"), ("Mark", "Flagged")))',
    )
    deliver_all(users, submission(users, "alice@main.dom", data=body("monthly report")))
    assert len(box(users, "alice@main.dom", "Reports/2024")) == 1
    assert len(box(users, "alice@main.dom")) == 1
    assert flags(users, "alice@main.dom", "Reports/2024") == [("\\Flagged",)]
    (listed,) = Mailstore(users.store).list_messages("alice@main.dom", "Reports/2024")
    assert listed.summary["subject"] == "monthly report"
    assert flags(users, "alice@main.dom") == [("\\Flagged",)]


def test_store_in_then_discard_moves_the_message(users) -> None:
    set_rules(
        users,
        Level.ACCOUNT,
        "alice",
        '(5, s, (), (("Store in", "Junk"), ("Discard"), ("Stop Processing")))',
    )
    deliver_all(users, submission(users, "alice@main.dom"))
    assert box(users, "alice@main.dom") == [] and len(box(users, "alice@main.dom", "Junk")) == 1
    assert users.store.queue_list() == []


def test_store_in_inbox_stores_once(users) -> None:
    set_rules(users, Level.ACCOUNT, "alice", '(5, s, (), (("Store in", "INBOX")))')
    deliver_all(users, submission(users, "alice@main.dom"))
    assert len(box(users, "alice@main.dom")) == 1


def test_account_discard_alone_stores_nothing(users) -> None:
    set_rules(users, Level.ACCOUNT, "alice", '(5, s, (("From", "is", "bob@*")), (("Discard")))')
    deliver_all(users, submission(users, "alice@main.dom"))
    assert box(users, "alice@main.dom") == [] and users.store.queue_list() == []


def test_account_header_changes_go_into_the_copy_not_the_blob(users) -> None:
    set_rules(
        users,
        Level.ACCOUNT,
        "alice",
        '(5, s, (), (("Add Header", "X-Filed: by rule"), ("Tag Subject", "[list]")))',
    )
    deliver_all(users, submission(users, "alice@main.dom", "bob@main.dom"))
    (alice,) = box(users, "alice@main.dom")
    (bob,) = box(users, "bob@main.dom")
    assert b"X-Filed: by rule\r\n" in alice and b"Subject: [list] hello\r\n" in alice
    assert alice.count(b"Subject:") == 1
    assert b"X-Filed" not in bob and b"Subject: hello\r\n" in bob
    listed = Mailstore(users.store).list_messages("alice@main.dom")
    assert listed[0].summary["subject"] == "[list] hello"


def test_account_reject_returns_a_dsn_with_the_text(users) -> None:
    set_rules(
        users,
        Level.ACCOUNT,
        "alice",
        '(5, s, (("From", "is", "bob@remote.example")), (("Reject with", "Not from you"),'
        ' ("Store in", "Never")))',
    )
    deliver_all(
        users, submission(users, "alice@main.dom", "bob@main.dom", mail_from="bob@main.dom")
    )
    assert box(users, "alice@main.dom") == [] and box(users, "alice@main.dom", "Never") == []
    inbox = box(users, "bob@main.dom")
    assert len(inbox) == 2  # bob's own copy, and the DSN about alice
    dsn = next(m for m in inbox if b"Return-Path: <>" in m)
    assert b"Not from you" in dsn and b"alice@main.dom" in dsn


def test_domain_rules_run_before_account_rules(users) -> None:
    set_rules(
        users,
        Level.DOMAIN,
        "main.dom",
        '(5, "domain copy", (), (("Store in", "~archive/all"), ("Tag Subject", "[D]")))',
    )
    set_rules(
        users,
        Level.ACCOUNT,
        "alice",
        '(5, "own", (("Subject", "is", "[D]*")), (("Store in", "Tagged")))',
    )
    deliver_all(users, submission(users, "alice@main.dom"))
    assert len(box(users, "archive@main.dom", "all")) == 1
    assert len(box(users, "alice@main.dom", "Tagged")) == 1


def test_existing_mailbox_and_preference_conditions(users) -> None:
    users.directory.set_account_settings("alice", {"Language": "german"})
    set_rules(
        users,
        Level.ACCOUNT,
        "alice",
        '((5, j, (("Existing Mailbox", "is", "Junk")), (("Store in", "Junk"))),'
        ' (4, p, (("Preference", "is", "Language=german")), (("Mark", "Label1"))))',
    )
    deliver_all(users, submission(users, "alice@main.dom"))
    assert box(users, "alice@main.dom", "Junk") == []  # no Junk yet: not created by the test
    assert flags(users, "alice@main.dom") == [("$Label1",)]
    Mailstore(users.store).create_mailbox("alice@main.dom", "Junk")
    deliver_all(users, submission(users, "alice@main.dom"))
    assert len(box(users, "alice@main.dom", "Junk")) == 1


def test_account_store_into_a_missing_foreign_mailbox_falls_back_to_inbox(users, caplog) -> None:
    set_rules(
        users, Level.ACCOUNT, "alice", '(5, s, (), (("Store in", "~bob/shared"), ("Discard")))'
    )
    with caplog.at_level(logging.ERROR, "waypost.rules"):
        deliver_all(users, submission(users, "alice@main.dom"))
    assert len(box(users, "alice@main.dom")) == 1  # not lost
    assert box(users, "bob@main.dom", "shared") == []
    assert "Store in '~bob/shared' failed" in caplog.text


def test_account_store_into_a_foreign_mailbox_with_the_insert_right(users) -> None:
    Mailstore(users.store).create_mailbox("bob@main.dom", "shared")
    users.store.mail_set_acl("main.dom", "bob", "shared", "alice", "li")
    set_rules(users, Level.ACCOUNT, "alice", '(5, s, (), (("Store in", "~bob/shared")))')
    deliver_all(users, submission(users, "alice@main.dom"))
    assert len(box(users, "bob@main.dom", "shared")) == 1
    assert len(box(users, "alice@main.dom")) == 1


def test_redirect_forward_and_reply_from_an_account(users) -> None:
    set_rules(
        users,
        Level.ACCOUNT,
        "alice",
        '(5, s, (), (("Redirect to", "bob@main.dom"), ("Forward to", "archive@main.dom"),'
        ' ("Reply with", "Alice is away")))',
    )
    deliver_all(users, submission(users, "alice@main.dom", mail_from="security@main.dom"), rounds=4)
    assert len(box(users, "alice@main.dom")) == 1
    (redirected,) = box(users, "bob@main.dom")
    assert redirected.startswith(b"Return-Path: <security@main.dom>\r\n")
    assert f"{LOOP_HEADER}: alice@main.dom".encode() in redirected
    (forwarded,) = box(users, "archive@main.dom")
    fwd = email.message_from_bytes(forwarded, policy=policy.default)
    assert fwd["Return-Path"] == "<alice@main.dom>" and str(fwd["Subject"]) == "Fwd: hello"
    (reply,) = box(users, "security@main.dom")
    msg = email.message_from_bytes(reply, policy=policy.default)
    assert msg["Return-Path"] == "<>" and msg["Auto-Submitted"] == "auto-replied"
    assert "Alice is away" in msg.get_content()


def test_messages_generated_by_account_rules_go_through_server_rules(users) -> None:
    set_rules(
        users,
        Level.SERVER,
        None,
        '(5, tag, (("Source", "is", "rules")), (("Add Header", "X-Made-By: rules")))',
    )
    set_rules(users, Level.ACCOUNT, "alice", '(5, s, (), (("Redirect to", "bob@main.dom")))')
    deliver_all(users, submission(users, "alice@main.dom"))
    (redirected,) = box(users, "bob@main.dom")
    assert b"X-Made-By: rules\r\n" in redirected
    assert b"X-Made-By" not in box(users, "alice@main.dom")[0]


# -- loops -----------------------------------------------------------------------------------


def test_redirect_to_self_is_refused_and_logged(users, caplog) -> None:
    set_rules(users, Level.ACCOUNT, "alice", '(5, s, (), (("Redirect to", "alice@main.dom")))')
    with caplog.at_level(logging.ERROR, "waypost.rules"):
        deliver_all(users, submission(users, "alice@main.dom"), rounds=5)
    assert len(box(users, "alice@main.dom")) == 1
    assert "rule loop" in caplog.text and users.store.queue_list() == []


def test_a_mirror_chain_between_two_accounts_stops(users, caplog) -> None:
    set_rules(users, Level.ACCOUNT, "alice", '(5, m, (), (("Mirror to", "bob@main.dom")))')
    set_rules(users, Level.ACCOUNT, "bob", '(5, m, (), (("Mirror to", "alice@main.dom")))')
    with caplog.at_level(logging.ERROR, "waypost.rules"):
        deliver_all(users, submission(users, "alice@main.dom"), rounds=10)
    assert len(box(users, "alice@main.dom")) == 2  # the original and bob's mirror
    assert len(box(users, "bob@main.dom")) == 1
    assert "rule loop: the rules of alice@main.dom already generated" in caplog.text
    assert users.store.queue_list() == []


def test_a_redirect_ring_over_many_accounts_is_bounded(users, caplog) -> None:
    names = ["r1", "r2", "r3", "r4", "r5", "r6", "r7"]
    for name in names:
        users.directory.create_account(name)
    for name, nxt in zip(names, names[1:] + names[:1], strict=True):
        set_rules(
            users,
            Level.ACCOUNT,
            name,
            f'(5, ring, (), (("Redirect to", "{nxt}@main.dom"), ("Discard")))',
        )
    with caplog.at_level(logging.ERROR, "waypost.rules"):
        deliver_all(users, submission(users, "r1@main.dom"), rounds=12)
    assert users.store.queue_list() == []
    assert "owners already generated" in caplog.text
    # the message ended where generation stopped: delivered, not lost
    assert sum(len(box(users, f"{n}@main.dom")) for n in names) == 1


def test_loop_header_from_another_trip_stops_the_owner(users, caplog) -> None:
    set_rules(users, Level.ACCOUNT, "alice", '(5, s, (), (("Redirect to", "bob@remote.example")))')
    data = f"{LOOP_HEADER}: alice@main.dom\r\n".encode() + body()
    with caplog.at_level(logging.ERROR, "waypost.rules"):
        deliver_all(users, submission(users, "alice@main.dom", data=data))
    assert len(box(users, "alice@main.dom")) == 1
    assert [m for m in users.store.queue_list() if m.mail_from != ""] == []
    assert "already generated" in caplog.text


def test_a_repeated_delivery_does_not_send_generated_messages_twice(users) -> None:
    set_rules(users, Level.ACCOUNT, "alice", '(5, s, (), (("Redirect to", "bob@remote.example")))')

    async def go() -> None:
        queue, runner = await harness(users)
        try:
            sub = submission(users, "alice@main.dom", QueueID="M1")
            await queue.submit(sub)
            message = users.store.queue_get("M1")

            await runner.local.deliver("alice@main.dom", [message])
            # as if the store had failed after the redirect was queued: deliver again
            users.store.queue_commit([], [])
            await runner.local.deliver("alice@main.dom", [message])
        finally:
            await queue.close()

    run(go)
    queued = [m for m in users.store.queue_list() if m.recipients[0].module == "SMTP"]
    assert [m.id for m in queued] == [generated_id("M1", "alice@main.dom", 0)]
    assert queued[0].params[CHAIN_PARAM] == "alice@main.dom"
    assert len(box(users, "alice@main.dom")) == 1


def test_server_mark_param_travels_with_the_message(users) -> None:
    set_rules(users, Level.SERVER, None, '(5, m, (), (("Mark", "Flagged")))')

    async def go() -> str:
        queue, _ = await harness(users)
        try:
            return await Enqueuer(users, queue).submit(submission(users, "alice@main.dom"))
        finally:
            await queue.close()

    queued = users.store.queue_get(run(go))
    assert queued.params[MARK_PARAM] == "\\Flagged"


def test_no_rules_means_the_message_is_queued_untouched(users) -> None:
    sub = submission(users, "alice@main.dom")
    (queue_id,) = deliver_all(users, sub, rounds=0)
    assert users.store.blob_get(users.store.queue_get(queue_id).blob) == body()
    assert routed(users, "alice@main.dom")[0].route.module == "LOCAL"


# -- Execute, Reply to All -------------------------------------------------------------------


def test_execute_runs_the_program_at_both_levels(users, tmp_path) -> None:
    import sys

    script = tmp_path / "save.py"
    script.write_text(
        "import sys\nout = sys.argv[1]\nopen(out, 'wb').write(sys.stdin.buffer.read())\n"
    )
    server_out, account_out = tmp_path / "server.eml", tmp_path / "account.eml"
    set_rules(
        users,
        Level.SERVER,
        None,
        f'(5, x, (), (("Execute", "[RCPT] {sys.executable} {script} {server_out}")))',
    )
    set_rules(
        users,
        Level.ACCOUNT,
        "alice",
        f'(5, x, (), (("Execute", "[RETPATH] {sys.executable} {script} {account_out}")))',
    )
    deliver_all(users, submission(users, "alice@main.dom"))
    assert server_out.read_bytes() == b"Envelope-To: alice@main.dom\r\n" + body()
    assert account_out.read_bytes() == b"Return-Path: <bob@remote.example>\r\n" + body()
    assert len(box(users, "alice@main.dom")) == 1


def test_reply_to_all_answers_the_sender_and_the_other_recipients(users) -> None:
    set_rules(users, Level.ACCOUNT, "alice", '(5, r, (), (("Reply to All with", "Noted.")))')
    data = (
        b"From: Security <security@main.dom>\r\nTo: alice@main.dom, bob@main.dom\r\n"
        b"Cc: archive@main.dom\r\nSubject: plan\r\nMessage-ID: <p1@main.dom>\r\n\r\nHi\r\n"
    )
    deliver_all(
        users, submission(users, "alice@main.dom", mail_from="security@main.dom", data=data)
    )
    for account in ("security@main.dom", "bob@main.dom", "archive@main.dom"):
        (reply,) = box(users, account)
        msg = email.message_from_bytes(reply, policy=policy.default)
        assert str(msg["Subject"]) == "Re: plan" and msg["In-Reply-To"] == "<p1@main.dom>"
    assert len(box(users, "alice@main.dom")) == 1  # no reply to herself, her copy stored


def test_users_setting_their_own_rules_are_limited_by_rules_allowed(users) -> None:
    from waypost.services.rules.model import RuleError

    redirect = parse_rules('(5, r, (), (("Redirect to", "bob@main.dom")))', Level.ACCOUNT)
    with pytest.raises(RuleError, match="RulesAllowed is 'Filter Only'"):
        book.save(users, Level.ACCOUNT, "alice", redirect, by_user=True)
    assert book.load(users, Level.ACCOUNT, "alice") == []
    users.directory.set_account_settings("alice", {"RulesAllowed": "All But Exec"})
    book.save(users, Level.ACCOUNT, "alice", redirect, by_user=True)
    book.save(users, Level.ACCOUNT, "bob", redirect)  # an administrator is not limited
    assert book.load(users, Level.ACCOUNT, "bob") == redirect


def test_account_rules_see_a_client_address_as_the_current_setting_says(users) -> None:
    """Source ``client`` at delivery is ClientIPAddresses as of the runner's
    last settings refresh: a change reaches a running delivery at the next tick."""
    set_rules(
        users, Level.ACCOUNT, "alice", '(5, c, (("Source", "is", "client")), (("Mark", "Flagged")))'
    )

    async def go() -> None:
        queue, runner = await harness(users)
        try:
            await queue.submit(submission(users, "alice@main.dom"))  # from 192.0.2.1
            await runner.run_once()
            await asyncio.to_thread(users.set_setting, "ClientIPAddresses", "192.0.2.0/24")
            await queue.submit(submission(users, "alice@main.dom"))
            await runner.run_once()
        finally:
            await queue.close()

    run(go)
    assert flags(users, "alice@main.dom") == [(), ("\\Flagged",)]
