"""In-process news of mailbox changes.

Whoever changes a mailbox (an IMAP session, local delivery) publishes its
key; whoever shows it (IMAP sessions in IDLE) is poked at once instead of
waiting for its next poll. Everything runs on the event loop thread.
Across processes (the CLI, other nodes) the pollers still find changes.
"""

from __future__ import annotations

from typing import Protocol

from waypost.storage.interface import canonical_mailbox

MailboxKey = tuple[str, str, str]  # (domain, account, mailbox)


class Watcher(Protocol):
    def poke(self) -> None: ...


def mailbox_key(domain: str, account: str, mailbox: str) -> MailboxKey:
    """Names as the Directory and the Router may spell them differently."""
    return domain.lower(), account.lower(), canonical_mailbox(mailbox)


class MailEvents:
    def __init__(self) -> None:
        self._watchers: dict[MailboxKey, set[Watcher]] = {}

    def subscribe(self, key: MailboxKey, watcher: Watcher) -> None:
        self._watchers.setdefault(mailbox_key(*key), set()).add(watcher)

    def unsubscribe(self, key: MailboxKey, watcher: Watcher) -> None:
        key = mailbox_key(*key)
        watchers = self._watchers.get(key)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[key]

    def publish(self, key: MailboxKey, origin: Watcher | None = None) -> None:
        for watcher in tuple(self._watchers.get(mailbox_key(*key), ())):
            if watcher is not origin:
                watcher.poke()

    def watching(self, key: MailboxKey) -> int:
        return len(self._watchers.get(mailbox_key(*key), ()))
