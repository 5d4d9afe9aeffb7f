"""The SIP registration table of the PostgreSQL store (``storage/interface.py``).

The rows and rules of ``storage/sqlite/sip_store.py``. Where SQLite's
``BEGIN IMMEDIATE`` serialises two REGISTERs of one account, here the
account's ``objects`` row is locked (``FOR UPDATE``) before its bindings are
read, so two REGISTERs of one account -- on any node -- never both act on
the same old state (RFC 3261 §10.3 step 7: the CSeq check and the update
are one step), while REGISTERs of different accounts do not wait on each
other. Every change commits (durably) before it returns.
"""

from __future__ import annotations

import psycopg

from waypost.storage.interface import SipBinding, SipBindingChanges
from waypost.storage.postgresql.mail_store import account_id

# the SQLite store's row conversion: the same columns (one place for it)
from waypost.storage.sqlite.sip_store import _binding

_COLS = ("b.id, d.name, o.name, b.key, b.contact, b.expires, b.q, b.call_id, b.cseq,"
         " b.instance, b.reg_id, b.transport, b.address, b.port, b.user_agent, b.registered")
_FROM = ("FROM sip_bindings b JOIN objects o ON o.id = b.account_id"
         " JOIN domains d ON d.id = o.domain_id")
__all__ = ["account_id", "all_bindings", "apply", "of_account"]

_ORDER = " ORDER BY d.name_lower, o.name_lower, COALESCE(b.q, 1000) DESC, b.registered, b.id"
def of_account(conn: psycopg.Connection, owner: int, now: float) -> list[SipBinding]:
    rows = conn.execute(f"SELECT {_COLS} {_FROM} WHERE b.account_id = %s AND b.expires > %s"
                        + _ORDER, (owner, now)).fetchall()
    return [_binding(row) for row in rows]


def all_bindings(conn: psycopg.Connection, domain: str | None, now: float) -> list[SipBinding]:
    rows = conn.execute(
        f"SELECT {_COLS} {_FROM} WHERE b.expires > %s"
        " AND (%s::text IS NULL OR d.name_lower = %s)" + _ORDER,
        (now, None if domain is None else domain.lower(),
         None if domain is None else domain.lower()),
    ).fetchall()
    return [_binding(row) for row in rows]


def apply(conn: psycopg.Connection, owner: int, now: float,
          changes: SipBindingChanges) -> None:
    with conn.cursor() as cur:
        cur.execute("DELETE FROM sip_bindings WHERE account_id = %s AND expires <= %s",
                    (owner, now))
        cur.executemany("DELETE FROM sip_bindings WHERE id = %s AND account_id = %s",
                        [(id_, owner) for id_ in changes.remove])
        cur.executemany(
            "INSERT INTO sip_bindings (account_id, key, contact, expires, q, call_id, cseq,"
            " instance, reg_id, transport, address, port, user_agent, registered)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (account_id, key) DO UPDATE SET contact = excluded.contact,"
            " expires = excluded.expires, q = excluded.q, call_id = excluded.call_id,"
            " cseq = excluded.cseq, instance = excluded.instance, reg_id = excluded.reg_id,"
            " transport = excluded.transport, address = excluded.address, port = excluded.port,"
            " user_agent = excluded.user_agent, registered = excluded.registered",
            [(owner, b.key, b.contact, b.expires, b.q, b.call_id, b.cseq, b.instance, b.reg_id,
              b.transport, b.address, b.port, b.user_agent, b.registered) for b in changes.put],
        )
