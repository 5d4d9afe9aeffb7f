"""``waypost queue ...`` and ``waypost mailbox ...`` as an administrator uses them."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner, Result
from tests.support.delivery import FakeRelay, harness, run
from tests.support.services import submission

from waypost.cli import mailbox as mailbox_cli
from waypost.cli import queue as queue_cli
from waypost.cli.common import data_option
from waypost.services.container import Services


@click.group()
@data_option
def cli() -> None:
    """The nouns under test, as cli/main.py registers them."""


for command in queue_cli.COMMANDS + mailbox_cli.COMMANDS:
    cli.add_command(command)


@pytest.fixture
def wp(svc: Services):
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> Result:
        result = runner.invoke(cli, ["--data", str(svc.data_dir), *args])
        assert result.exit_code == code, (args, result.output, result.exception)
        return result

    return invoke


def queue_up(svc: Services, *subs: object, deliver: bool = False) -> list[str]:
    async def go() -> list[str]:
        queue, runner = await harness(svc, FakeRelay({"y@friend.com": "deferred"}))
        try:
            ids = [await queue.submit(s) for s in subs]  # type: ignore[arg-type]
            if deliver:
                await runner.run_once()
            return ids
        finally:
            await queue.close()

    return run(go)


def test_list_shows_one_line_per_message_and_queue(svc: Services, wp) -> None:
    svc.set_setting("HoldMailForDomains", "held.example")
    queue_up(svc,
             submission(svc, "y@friend.com", "x@held.example", QueueID="M1"),
             submission(svc, "alice@main.dom", QueueID="M2"), deliver=True)
    out = wp("queue", "list").output
    header, *rows = out.strip().splitlines()
    assert header.split() == ["id", "from", "recipients", "queue", "state", "attempts",
                              "claimed", "by", "last", "error"]
    rows_by_queue = {re.search(r"SMTP\(\S+\)", r).group(0): r for r in rows}  # type: ignore[union-attr]
    assert set(rows_by_queue) == {"SMTP(friend.com)", "SMTP(held.example)"}
    deferred = rows_by_queue["SMTP(friend.com)"]
    assert "M1" in deferred and "<bob@remote.example>" in deferred
    assert "deferred until" in deferred and "451" in deferred and "y@friend.com" in deferred
    assert re.search(r"\bheld\b", rows_by_queue["SMTP(held.example)"])
    assert "M2" not in out  # delivered locally: gone


def test_empty_queue(wp) -> None:
    assert wp("queue", "list").output.strip() == "the queue is empty"


def test_show_flush_release_delete(svc: Services, wp) -> None:
    svc.set_setting("HoldMailForDomains", "held.example")
    queue_up(svc, submission(svc, "y@friend.com", "x@held.example", QueueID="M1", ENVID="e"),
             deliver=True)
    out = wp("queue", "show", "M1").output
    assert "<bob@remote.example>" in out and "192.0.2.1" in out and "ENVID=e" in out
    assert "SMTP(friend.com)y@friend.com" in out and "SMTP(held.example)x@held.example" in out
    assert "QueueID" not in out

    assert wp("queue", "flush").output.strip() == "2 recipient(s) scheduled for delivery now"
    assert wp("queue", "flush", "SMTP(friend.com)").output.startswith("1 recipient(s)")
    assert wp("queue", "release", "held.example").output.strip() == "1 recipient(s) released"
    assert "released" not in wp("queue", "list").output  # shown as queued, due now
    assert re.search(r"SMTP\(held\.example\)\s+queued", wp("queue", "list").output)
    assert wp("queue", "release", "nothing.example").output.strip() == (
        "no mail waiting in nothing.example")

    assert wp("queue", "delete", "M1").output.strip() == "message M1 deleted"
    missing = wp("queue", "show", "M1", code=1)
    assert "M1" in missing.output and "Traceback" not in missing.output
    wp("queue", "delete", "M1", code=1)


def test_mailbox_show_lists_uid_flags_size_date_from_subject(svc: Services, wp) -> None:
    queue_up(svc, submission(svc, "alice@main.dom"), deliver=True)
    out = wp("mailbox", "show", "alice@main.dom").output
    first, _, header, row = out.strip().splitlines()
    assert first.startswith("INBOX of alice@main.dom: 1 messages")
    assert header.split() == ["uid", "flags", "size", "date", "from", "subject"]
    assert row.split()[0] == "1" and "Bob <bob@remote.example>" in row and row.endswith("hello")
    assert "alice@main.dom" in wp("mailbox", "show", "alice").output  # Main Domain implied
    assert "Sent" in wp("mailbox", "show", "alice", "Sent", code=1).output
    listing = wp("mailbox", "list", "alice").output
    assert re.search(r"INBOX\s+1\s+\d+", listing)
    assert "nobody" in wp("mailbox", "show", "nobody", code=1).output


def test_empty_inbox(wp) -> None:
    assert wp("mailbox", "show", "carol@secondary.dom").output.startswith(
        "INBOX of carol@secondary.dom: 0 messages")
