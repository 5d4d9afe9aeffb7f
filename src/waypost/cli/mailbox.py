"""``waypost mailbox list|show``: an account's mailboxes, for the administrator."""

from __future__ import annotations

import time

import click

from waypost.cli.common import data_option, services
from waypost.cli.output import line, table
from waypost.services.mailstore import Mailstore
from waypost.storage.interface import INBOX, NotFound, ObjectRecord


@click.group("mailbox")
def mailbox_group() -> None:
    """Mailboxes of accounts and the messages in them."""


@mailbox_group.command("list")
@data_option
@click.argument("account")
def list_(account: str) -> None:
    """ACCOUNT's mailboxes with message counts and sizes."""
    with services() as svc:
        address = _account(svc.directory.get_account(account))
        boxes = Mailstore(svc.store).mailboxes(address)
    table(["mailbox", "messages", "size", "uidvalidity", "uidnext"],
          [(b.name, b.messages, b.size, b.uidvalidity, b.uidnext) for b in boxes],
          empty=f"{address} has no mailboxes yet")


@mailbox_group.command("show")
@data_option
@click.argument("account")
@click.argument("mailbox", default=INBOX)
def show(account: str, mailbox: str) -> None:
    """The messages of ACCOUNT's MAILBOX (default INBOX): UID, flags, size,
    internal date, From, Subject."""
    with services() as svc:
        address = _account(svc.directory.get_account(account))
        store = Mailstore(svc.store)
        try:
            info = store.mailbox(address, mailbox)
        except NotFound:
            if mailbox.upper() != INBOX:
                raise
            line(f"{INBOX} of {address}: 0 messages")  # created at the first delivery
            return
        messages = store.list_messages(address, info.name)
    line(f"{info.name} of {address}: {info.messages} messages, {info.size} octets, "
         f"UIDVALIDITY {info.uidvalidity}, UIDNEXT {info.uidnext}")
    if messages:
        line()
    table(["uid", "flags", "size", "date", "from", "subject"],
          [(m.uid, " ".join(m.flags) or None, m.size,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.internal_date)),
            m.summary.get("from") or None, m.summary.get("subject") or None)
           for m in messages])


def _account(record: ObjectRecord) -> str:
    return f"{record.name}@{record.domain}"


COMMANDS = [mailbox_group]
