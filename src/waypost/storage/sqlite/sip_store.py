"""The SIP registration table of the embedded store (see ``storage/interface.py``).

A binding row belongs to its account row (``objects``), so it follows a
renamed account and goes with a deleted one (migration 9). Which bindings a
REGISTER adds, refreshes or removes is the registrar's decision
(``services/signals/registrar.py``); this module only reads the current
rows and applies the decision in the same ``BEGIN IMMEDIATE`` transaction,
so two REGISTERs of one account never both act on the same old state
(RFC 3261 §10.3 step 7: the CSeq check and the update are one step).
Every change is durable before it returns: a registration survives a restart.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from waypost.storage.interface import SipBinding, SipBindingChanges
from waypost.storage.sqlite.mail_store import account_id

_COLS = ("b.id, d.name, o.name, b.key, b.contact, b.expires, b.q, b.call_id, b.cseq,"
         " b.instance, b.reg_id, b.transport, b.address, b.port, b.user_agent, b.registered")
_FROM = ("FROM sip_bindings b JOIN objects o ON o.id = b.account_id"
         " JOIN domains d ON d.id = o.domain_id")
_ORDER = " ORDER BY d.name_lower, o.name_lower, COALESCE(b.q, 1000) DESC, b.registered, b.id"


def _binding(row: tuple[Any, ...]) -> SipBinding:
    (id_, domain, account, key, contact, expires, q, call_id, cseq, instance, reg_id,
     transport, address, port, user_agent, registered) = row
    return SipBinding(key=key, contact=contact, expires=expires, call_id=call_id, cseq=cseq,
                      registered=registered, q=q, instance=instance, reg_id=reg_id,
                      transport=transport, address=address, port=port, user_agent=user_agent,
                      id=id_, domain=domain, account=account)


def _of_account(conn: sqlite3.Connection, owner: int, now: float) -> list[SipBinding]:
    rows = conn.execute(f"SELECT {_COLS} {_FROM} WHERE b.account_id = ? AND b.expires > ?"
                        + _ORDER, (owner, now))
    return [_binding(row) for row in rows]


def _apply(conn: sqlite3.Connection, owner: int, changes: SipBindingChanges) -> None:
    conn.executemany("DELETE FROM sip_bindings WHERE id = ? AND account_id = ?",
                     [(id_, owner) for id_ in changes.remove])
    conn.executemany(
        "INSERT INTO sip_bindings (account_id, key, contact, expires, q, call_id, cseq,"
        " instance, reg_id, transport, address, port, user_agent, registered)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (account_id, key) DO UPDATE SET contact = excluded.contact,"
        " expires = excluded.expires, q = excluded.q, call_id = excluded.call_id,"
        " cseq = excluded.cseq, instance = excluded.instance, reg_id = excluded.reg_id,"
        " transport = excluded.transport, address = excluded.address, port = excluded.port,"
        " user_agent = excluded.user_agent, registered = excluded.registered",
        [(owner, b.key, b.contact, b.expires, b.q, b.call_id, b.cseq, b.instance, b.reg_id,
          b.transport, b.address, b.port, b.user_agent, b.registered) for b in changes.put],
    )


class SipStoreMixin:
    """``Store.sip_*`` of the embedded store (mixed into ``SqliteStore``)."""

    if TYPE_CHECKING:
        def _txn(self, *, sync: bool = True) -> AbstractContextManager[sqlite3.Connection]: ...
        def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def sip_bindings(
        self, domain: str | None = None, account: str | None = None, *, now: float,
    ) -> list[SipBinding]:
        with self._read() as conn:
            if account is not None:
                return _of_account(conn, account_id(conn, domain or "", account), now)
            sql = f"SELECT {_COLS} {_FROM} WHERE b.expires > ?"
            args: list[Any] = [now]
            if domain is not None:
                sql += " AND d.name_lower = ?"
                args.append(domain.lower())
            return [_binding(row) for row in conn.execute(sql + _ORDER, args)]

    def sip_change_bindings(
        self, domain: str, account: str, now: float,
        decide: Callable[[list[SipBinding]], SipBindingChanges],
    ) -> list[SipBinding]:
        with self._txn() as conn:
            owner = account_id(conn, domain, account)
            conn.execute("DELETE FROM sip_bindings WHERE expires <= ?", (now,))
            _apply(conn, owner, decide(_of_account(conn, owner, now)))
            return _of_account(conn, owner, now)
