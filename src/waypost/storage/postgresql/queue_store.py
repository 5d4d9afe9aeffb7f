"""The queue tables of the PostgreSQL store (see ``storage/interface.py``):
the statements of ``storage/sqlite/queue_store.py`` in PostgreSQL's
placeholder style; the same rows and rules.

A message is one ``queue_messages`` row naming its body blob; each routed
destination of each envelope recipient is one ``queue_recipients`` row with
its own state, attempts and schedule, because one message may go to many
targets that succeed and fail independently. A message row goes away in
the transaction that makes its last recipient final.

Claims (issue 15): ``owner``/``lease_until`` of a recipient row say which
process delivers it and until when. :func:`claim` takes a transaction-level
advisory lock (:data:`_CLAIM_LOCK`), so claims on every node run one at a
time and the "route queue held by another owner" check cannot race, and
selects its rows with ``SELECT ... FOR UPDATE SKIP LOCKED``, so a row that
a concurrent settle or renew is changing is left for the next round instead
of waited on: two nodes never claim the same recipient. :func:`settle` with
an owner applies only while that owner still holds the row, and clears the
claim.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from waypost.storage.interface import (
    PENDING,
    NewQueueMessage,
    NotFound,
    QueueAttempt,
    QueuedMessage,
    QueuedRecipient,
    RecipientUpdate,
)

# the SQLite store's row conversion: the same columns (one place for it)
from waypost.storage.sqlite.queue_store import _recipient

_PENDING_SQL = "(" + ", ".join(f"'{state}'" for state in PENDING) + ")"

_MSG_COLS = ("id, mail_from, params, client_ip, helo, auth_user, trusted, protocol, blob, size,"
             " created")
_RCPT_COLS = ("id, message_id, address, module, queue, route_address, real_to, mailbox, notify,"
              " orcpt, state, attempts, next_attempt, last_error, released, owner, lease_until")
# pg_advisory_xact_lock key ("wqcl"): serialises queue claims across all nodes
_CLAIM_LOCK = 0x7771636C


def insert_messages(conn: psycopg.Connection, messages: Sequence[NewQueueMessage]) -> None:
    for m in messages:
        conn.execute(
            f"INSERT INTO queue_messages ({_MSG_COLS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (m.id, m.mail_from, json.dumps(m.params, sort_keys=True), m.client_ip, m.helo,
             m.auth_user, int(m.trusted), m.protocol, m.blob, m.size, m.created),
        )
        conn.cursor().executemany(
            "INSERT INTO queue_recipients (message_id, address, module, queue, route_address,"
            " real_to, mailbox, notify, orcpt, next_attempt)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(m.id, r.address, r.module, r.queue, r.route_address, r.real_to, r.mailbox,
              ",".join(r.notify), r.orcpt, m.created) for r in m.recipients],
        )


def settle(conn: psycopg.Connection, updates: Sequence[RecipientUpdate]) -> None:
    """Apply recipient updates (pending rows only) and retire finished messages."""
    touched: set[str] = set()
    for u in updates:
        row = conn.execute(
            "UPDATE queue_recipients SET state = COALESCE(%s, state),"
            " last_error = COALESCE(%s, last_error), next_attempt = COALESCE(%s, next_attempt),"
            " attempts = attempts + %s, released = CASE WHEN %s THEN 0 ELSE released END,"
            " owner = NULL, lease_until = 0"
            f" WHERE id = %s AND state IN {_PENDING_SQL}"
            " AND (%s::text IS NULL OR owner = %s) RETURNING message_id",
            (u.state, u.error, u.next_attempt, int(u.attempted), u.attempted, u.key,
             u.owner, u.owner),
        ).fetchone()
        if row is not None:
            touched.add(row[0])
            if u.history is not None:
                h = u.history
                conn.execute("INSERT INTO queue_history (recipient_id, at, status, reply, relay)"
                             " VALUES (%s, %s, %s, %s, %s)",
                             (u.key, h.at, h.status, h.reply, h.relay))
    for message_id in touched:
        conn.execute(
            "DELETE FROM queue_messages WHERE id = %s AND NOT EXISTS (SELECT 1 FROM"
            f" queue_recipients WHERE message_id = %s AND state IN {_PENDING_SQL})",
            (message_id, message_id),
        )


def pending_keys(
    conn: psycopg.Connection, keys: Iterable[int], owner: str | None = None
) -> set[int]:
    """The ``keys`` still pending (and, with ``owner``, still held by it)."""
    keys = list(keys)
    if not keys:
        return set()
    return {k for (k,) in conn.execute(
        f"SELECT id FROM queue_recipients WHERE id = ANY(%s) AND state IN {_PENDING_SQL}"
        " AND (%s::text IS NULL OR owner = %s)",
        (keys, owner, owner),
    ).fetchall()}


def claim(
    conn: psycopg.Connection, owner: str, now: float, lease: float, limit: int,
    skip: Sequence[tuple[str, str]],
) -> list[QueuedMessage]:
    """Claim what is due for ``owner`` (inside a write transaction): rows
    nobody holds or whose lease ran out, in route queues no other owner
    holds a live claim in."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CLAIM_LOCK,))
    held = conn.execute(
        "SELECT DISTINCT module, queue FROM queue_recipients WHERE owner IS NOT NULL"
        f" AND owner <> %s AND lease_until > %s AND state IN {_PENDING_SQL}", (owner, now),
    ).fetchall()
    sql = (f"SELECT {_RCPT_COLS} FROM queue_recipients WHERE state IN {_PENDING_SQL}"
           " AND next_attempt <= %s AND (owner IS NULL OR lease_until <= %s)")
    args: list[Any] = [now, now]
    for module, queue in {*skip, *(tuple(h) for h in held)}:
        sql += " AND NOT (module = %s AND queue = %s)"
        args += [module, queue]
    rows = conn.execute(sql + " ORDER BY next_attempt, id LIMIT %s FOR UPDATE SKIP LOCKED",
                        [*args, limit]).fetchall()
    until = now + lease
    recipients = [dataclasses.replace(_recipient(r), owner=owner, lease_until=until)
                  for r in rows]
    keys = [r.key for r in recipients]
    if keys:
        conn.execute("UPDATE queue_recipients SET owner = %s, lease_until = %s"
                     " WHERE id = ANY(%s)", (owner, until, keys))
    return _messages(conn, recipients)


def renew(conn: psycopg.Connection, owner: str, keys: Sequence[int], until: float) -> set[int]:
    keys = list(keys)
    if not keys:
        return set()
    return {k for (k,) in conn.execute(
        f"UPDATE queue_recipients SET lease_until = %s WHERE owner = %s AND state IN"
        f" {_PENDING_SQL} AND id = ANY(%s) RETURNING id", (until, owner, keys),
    ).fetchall()}


def release(conn: psycopg.Connection, owner: str) -> int:
    return int(conn.execute("UPDATE queue_recipients SET owner = NULL, lease_until = 0"
                            " WHERE owner = %s", (owner,)).rowcount)


def due(
    conn: psycopg.Connection, now: float, limit: int, skip: Sequence[tuple[str, str]]
) -> list[QueuedMessage]:
    sql = (f"SELECT {_RCPT_COLS} FROM queue_recipients"
           f" WHERE state IN {_PENDING_SQL} AND next_attempt <= %s")
    args: list[Any] = [now]
    for module, queue in skip:
        sql += " AND NOT (module = %s AND queue = %s)"
        args += [module, queue]
    rows = conn.execute(sql + " ORDER BY next_attempt, id LIMIT %s", [*args, limit]).fetchall()
    return _messages(conn, [_recipient(r) for r in rows])


def pending(conn: psycopg.Connection) -> list[QueuedMessage]:
    rows = conn.execute(
        f"SELECT {_RCPT_COLS} FROM queue_recipients WHERE state IN {_PENDING_SQL} ORDER BY id"
    ).fetchall()
    return _messages(conn, [_recipient(r) for r in rows])


def one(conn: psycopg.Connection, message_id: str) -> QueuedMessage:
    rows = conn.execute(
        f"SELECT {_RCPT_COLS} FROM queue_recipients WHERE message_id = %s ORDER BY id",
        (message_id,),
    ).fetchall()
    history: dict[int, list[QueueAttempt]] = {}
    for key, at, status, reply, relay in conn.execute(
        "SELECT h.recipient_id, h.at, h.status, h.reply, h.relay FROM queue_history h"
        " JOIN queue_recipients r ON r.id = h.recipient_id WHERE r.message_id = %s"
        " ORDER BY h.id", (message_id,),
    ).fetchall():
        history.setdefault(key, []).append(QueueAttempt(at, status, reply, relay))
    recipients = [_recipient(r) for r in rows]
    recipients = [dataclasses.replace(r, history=tuple(history.get(r.key, ())))
                  for r in recipients]
    found = _messages(conn, recipients, ensure=[message_id])
    if not found:
        raise NotFound(f"no queued message {message_id!r}")
    return found[0]


def delete(conn: psycopg.Connection, message_id: str) -> None:
    if conn.execute("DELETE FROM queue_messages WHERE id = %s", (message_id,)).rowcount == 0:
        raise NotFound(f"no queued message {message_id!r}")


def schedule(
    conn: psycopg.Connection, now: float, module: str | None, queue: str | None, release: bool
) -> int:
    sql = (f"UPDATE queue_recipients SET next_attempt = %s,"
           f" released = CASE WHEN %s THEN 1 ELSE released END WHERE state IN {_PENDING_SQL}")
    args: list[Any] = [now, release]
    if module is not None:
        sql += " AND module = %s"
        args.append(module)
    if queue is not None:
        sql += " AND lower(queue) = lower(%s)"
        args.append(queue)
    return int(conn.execute(sql, args).rowcount)


def blob_referenced(conn: psycopg.Connection, key: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM queue_messages WHERE blob = %s)"
        " OR EXISTS (SELECT 1 FROM messages WHERE blob = %s)", (key, key),
    ).fetchone()
    return bool(row and row[0])


def _messages(
    conn: psycopg.Connection, recipients: list[QueuedRecipient], ensure: Sequence[str] = ()
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
        for row in conn.execute(
            f"SELECT {_MSG_COLS} FROM queue_messages WHERE id = ANY(%s)", (chunk,)
        ).fetchall():
            rows[row[0]] = row
    result = []
    for message_id, rcpts in by_message.items():
        found = rows.get(message_id)
        if found is None:
            continue
        (_, mail_from, params, client_ip, helo, auth_user, trusted, protocol, blob, size,
         when) = found
        result.append(QueuedMessage(
            id=message_id, mail_from=mail_from, params=json.loads(params), client_ip=client_ip,
            helo=helo, auth_user=auth_user, trusted=bool(trusted), protocol=protocol, blob=blob,
            size=size, created=when, recipients=tuple(rcpts),
        ))
    return result
