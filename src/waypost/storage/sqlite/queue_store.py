"""The queue tables of the embedded store (see ``storage/interface.py``).

A message is one ``queue_messages`` row naming its body blob; each routed
destination of each envelope recipient is one ``queue_recipients`` row with
its own state, attempts and schedule, because one message may go to many
targets that succeed and fail independently. A message row goes away in
the transaction that makes its last recipient final.

Claims (issue 15): ``owner``/``lease_until`` of a recipient row say which
process delivers it and until when. :func:`claim` selects and marks in the
caller's ``BEGIN IMMEDIATE`` transaction, so two processes never claim the
same row; :func:`settle` with an owner applies only while that owner still
holds the row, and clears the claim.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from waypost.storage.interface import (
    PENDING,
    NewQueueMessage,
    NotFound,
    QueueAttempt,
    QueuedMessage,
    QueuedRecipient,
    RecipientUpdate,
)

_PENDING_SQL = "(" + ", ".join(f"'{state}'" for state in PENDING) + ")"

_MSG_COLS = ("id, mail_from, params, client_ip, helo, auth_user, trusted, protocol, blob, size,"
             " created")
_RCPT_COLS = ("id, message_id, address, module, queue, route_address, real_to, mailbox, notify,"
              " orcpt, state, attempts, next_attempt, last_error, released, owner, lease_until")


def insert_messages(conn: sqlite3.Connection, messages: Sequence[NewQueueMessage]) -> None:
    for m in messages:
        conn.execute(
            f"INSERT INTO queue_messages ({_MSG_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (m.id, m.mail_from, json.dumps(m.params, sort_keys=True), m.client_ip, m.helo,
             m.auth_user, int(m.trusted), m.protocol, m.blob, m.size, m.created),
        )
        conn.executemany(
            "INSERT INTO queue_recipients (message_id, address, module, queue, route_address,"
            " real_to, mailbox, notify, orcpt, next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(m.id, r.address, r.module, r.queue, r.route_address, r.real_to, r.mailbox,
              ",".join(r.notify), r.orcpt, m.created) for r in m.recipients],
        )


def settle(conn: sqlite3.Connection, updates: Sequence[RecipientUpdate]) -> None:
    """Apply recipient updates (pending rows only) and retire finished messages."""
    touched: set[str] = set()
    for u in updates:
        row = conn.execute(
            "UPDATE queue_recipients SET state = COALESCE(?, state),"
            " last_error = COALESCE(?, last_error), next_attempt = COALESCE(?, next_attempt),"
            " attempts = attempts + ?, released = CASE WHEN ? THEN 0 ELSE released END,"
            " owner = NULL, lease_until = 0"
            f" WHERE id = ? AND state IN {_PENDING_SQL} AND (? IS NULL OR owner = ?)"
            " RETURNING message_id",
            (u.state, u.error, u.next_attempt, int(u.attempted), int(u.attempted), u.key,
             u.owner, u.owner),
        ).fetchone()
        if row is not None:
            touched.add(row[0])
            if u.history is not None:
                h = u.history
                conn.execute("INSERT INTO queue_history (recipient_id, at, status, reply, relay)"
                             " VALUES (?, ?, ?, ?, ?)", (u.key, h.at, h.status, h.reply, h.relay))
    for message_id in touched:
        conn.execute(
            "DELETE FROM queue_messages WHERE id = ? AND NOT EXISTS (SELECT 1 FROM"
            f" queue_recipients WHERE message_id = ? AND state IN {_PENDING_SQL})",
            (message_id, message_id),
        )


def pending_keys(
    conn: sqlite3.Connection, keys: Iterable[int], owner: str | None = None
) -> set[int]:
    """The ``keys`` still pending (and, with ``owner``, still held by it)."""
    keys = list(keys)
    if not keys:
        return set()
    marks = ",".join("?" * len(keys))
    sql = f"SELECT id FROM queue_recipients WHERE id IN ({marks}) AND state IN {_PENDING_SQL}"
    if owner is not None:
        return {k for (k,) in conn.execute(sql + " AND owner = ?", [*keys, owner])}
    return {k for (k,) in conn.execute(sql, keys)}


def claim(
    conn: sqlite3.Connection, owner: str, now: float, lease: float, limit: int,
    skip: Sequence[tuple[str, str]],
) -> list[QueuedMessage]:
    """Claim what is due for ``owner`` (inside a write transaction): rows
    nobody holds or whose lease ran out, in route queues no other owner
    holds a live claim in."""
    held = conn.execute(
        "SELECT DISTINCT module, queue FROM queue_recipients WHERE owner IS NOT NULL"
        f" AND owner != ? AND lease_until > ? AND state IN {_PENDING_SQL}", (owner, now),
    ).fetchall()
    sql = (f"SELECT {_RCPT_COLS} FROM queue_recipients WHERE state IN {_PENDING_SQL}"
           " AND next_attempt <= ? AND (owner IS NULL OR lease_until <= ?)")
    args: list[Any] = [now, now]
    for module, queue in {*skip, *held}:
        sql += " AND NOT (module = ? AND queue = ?)"
        args += [module, queue]
    rows = conn.execute(sql + " ORDER BY next_attempt, id LIMIT ?", [*args, limit]).fetchall()
    until = now + lease
    recipients = [dataclasses.replace(_recipient(r), owner=owner, lease_until=until)
                  for r in rows]
    keys = [r.key for r in recipients]
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        conn.execute(f"UPDATE queue_recipients SET owner = ?, lease_until = ? WHERE id IN"
                     f" ({','.join('?' * len(chunk))})", [owner, until, *chunk])
    return _messages(conn, recipients)


def renew(conn: sqlite3.Connection, owner: str, keys: Sequence[int], until: float) -> set[int]:
    held: set[int] = set()
    keys = list(keys)
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        held |= {k for (k,) in conn.execute(
            f"UPDATE queue_recipients SET lease_until = ? WHERE owner = ? AND state IN"
            f" {_PENDING_SQL} AND id IN ({','.join('?' * len(chunk))}) RETURNING id",
            [until, owner, *chunk],
        )}
    return held


def release(conn: sqlite3.Connection, owner: str) -> int:
    return int(conn.execute("UPDATE queue_recipients SET owner = NULL, lease_until = 0"
                            " WHERE owner = ?", (owner,)).rowcount)


def due(
    conn: sqlite3.Connection, now: float, limit: int, skip: Sequence[tuple[str, str]]
) -> list[QueuedMessage]:
    sql = (f"SELECT {_RCPT_COLS} FROM queue_recipients"
           f" WHERE state IN {_PENDING_SQL} AND next_attempt <= ?")
    args: list[Any] = [now]
    for module, queue in skip:
        sql += " AND NOT (module = ? AND queue = ?)"
        args += [module, queue]
    rows = conn.execute(sql + " ORDER BY next_attempt, id LIMIT ?", [*args, limit]).fetchall()
    return _messages(conn, [_recipient(r) for r in rows])


def pending(conn: sqlite3.Connection) -> list[QueuedMessage]:
    rows = conn.execute(
        f"SELECT {_RCPT_COLS} FROM queue_recipients WHERE state IN {_PENDING_SQL} ORDER BY id"
    ).fetchall()
    return _messages(conn, [_recipient(r) for r in rows])


def one(conn: sqlite3.Connection, message_id: str) -> QueuedMessage:
    rows = conn.execute(
        f"SELECT {_RCPT_COLS} FROM queue_recipients WHERE message_id = ? ORDER BY id",
        (message_id,),
    ).fetchall()
    history: dict[int, list[QueueAttempt]] = {}
    for key, at, status, reply, relay in conn.execute(
        "SELECT h.recipient_id, h.at, h.status, h.reply, h.relay FROM queue_history h"
        " JOIN queue_recipients r ON r.id = h.recipient_id WHERE r.message_id = ?"
        " ORDER BY h.id", (message_id,),
    ):
        history.setdefault(key, []).append(QueueAttempt(at, status, reply, relay))
    recipients = [_recipient(r) for r in rows]
    recipients = [dataclasses.replace(r, history=tuple(history.get(r.key, ())))
                  for r in recipients]
    found = _messages(conn, recipients, ensure=[message_id])
    if not found:
        raise NotFound(f"no queued message {message_id!r}")
    return found[0]


def delete(conn: sqlite3.Connection, message_id: str) -> None:
    if conn.execute("DELETE FROM queue_messages WHERE id = ?", (message_id,)).rowcount == 0:
        raise NotFound(f"no queued message {message_id!r}")


def schedule(
    conn: sqlite3.Connection, now: float, module: str | None, queue: str | None, release: bool
) -> int:
    sql = (f"UPDATE queue_recipients SET next_attempt = ?,"
           f" released = CASE WHEN ? THEN 1 ELSE released END WHERE state IN {_PENDING_SQL}")
    args: list[Any] = [now, int(release)]
    if module is not None:
        sql += " AND module = ?"
        args.append(module)
    if queue is not None:
        sql += " AND lower(queue) = lower(?)"
        args.append(queue)
    return int(conn.execute(sql, args).rowcount)


def blob_referenced(conn: sqlite3.Connection, key: str) -> bool:
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM queue_messages WHERE blob = ?)"
        " OR EXISTS (SELECT 1 FROM messages WHERE blob = ?)", (key, key),
    ).fetchone()[0] == 1


def _recipient(row: tuple[Any, ...]) -> QueuedRecipient:
    (key, message_id, address, module, queue, route_address, real_to, mailbox, notify, orcpt,
     state, attempts, next_attempt, last_error, released, owner, lease_until) = row
    return QueuedRecipient(
        key=key, message_id=message_id, address=address, module=module, queue=queue,
        route_address=route_address, real_to=real_to, mailbox=mailbox,
        notify=tuple(n for n in notify.split(",") if n), orcpt=orcpt, state=state,
        attempts=attempts, next_attempt=next_attempt, last_error=last_error,
        released=bool(released), owner=owner, lease_until=lease_until,
    )


def _messages(
    conn: sqlite3.Connection, recipients: list[QueuedRecipient], ensure: Sequence[str] = ()
) -> list[QueuedMessage]:
    """Attach recipients to their message rows, keeping the recipients' order."""
    by_message: dict[str, list[QueuedRecipient]] = {m: [] for m in ensure}
    for r in recipients:
        by_message.setdefault(r.message_id, []).append(r)
    if not by_message:
        return []
    ids = list(by_message)
    rows: dict[str, tuple[Any, ...]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(
            f"SELECT {_MSG_COLS} FROM queue_messages WHERE id IN ({marks})", chunk
        ):
            rows[row[0]] = row
    result = []
    for message_id, rcpts in by_message.items():
        row = rows.get(message_id)
        if row is None:
            continue
        _, mail_from, params, client_ip, helo, auth_user, trusted, protocol, blob, size, when = row
        result.append(QueuedMessage(
            id=message_id, mail_from=mail_from, params=json.loads(params), client_ip=client_ip,
            helo=helo, auth_user=auth_user, trusted=bool(trusted), protocol=protocol, blob=blob,
            size=size, created=when, recipients=tuple(rcpts),
        ))
    return result
