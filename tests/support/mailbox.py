"""Read what a running Waypost stored, straight from its data directory.

``waypost mailbox show`` lists messages for people; tests that must see the
exact bytes of a stored message (a DSN's parts, a relayed header) read them
through the Mailstore API instead. The store is opened and closed per
call, beside the running server, as the CLI does.
"""

from __future__ import annotations

from pathlib import Path

from waypost.services.container import open_services
from waypost.services.mailstore import Mailstore
from waypost.storage.interface import INBOX, NotFound


def read_mailbox(data_dir: Path, account: str, mailbox: str = INBOX) -> list[bytes]:
    """Every message of ``account``'s ``mailbox`` (UID order); [] when it does not exist yet."""
    services = open_services(data_dir)
    try:
        store = Mailstore(services.store)
        try:
            messages = store.list_messages(account, mailbox)
        except NotFound:
            return []
        return [store.read_message(account, mailbox, m.uid) for m in messages]
    finally:
        services.close()
