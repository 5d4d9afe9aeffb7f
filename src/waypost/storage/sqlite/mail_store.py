"""The mailstore tables of the embedded store (see ``storage/interface.py``).

Mailboxes belong to account rows (``objects``), so renaming an account keeps
its mail and deleting one deletes it. A message row is metadata over a
shared blob: UID, MODSEQ, flags, internal date, size, the per-delivery
header ``prefix``, byte ranges of the blob to ``omit``, and the few header
fields a listing shows, parsed once at delivery.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from waypost.storage.interface import (
    INBOX,
    MailboxInfo,
    MailMessage,
    NewMailMessage,
    NotFound,
    canonical_mailbox,
)
from waypost.storage.sqlite.queue_store import pending_keys

_SUMMARY = ("from", "subject", "date", "message_id")
_MESSAGE_COLS = ("uid, modseq, flags, internal_date, size, blob, prefix, omit, hdr_from,"
                 " hdr_subject, hdr_date, hdr_message_id")


def account_id(conn: sqlite3.Connection, domain: str, account: str) -> int:
    row = conn.execute(
        "SELECT o.id FROM objects o JOIN domains d ON d.id = o.domain_id"
        " WHERE o.name_lower = ? AND o.kind = 'account' AND (d.name_lower = ? OR d.id ="
        " (SELECT domain_id FROM domain_aliases WHERE alias_lower = ?))",
        (account.lower(), domain.lower(), domain.lower()),
    ).fetchone()
    if row is None:
        raise NotFound(f"no account {account}@{domain}")
    return int(row[0])


def find_mailbox(conn: sqlite3.Connection, owner: int, name: str) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT id, name, uidvalidity, uidnext, highestmodseq FROM mailboxes"
        " WHERE account_id = ? AND name = ?", (owner, canonical_mailbox(name)),
    ).fetchone()


def create_mailbox(conn: sqlite3.Connection, owner: int, name: str) -> tuple[Any, ...]:
    """Create (or return) a mailbox; UIDVALIDITY only ever grows server-wide,
    so a mailbox re-created under an old name never reuses a value."""
    found = find_mailbox(conn, owner, name)
    if found is not None:
        return found
    last = conn.execute("SELECT COALESCE(MAX(uidvalidity), 0) FROM mailboxes").fetchone()[0]
    uidvalidity = max(int(time.time()), last + 1)
    conn.execute(
        "INSERT INTO mailboxes (account_id, name, uidvalidity, created) VALUES (?, ?, ?, ?)",
        (owner, canonical_mailbox(name), uidvalidity, time.time()),
    )
    found = find_mailbox(conn, owner, name)
    assert found is not None
    return found


def store_messages(
    conn: sqlite3.Connection, messages: Sequence[NewMailMessage]
) -> list[int | None]:
    uids: list[int | None] = []
    for m in messages:
        if m.queue_keys and not pending_keys(conn, m.queue_keys):
            uids.append(None)  # delivered already, or deleted from the queue
            continue
        owner = account_id(conn, m.domain, m.account)
        box = find_mailbox(conn, owner, m.mailbox)
        if box is None:
            if canonical_mailbox(m.mailbox) != INBOX and not m.fallback_inbox:
                raise NotFound(f"no mailbox {m.mailbox!r} in {m.account}@{m.domain}")
            box = create_mailbox(conn, owner, INBOX)
        box_id, _, _, uid, modseq = box
        modseq += 1
        summary = [m.summary.get(key, "") for key in _SUMMARY]
        conn.execute(
            "INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, blob,"
            " prefix, omit, hdr_from, hdr_subject, hdr_date, hdr_message_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (box_id, uid, modseq, " ".join(m.flags), m.internal_date, m.size, m.blob,
             m.prefix, json.dumps(m.omit) if m.omit else "", *summary),
        )
        conn.execute(
            "UPDATE mailboxes SET uidnext = ?, highestmodseq = ? WHERE id = ?",
            (uid + 1, modseq, box_id),
        )
        uids.append(uid)
    return uids


def mailbox_id(conn: sqlite3.Connection, domain: str, account: str, name: str) -> int:
    box = find_mailbox(conn, account_id(conn, domain, account), name)
    if box is None:
        raise NotFound(f"no mailbox {name!r} in {account}@{domain}")
    return int(box[0])


def mailbox_infos(
    conn: sqlite3.Connection, domain: str, account: str, name: str | None = None
) -> list[MailboxInfo]:
    owner = account_id(conn, domain, account)
    sql = ("SELECT b.name, b.uidvalidity, b.uidnext, b.highestmodseq, COUNT(m.id),"
           " COALESCE(SUM(m.size), 0) FROM mailboxes b LEFT JOIN messages m"
           " ON m.mailbox_id = b.id WHERE b.account_id = ?")
    args: list[Any] = [owner]
    if name is not None:
        sql += " AND b.name = ?"
        args.append(canonical_mailbox(name))
    rows = conn.execute(sql + " GROUP BY b.id ORDER BY b.name", args).fetchall()
    if name is not None and not rows:
        raise NotFound(f"no mailbox {name!r} in {account}@{domain}")
    return [MailboxInfo(*row) for row in rows]


def messages(conn: sqlite3.Connection, box: int, uid: int | None = None) -> list[MailMessage]:
    sql = f"SELECT {_MESSAGE_COLS} FROM messages WHERE mailbox_id = ?"
    args: list[Any] = [box]
    if uid is not None:
        sql += " AND uid = ?"
        args.append(uid)
    return [_message(row) for row in conn.execute(sql + " ORDER BY uid", args)]


def delete_messages(conn: sqlite3.Connection, box: int, uids: Sequence[int]) -> int:
    count = 0
    for uid in uids:
        count += conn.execute(
            "DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", (box, uid)
        ).rowcount
    if count:
        conn.execute("UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ?",
                     (box,))
    return count


def _message(row: tuple[Any, ...]) -> MailMessage:
    uid, modseq, flags, internal_date, size, blob, prefix, omit, *summary = row
    return MailMessage(
        uid=uid, modseq=modseq, flags=tuple(flags.split()), internal_date=internal_date,
        size=size, blob=blob, prefix=bytes(prefix),
        omit=tuple(tuple(r) for r in json.loads(omit)) if omit else (),  # type: ignore[misc]
        summary=dict(zip(_SUMMARY, summary, strict=True)),
    )
