"""The mailstore tables of the PostgreSQL store (see ``storage/interface.py``).

The rows and rules of ``storage/sqlite/mail_store.py`` (read its docstring:
the same tree, UID/MODSEQ and counter rules), in PostgreSQL's SQL. What
differs is concurrency: SQLite runs one writer at a time, PostgreSQL many,
so every change locks the mailbox rows it will number from (``_box(...,
lock=True)`` and ``find_mailbox(..., lock=True)``: ``SELECT ... FOR
UPDATE``) before reading UIDNEXT or HIGHESTMODSEQ; two deliveries into
one mailbox from two nodes then take consecutive UIDs instead of one
failing on the unique (mailbox, UID) key. UIDVALIDITY comes from one
locked row (``uidvalidity_mark``). Names are compared in code-point order
(the columns are ``COLLATE "C"``), which the subtree ranges rely on.

----

The embedded store's description follows.

Mailboxes belong to account rows (``objects``), so renaming an account keeps
its mail and deleting one deletes it. A message row is metadata over a
shared blob: UID, MODSEQ, flags, internal date, size, the per-delivery
header ``prefix``, byte ranges of the blob to ``omit``, and the few header
fields a listing shows, parsed once at delivery.

The mailbox tree is flat rows named with ``/``: a row with ``selectable = 0``
is only the "directory" entity of its name (IMAP ``\\Noselect``). The
children of ``A`` are the rows whose name lies in ``['A/', 'A0')`` (``0``
follows ``/`` in code point order), a range the ``(account_id, name)`` index
answers, and which is case-sensitive like the names themselves. Which names
are allowed (wildcards, length, renaming below oneself, aliases) is decided
by the mail-access service before it calls the store; here a name is only
made canonical (INBOX) and checked for what this structure needs.

Every change of a mailbox's messages takes the next MODSEQ of the mailbox
(one per operation: all messages changed together share it), and expunged
UIDs are logged with theirs, so a session asks "what changed since N" with
two indexed range reads. Message, unseen and size counters are kept in the
``mailboxes`` row by triggers (migration 4), so STATUS never scans.

:class:`MailStoreMixin` holds the ``Store.mail_*`` methods of
:class:`~waypost.storage.sqlite.store.SqliteStore`; the functions below run
inside its transactions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import psycopg

import waypost.storage.postgresql.queue_store as queue_store
from waypost import mime
from waypost.storage.interface import (
    ACL_RIGHTS,
    INBOX,
    CannotDelete,
    CopiedUids,
    FlagUpdates,
    MailboxChanges,
    MailboxEntry,
    MailboxError,
    MailboxExists,
    MailboxHasChildren,
    MailboxInfo,
    MailboxState,
    MailMessage,
    MessageMeta,
    NewAppend,
    NewMailMessage,
    NoSuchMailbox,
    NotFound,
    OverQuota,
    RecipientUpdate,
    StoreError,
    canonical_mailbox,
    normalize_flags,
    special_use_of,
)
from waypost.storage.postgresql.queue_store import pending_keys

# The backend-neutral parts of the embedded store's mail store (names, rows,
# modes): one place for them; only the SQL and the locking are this module's.
from waypost.storage.sqlite.mail_store import (
    _BOX_COLS,
    _COPY_COLS,
    _MESSAGE_COLS,
    _SUMMARY,
    ACL_MODES,
    FLAG_MODES,
    Box,
    _check_identifier,
    _message,
    _special_use,
    _subtree,
    ancestors,
    canonical_any,
    check_name,
    parent_of,
)

_IN_UIDS = " AND uid = ANY(%s)"
_DELETED = " AND strpos(' ' || flags || ' ', ' \\Deleted ') > 0"


# -- lookups -----------------------------------------------------------------


def _one(conn: psycopg.Connection, sql: Any, args: Sequence[Any] = ()) -> tuple[Any, ...]:
    """The one row ``sql`` yields (its absence is a broken invariant)."""
    row = conn.execute(sql, args).fetchone()
    if row is None:
        raise StoreError(f"database row missing for: {sql}")
    return tuple(row)


_ACCOUNT_ID = (
    "SELECT o.id FROM objects o JOIN domains d ON d.id = o.domain_id"
    " WHERE o.name_lower = %s AND o.kind = 'account' AND (d.name_lower = %s OR d.id ="
    " (SELECT domain_id FROM domain_aliases WHERE alias_lower = %s))"
)


def account_id(conn: psycopg.Connection, domain: str, account: str, *,
               lock: bool = False) -> int:
    """The account's row id (by its domain's name or alias); ``lock`` holds
    the row until the transaction ends: changes of the mailbox tree, the
    subscriptions and aliases of one account (and its SIP bindings) are
    serialised by it, on every node."""
    row = conn.execute(_ACCOUNT_ID + (" FOR UPDATE OF o" if lock else ""),
                       (account.lower(), domain.lower(), domain.lower())).fetchone()
    if row is None:
        raise NotFound(f"no account {account}@{domain}")
    return int(row[0])


_BOX_OF_ACCOUNT = (
    f"SELECT {_BOX_COLS} FROM mailboxes WHERE account_id = ({_ACCOUNT_ID}) AND name = %s"
)
"""One statement for what account_id() and find_mailbox() ask (nearly every
mail call names its mailbox by owner and name; each statement is a GIL
release and reacquire under busy sessions)."""


def find_mailbox(conn: psycopg.Connection, owner: int, name: str, *,
                 lock: bool = False) -> Box | None:
    """``lock``: hold the row until the transaction ends (a change numbers from it)."""
    row = conn.execute(
        f"SELECT {_BOX_COLS} FROM mailboxes WHERE account_id = %s AND name = %s"
        + (" FOR UPDATE" if lock else ""),
        (owner, canonical_mailbox(name)),
    ).fetchone()
    return Box(*row) if row is not None else None


def _box(conn: psycopg.Connection, domain: str, account: str, name: str,
         *, selectable: bool = True, uidvalidity: int | None = None,
         lock: bool = False) -> Box:
    """The mailbox ``name``; with ``uidvalidity``, only that incarnation of it:
    a session's selected mailbox that was deleted and created again (or
    renamed away) is gone for it, in the same transaction as the change it
    asks for (RFC 3501 §2.3.1.1)."""
    row = conn.execute(_BOX_OF_ACCOUNT + (" FOR UPDATE" if lock else ""),
                       (account.lower(), domain.lower(), domain.lower(),
                        canonical_mailbox(name))).fetchone()
    if row is None:  # which one is missing, the account or the mailbox
        account_id(conn, domain, account)
        raise NoSuchMailbox(f"no mailbox {name!r} in {account}@{domain}")
    box = Box(*row)
    if uidvalidity is not None and box.uidvalidity != uidvalidity:
        raise NoSuchMailbox(
            f"mailbox {name!r} in {account}@{domain} was replaced (UIDVALIDITY "
            f"{box.uidvalidity}, not {uidvalidity})")
    if selectable and not box.selectable:
        raise NoSuchMailbox(
            f"{box.name!r} in {account}@{domain} only holds sub-mailboxes (\\Noselect)")
    return box


def mailbox_id(conn: psycopg.Connection, domain: str, account: str, name: str) -> int:
    return _box(conn, domain, account, name, selectable=False).id


def _has_children(conn: psycopg.Connection, owner: int, name: str) -> bool:
    low, high = _subtree(name)
    return conn.execute(
        "SELECT 1 FROM mailboxes WHERE account_id = %s AND name >= %s AND name < %s LIMIT 1",
        (owner, low, high),
    ).fetchone() is not None


def _alias_names(conn: psycopg.Connection, owner: int) -> set[str]:
    return {a for (a,) in conn.execute("SELECT alias FROM mail_aliases WHERE account_id = %s",
                                       (owner,))}


def _check_free(conn: psycopg.Connection, owner: int, name: str) -> None:
    """A new mailbox name may not be (or pass through) a mailbox alias [waypost]."""
    aliases = _alias_names(conn, owner)
    for part in [*ancestors(name), name]:
        if part in aliases:
            raise MailboxExists(f"{part!r} is a mailbox alias; remove the alias first")


# -- the mailbox tree --------------------------------------------------------


def _next_uidvalidity(conn: psycopg.Connection) -> int:
    """UIDVALIDITY only ever grows server-wide (RFC 3501 §2.3.1.1), so a
    mailbox re-created under an old name never reuses a value: the last value
    handed out is kept in ``uidvalidity_mark`` (the largest value among the
    mailboxes that still exist is not enough: deleting the newest mailbox
    would let its value come back within the same second)."""
    return int(_one(conn, (
        "UPDATE uidvalidity_mark SET last = GREATEST(%s, last + 1,"
        " (SELECT COALESCE(MAX(uidvalidity), 0) + 1 FROM mailboxes)) WHERE id = 1"
        " RETURNING last"), (int(time.time()),))[0])  # the UPDATE locks the row: no twins


def _parent_acl(conn: psycopg.Connection, owner: int, name: str) -> str:
    """A sub-mailbox starts with a copy of its parent's ACL; a top-level one empty."""
    parent = parent_of(name)
    if parent is None:
        return "{}"
    row = conn.execute("SELECT acl FROM mailboxes WHERE account_id = %s AND name = %s",
                       (owner, parent)).fetchone()
    return str(row[0]) if row is not None else "{}"


def _insert_box(conn: psycopg.Connection, owner: int, name: str, *, selectable: bool,
                special_use: str | None = None, uidnext: int = 1) -> Box:
    conn.execute(
        "INSERT INTO mailboxes (account_id, name, uidvalidity, uidnext, acl, created, selectable,"
        " special_use, recent_uid) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (owner, name, _next_uidvalidity(conn), uidnext, _parent_acl(conn, owner, name),
         time.time(), int(selectable), special_use, uidnext),
    )
    found = find_mailbox(conn, owner, name)
    assert found is not None
    return found


def _ensure_parents(conn: psycopg.Connection, owner: int, name: str) -> None:
    for parent in ancestors(name):
        if find_mailbox(conn, owner, parent) is None:
            _insert_box(conn, owner, parent, selectable=False)


def create_mailbox(conn: psycopg.Connection, owner: int, name: str) -> Box:
    """Create (or return) a selectable mailbox: INBOX of a new account, the
    INBOX fallback of delivery."""
    found = find_mailbox(conn, owner, name)
    if found is not None:
        return found
    name = canonical_mailbox(name)
    _ensure_parents(conn, owner, name)
    return _insert_box(conn, owner, name, selectable=True)


def create_named(conn: psycopg.Connection, owner: int, name: str,
                 special_use: str | None = None) -> Box:
    """CREATE: ``A/B`` also makes the directory entity ``A``; ``A/`` makes only
    the directory entity; a directory entity becomes a mailbox when created."""
    directory_only = name.endswith("/") and len(name) > 1
    name = check_name(name[:-1] if directory_only else name)
    use = _special_use(special_use)
    _check_free(conn, owner, name)
    found = find_mailbox(conn, owner, name)
    if found is not None:
        if directory_only or found.selectable:
            raise MailboxExists(f"mailbox {name!r} already exists")
        conn.execute(  # a new mailbox under an old name: a new UIDVALIDITY
            "UPDATE mailboxes SET selectable = 1, uidvalidity = %s, special_use = %s WHERE id = %s",
            (_next_uidvalidity(conn), use, found.id),
        )
        box = find_mailbox(conn, owner, name)
        assert box is not None
        return box
    _ensure_parents(conn, owner, name)
    return _insert_box(conn, owner, name, selectable=not directory_only, special_use=use)


def delete_named(conn: psycopg.Connection, owner: int, name: str, recursive: bool) -> None:
    name = canonical_mailbox(name)
    if name == INBOX:
        raise CannotDelete("INBOX cannot be deleted")
    box = find_mailbox(conn, owner, name, lock=True)
    if box is None:
        raise NoSuchMailbox(f"no mailbox {name!r}")
    low, high = _subtree(name)
    if recursive:
        conn.execute("DELETE FROM mailboxes WHERE account_id = %s AND (id = %s OR"
                     " (name >= %s AND name < %s))", (owner, box.id, low, high))
    elif _has_children(conn, owner, name):
        if not box.selectable:
            raise MailboxHasChildren(f"{name!r} has sub-mailboxes: delete them first")
        # RFC 3501: the messages go, the name stays as \Noselect for its children
        _remove(conn, box, "")
        conn.execute("UPDATE mailboxes SET selectable = 0 WHERE id = %s", (box.id,))
    else:
        conn.execute("DELETE FROM mailboxes WHERE id = %s", (box.id,))


def rename_named(conn: psycopg.Connection, owner: int, old: str, new: str) -> None:
    old = canonical_mailbox(old)
    new = check_name(new)
    box = find_mailbox(conn, owner, old, lock=True)
    if box is None:
        raise NoSuchMailbox(f"no mailbox {old!r}")
    if find_mailbox(conn, owner, new) is not None:
        raise MailboxExists(f"mailbox {new!r} already exists")
    _check_free(conn, owner, new)
    _ensure_parents(conn, owner, new)
    if old == INBOX:
        # RFC 3501: the messages move to the new mailbox, INBOX stays (empty);
        # sub-mailboxes of INBOX are not renamed. Sessions on INBOX see EXPUNGEs.
        target = _insert_box(conn, owner, new, selectable=True, uidnext=box.uidnext)
        modseq = box.highestmodseq + 1
        conn.execute("INSERT INTO expunged (mailbox_id, uid, modseq)"
                     " SELECT mailbox_id, uid, %s FROM messages WHERE mailbox_id = %s",
                     (modseq, box.id))
        conn.execute("UPDATE messages SET mailbox_id = %s WHERE mailbox_id = %s",
                     (target.id, box.id))
        conn.execute("UPDATE mailboxes SET highestmodseq = %s WHERE id = %s", (modseq, box.id))
        conn.execute("UPDATE mailboxes SET highestmodseq = %s WHERE id = %s",
                     (box.highestmodseq, target.id))
        return
    low, high = _subtree(old)
    conn.execute(
        "UPDATE mailboxes SET name = %s || substr(name, %s::integer) WHERE account_id = %s"
        " AND (id = %s OR (name >= %s AND name < %s))",
        (new, len(old) + 1, owner, box.id, low, high),
    )


def folders(conn: psycopg.Connection, owner: int) -> list[MailboxEntry]:
    rows = conn.execute(
        "SELECT name, selectable, special_use, acl FROM mailboxes WHERE account_id = %s"
        " ORDER BY name", (owner,),
    ).fetchall()
    parents = {p for (name, *_) in rows for p in ancestors(name)}
    return [MailboxEntry(name=name, selectable=bool(sel), has_children=name in parents,
                         special_use=special_use_of(name, use), acl=json.loads(acl))
            for name, sel, use, acl in rows]


def folder(conn: psycopg.Connection, owner: int, name: str) -> MailboxEntry:
    name = canonical_mailbox(name)
    row = conn.execute(
        "SELECT selectable, special_use, acl FROM mailboxes WHERE account_id = %s AND name = %s",
        (owner, name),
    ).fetchone()
    if row is None:
        raise NoSuchMailbox(f"no mailbox {name!r}")
    return MailboxEntry(name=name, selectable=bool(row[0]),
                        has_children=_has_children(conn, owner, name),
                        special_use=special_use_of(name, row[1]), acl=json.loads(row[2]))


def domain_folders(conn: psycopg.Connection, domain: str | None,
                   shared_only: bool) -> list[tuple[str, str, MailboxEntry]]:
    sql = ("SELECT d.name, o.name, b.name, b.selectable, b.special_use, b.acl,"
           " EXISTS (SELECT 1 FROM mailboxes c WHERE c.account_id = b.account_id"
           " AND c.name >= b.name || '/' AND c.name < b.name || '0')"
           " FROM mailboxes b JOIN objects o ON o.id = b.account_id"
           " JOIN domains d ON d.id = o.domain_id WHERE TRUE")
    args: list[Any] = []
    if domain is not None:
        sql += (" AND (d.name_lower = %s OR d.id ="
                " (SELECT domain_id FROM domain_aliases WHERE alias_lower = %s))")
        args += [domain.lower(), domain.lower()]
    if shared_only:
        sql += " AND b.acl <> '{}'"
    rows = conn.execute(sql + " ORDER BY d.name_lower, o.name_lower, b.name", args)
    return [(dom, acct, MailboxEntry(name=name, selectable=bool(sel), has_children=bool(kids),
                                     special_use=special_use_of(name, use), acl=json.loads(acl)))
            for dom, acct, name, sel, use, acl, kids in rows]


def mailbox_infos(
    conn: psycopg.Connection, domain: str, account: str, name: str | None = None
) -> list[MailboxInfo]:
    owner = account_id(conn, domain, account)
    sql = ("SELECT name, uidvalidity, uidnext, highestmodseq, message_count, total_size,"
           " selectable, special_use FROM mailboxes WHERE account_id = %s")
    args: list[Any] = [owner]
    if name is not None:
        sql += " AND name = %s"
        args.append(canonical_mailbox(name))
    rows = conn.execute(sql + " ORDER BY name", args).fetchall()
    if name is not None and not rows:
        raise NoSuchMailbox(f"no mailbox {name!r} in {account}@{domain}")
    return [MailboxInfo(n, v, u, h, c, s, bool(sel), special_use_of(n, use))
            for n, v, u, h, c, s, sel, use in rows]


# -- ACL, subscriptions, aliases ---------------------------------------------


def set_acl(conn: psycopg.Connection, box: Box, identifier: str, rights: str,
            mode: str) -> str:
    identifier = _check_identifier(identifier)
    if mode not in ACL_MODES:
        raise MailboxError(f"ACL mode must be one of {', '.join(ACL_MODES)}")
    bad = sorted(set(rights) - set(ACL_RIGHTS))
    if bad:
        raise MailboxError(f"unknown rights {''.join(bad)!r}; rights are {ACL_RIGHTS}")
    acl: dict[str, str] = json.loads(
        _one(conn, "SELECT acl FROM mailboxes WHERE id = %s", (box.id,))[0])
    key = next((k for k in acl if k.lower() == identifier.lower()), identifier)
    current = set(acl.pop(key, ""))
    wanted = {"replace": set(rights), "add": current | set(rights),
              "remove": current - set(rights)}[mode]
    result = "".join(r for r in ACL_RIGHTS if r in wanted)
    if result:
        acl[key] = result
    conn.execute("UPDATE mailboxes SET acl = %s WHERE id = %s",
                 (json.dumps(acl, ensure_ascii=False), box.id))
    return result


def subscribe(conn: psycopg.Connection, owner: int, name: str) -> None:
    conn.execute("INSERT INTO mail_subscriptions (account_id, name) VALUES (%s, %s)"
                 " ON CONFLICT DO NOTHING", (owner, canonical_any(name)))


def set_alias(conn: psycopg.Connection, owner: int, alias: str, target: str) -> None:
    alias = check_name(alias)
    target = canonical_any(target)
    if find_mailbox(conn, owner, alias) is not None:
        raise MailboxExists(f"{alias!r} is a mailbox; an alias cannot have its name")
    conn.execute("INSERT INTO mail_aliases (account_id, alias, target) VALUES (%s, %s, %s)"
                 " ON CONFLICT (account_id, alias) DO UPDATE SET target = excluded.target",
                 (owner, alias, target))


# -- messages ----------------------------------------------------------------


def _uid_filter(uids: Sequence[int] | None) -> tuple[str, list[Any]]:
    if uids is None:
        return "", []
    return _IN_UIDS, [[int(u) for u in uids]]


def _insert_message(conn: psycopg.Connection, box: Box, m: NewMailMessage) -> int:
    uid, modseq = box.uidnext, box.highestmodseq + 1
    summary = [m.summary.get(key, "") for key in _SUMMARY]
    conn.execute(
        "INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, blob,"
        " prefix, omit, hdr_from, hdr_subject, hdr_date, hdr_message_id, structure)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (box.id, uid, modseq, " ".join(normalize_flags(m.flags)), m.internal_date, m.size,
         m.blob, m.prefix, json.dumps(m.omit) if m.omit else "", *summary, m.structure),
    )
    conn.execute("UPDATE mailboxes SET uidnext = %s, highestmodseq = %s WHERE id = %s",
                 (uid + 1, modseq, box.id))
    return uid


def store_messages(
    conn: psycopg.Connection, messages: Sequence[NewMailMessage]
) -> list[int | None]:
    uids: list[int | None] = []
    for m in messages:
        if m.queue_keys and not pending_keys(conn, m.queue_keys, m.queue_owner):
            uids.append(None)  # delivered already, or deleted from the queue
            continue
        owner = account_id(conn, m.domain, m.account)
        box = find_mailbox(conn, owner, m.mailbox, lock=True)
        if box is None or not box.selectable:
            if canonical_mailbox(m.mailbox) != INBOX and not m.fallback_inbox:
                raise NoSuchMailbox(f"no mailbox {m.mailbox!r} in {m.account}@{m.domain}")
            box = create_mailbox(conn, owner, INBOX)
        uids.append(_insert_message(conn, box, m))
    return uids


def messages(conn: psycopg.Connection, box: int, uid: int | None = None,
             uids: Sequence[int] | None = None) -> list[MailMessage]:
    sql = f"SELECT {_MESSAGE_COLS} FROM messages WHERE mailbox_id = %s"
    args: list[Any] = [box]
    if uid is not None:
        sql += " AND uid = %s"
        args.append(uid)
    where, more = _uid_filter(uids)
    return [_message(row) for row in conn.execute(sql + where + " ORDER BY uid", args + more)]


def index(conn: psycopg.Connection, box: int) -> list[MessageMeta]:
    return [MessageMeta(uid, modseq, tuple(flags.split()), size, date)
            for uid, modseq, flags, size, date in conn.execute(
                "SELECT uid, modseq, flags, size, internal_date FROM messages"
                " WHERE mailbox_id = %s ORDER BY uid", (box,))]


def set_flags(conn: psycopg.Connection, box: Box, uids: Sequence[int] | None,
              flags: Sequence[str], mode: str, unchanged_since: int | None) -> FlagUpdates:
    if mode not in FLAG_MODES:
        raise MailboxError(f"flag mode must be one of {', '.join(FLAG_MODES)}")
    given = normalize_flags(flags)
    wanted = {f.lower() for f in given}
    where, args = _uid_filter(uids)
    rows = conn.execute(f"SELECT uid, modseq, flags FROM messages WHERE mailbox_id = %s{where}"
                        " ORDER BY uid", [box.id, *args]).fetchall()
    modseq = box.highestmodseq + 1
    result: list[tuple[int, int, tuple[str, ...]]] = []
    modified: list[int] = []
    updates: list[tuple[str, int, int, int]] = []
    for uid, old_modseq, text in rows:
        if unchanged_since is not None and old_modseq > unchanged_since:
            modified.append(uid)
            continue
        current = tuple(text.split())
        if mode == "add":
            have = {f.lower() for f in current}
            new = current + tuple(f for f in given if f.lower() not in have)
        elif mode == "remove":
            new = tuple(f for f in current if f.lower() not in wanted)
        else:
            new = given
        if new == current:
            result.append((uid, old_modseq, current))
        else:
            updates.append((" ".join(new), modseq, box.id, uid))
            result.append((uid, modseq, new))
    if updates:
        conn.cursor().executemany("UPDATE messages SET flags = %s, modseq = %s"
                                  " WHERE mailbox_id = %s AND uid = %s", updates)
        conn.execute("UPDATE mailboxes SET highestmodseq = %s WHERE id = %s", (modseq, box.id))
    return FlagUpdates(result, modified)


def _remove(conn: psycopg.Connection, box: Box, condition: str,
            uids: Sequence[int] | None = None) -> list[int]:
    """Delete messages of ``box`` (matching ``condition``, among ``uids``) and
    log them as expunged with the next MODSEQ; returns their UIDs."""
    where, args = _uid_filter(uids)
    where += condition
    gone = [uid for (uid,) in conn.execute(
        f"SELECT uid FROM messages WHERE mailbox_id = %s{where} ORDER BY uid", [box.id, *args])]
    if not gone:
        return []
    current = _one(conn, "SELECT highestmodseq FROM mailboxes WHERE id = %s",
                   (box.id,))[0]
    modseq = current + 1
    conn.execute("INSERT INTO expunged (mailbox_id, uid, modseq)"
                 " SELECT %s, u, %s FROM unnest(%s::bigint[]) AS u"
                 " ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq",
                 (box.id, modseq, gone))
    conn.execute(f"DELETE FROM messages WHERE mailbox_id = %s{_IN_UIDS}", (box.id, gone))
    conn.execute("UPDATE mailboxes SET highestmodseq = %s WHERE id = %s", (modseq, box.id))
    return gone


def delete_messages(conn: psycopg.Connection, box: int, uids: Sequence[int]) -> int:
    row = _one(conn, f"SELECT {_BOX_COLS} FROM mailboxes WHERE id = %s", (box,))
    return len(_remove(conn, Box(*row), "", uids))


def copy_messages(conn: psycopg.Connection, src: Box, uids: Sequence[int] | None,
                  dst: Box) -> list[tuple[int, int]]:
    """New rows in ``dst`` over the same blobs, in UID order (one INSERT ... SELECT)."""
    where, args = _uid_filter(uids)
    source = [uid for (uid,) in conn.execute(
        f"SELECT uid FROM messages WHERE mailbox_id = %s{where} ORDER BY uid", [src.id, *args])]
    if not source:
        return []
    dst_row = _one(conn, "SELECT uidnext, highestmodseq FROM mailboxes WHERE id = %s",
                   (dst.id,))
    base, modseq = dst_row[0], dst_row[1] + 1
    conn.execute(
        f"INSERT INTO messages (mailbox_id, uid, modseq, {_COPY_COLS})"
        f" SELECT %s, %s + ROW_NUMBER() OVER (ORDER BY uid) - 1, %s, {_COPY_COLS}"
        f" FROM messages WHERE mailbox_id = %s{where}",
        [dst.id, base, modseq, src.id, *args],
    )
    conn.execute("UPDATE mailboxes SET uidnext = %s, highestmodseq = %s WHERE id = %s",
                 (base + len(source), modseq, dst.id))
    return list(zip(source, range(base, base + len(source)), strict=True))


def changes_since(conn: psycopg.Connection, box: Box, since: int,
                  uidnext: int | None) -> MailboxChanges:
    row = _one(conn, "SELECT uidvalidity, uidnext, highestmodseq FROM mailboxes WHERE id = %s",
               (box.id,))
    new: list[MessageMeta] = []
    changed: list[MessageMeta] = []
    for uid, modseq, flags, size, date in conn.execute(
        "SELECT uid, modseq, flags, size, internal_date FROM messages"
        " WHERE mailbox_id = %s AND modseq > %s ORDER BY uid", (box.id, since),
    ):
        meta = MessageMeta(uid, modseq, tuple(flags.split()), size, date)
        (new if uidnext is not None and uid >= uidnext else changed).append(meta)
    expunged = [uid for (uid,) in conn.execute(
        "SELECT uid FROM expunged WHERE mailbox_id = %s AND modseq > %s ORDER BY uid",
        (box.id, since))]
    return MailboxChanges(uidvalidity=row[0], uidnext=row[1], highestmodseq=row[2], new=new,
                          changed=changed, expunged=expunged)


def _usage(conn: psycopg.Connection, domain: str, account: str) -> int:
    row = conn.execute("SELECT bytes FROM mail_usage WHERE account_id = %s",
                       (account_id(conn, domain, account),)).fetchone()
    return int(row[0]) if row else 0


def _within(conn: psycopg.Connection, domain: str, account: str, max_usage: int | None) -> None:
    """Inside the writing transaction: :class:`OverQuota` (the transaction then
    rolls back) when the account's usage, kept by the triggers, ended above
    ``max_usage``. The triggers' upsert of the ``mail_usage`` row locks it
    until commit, and this read (READ COMMITTED) sees the row as the last
    committed writer plus this transaction left it, so two sessions cannot
    both squeeze in."""
    if max_usage is not None and (usage := _usage(conn, domain, account)) > max_usage:
        raise OverQuota(f"over quota: {account}@{domain} would use {usage} of {max_usage} octets")


# -- the Store methods -------------------------------------------------------


class MailStoreMixin:
    """``Store.mail_*`` of the PostgreSQL store (mixed into ``PostgresStore``)."""

    if TYPE_CHECKING:
        def _txn(self, *, sync: bool = True) -> AbstractContextManager[psycopg.Connection]: ...
        def _read(self) -> AbstractContextManager[psycopg.Connection]: ...
        def blob_put(self, data: bytes, *, sync_dir: bool = True) -> str: ...
        def blob_read(self, key: str, offset: int, size: int) -> bytes: ...

    # delivery
    def mail_store(
        self, messages: Sequence[NewMailMessage], settle: Sequence[RecipientUpdate] = (),
    ) -> list[int | None]:
        # Not synced: the copies and the settling of their queue recipients
        # are one transaction, so a power loss that drops it leaves the
        # message queued and delivered again -- never lost, never twice.
        with self._txn(sync=bool(not settle)) as conn:
            uids = store_messages(conn, messages)
            queue_store.settle(conn, settle)
        return uids

    # the mailbox tree
    def mail_create_mailbox(
        self, domain: str, account: str, name: str, *, special_use: str | None = None,
    ) -> MailboxInfo:
        with self._txn() as conn:
            owner = account_id(conn, domain, account, lock=True)
            box = create_named(conn, owner, name, special_use)
            return mailbox_infos(conn, domain, account, box.name)[0]

    def mail_delete_mailbox(
        self, domain: str, account: str, name: str, *, recursive: bool = False,
    ) -> None:
        with self._txn() as conn:
            delete_named(conn, account_id(conn, domain, account, lock=True), name, recursive)

    def mail_rename_mailbox(self, domain: str, account: str, old: str, new: str) -> None:
        with self._txn() as conn:
            rename_named(conn, account_id(conn, domain, account, lock=True), old, new)

    def mail_mailboxes(self, domain: str, account: str) -> list[MailboxInfo]:
        with self._read() as conn:
            return mailbox_infos(conn, domain, account)

    def mail_mailbox(self, domain: str, account: str, name: str) -> MailboxInfo:
        with self._read() as conn:
            return mailbox_infos(conn, domain, account, name)[0]

    def mail_folders(self, domain: str, account: str) -> list[MailboxEntry]:
        with self._read() as conn:
            return folders(conn, account_id(conn, domain, account))

    def mail_folder(self, domain: str, account: str, name: str) -> MailboxEntry:
        with self._read() as conn:
            return folder(conn, account_id(conn, domain, account), name)

    def mail_domain_folders(
        self, domain: str | None, *, shared_only: bool,
    ) -> list[tuple[str, str, MailboxEntry]]:
        with self._read() as conn:
            return domain_folders(conn, domain, shared_only)

    def mail_set_special_use(
        self, domain: str, account: str, name: str, use: str | None,
    ) -> None:
        with self._txn() as conn:
            box = _box(conn, domain, account, name, selectable=False)
            conn.execute("UPDATE mailboxes SET special_use = %s WHERE id = %s",
                         (_special_use(use), box.id))

    # ACL
    def mail_get_acl(self, domain: str, account: str, name: str) -> dict[str, str]:
        with self._read() as conn:
            box = _box(conn, domain, account, name, selectable=False)
            acl = _one(conn, "SELECT acl FROM mailboxes WHERE id = %s", (box.id,))[0]
            return dict(json.loads(acl))

    def mail_set_acl(
        self, domain: str, account: str, name: str, identifier: str, rights: str,
        mode: str = "replace",
    ) -> str:
        with self._txn() as conn:
            box = _box(conn, domain, account, name, selectable=False, lock=True)
            return set_acl(conn, box, identifier, rights, mode)

    def mail_delete_acl(self, domain: str, account: str, name: str, identifier: str) -> bool:
        with self._txn() as conn:
            box = _box(conn, domain, account, name, selectable=False, lock=True)
            acl: dict[str, str] = json.loads(
                _one(conn, "SELECT acl FROM mailboxes WHERE id = %s", (box.id,))[0])
            key = next((k for k in acl if k.lower() == identifier.strip().lower()), None)
            if key is None:
                return False
            del acl[key]
            conn.execute("UPDATE mailboxes SET acl = %s WHERE id = %s",
                         (json.dumps(acl, ensure_ascii=False), box.id))
            return True

    # subscriptions and mailbox aliases
    def mail_subscriptions(self, domain: str, account: str) -> list[str]:
        with self._read() as conn:
            owner = account_id(conn, domain, account)
            return [n for (n,) in conn.execute(
                "SELECT name FROM mail_subscriptions WHERE account_id = %s ORDER BY seq",
                (owner,))]

    def mail_subscribe(self, domain: str, account: str, name: str) -> None:
        with self._txn() as conn:
            subscribe(conn, account_id(conn, domain, account, lock=True), name)

    def mail_unsubscribe(self, domain: str, account: str, name: str) -> bool:
        with self._txn() as conn:
            owner = account_id(conn, domain, account, lock=True)
            return conn.execute(
                "DELETE FROM mail_subscriptions WHERE account_id = %s AND name = %s",
                (owner, canonical_any(name)),
            ).rowcount > 0

    def mail_set_subscriptions(self, domain: str, account: str, names: Sequence[str]) -> None:
        with self._txn() as conn:
            owner = account_id(conn, domain, account, lock=True)
            conn.execute("DELETE FROM mail_subscriptions WHERE account_id = %s", (owner,))
            for name in names:
                subscribe(conn, owner, name)

    def mail_aliases(self, domain: str, account: str) -> dict[str, str]:
        with self._read() as conn:
            owner = account_id(conn, domain, account)
            return dict(conn.execute(
                "SELECT alias, target FROM mail_aliases WHERE account_id = %s ORDER BY alias",
                (owner,)))

    def mail_set_alias(
        self, domain: str, account: str, alias: str, target: str | None,
    ) -> None:
        with self._txn() as conn:
            owner = account_id(conn, domain, account, lock=True)
            if target is not None:
                set_alias(conn, owner, alias, target)
            elif not conn.execute("DELETE FROM mail_aliases WHERE account_id = %s AND alias = %s",
                                  (owner, canonical_mailbox(alias))).rowcount:
                raise NoSuchMailbox(f"{account}@{domain} has no mailbox alias {alias!r}")

    def mail_set_aliases(self, domain: str, account: str, aliases: dict[str, str]) -> None:
        with self._txn() as conn:
            owner = account_id(conn, domain, account, lock=True)
            conn.execute("DELETE FROM mail_aliases WHERE account_id = %s", (owner,))
            for alias, target in aliases.items():
                set_alias(conn, owner, alias, target)

    def mail_apply_template(
        self, domain: str, account: str, *, mailboxes: Sequence[str] = (),
        subscriptions: Sequence[str] = (), aliases: Mapping[str, str] | None = None,
    ) -> None:
        with self._txn() as conn:
            owner = account_id(conn, domain, account, lock=True)
            for name in mailboxes:
                box = find_mailbox(conn, owner, name.rstrip("/"))
                if box is None or (box.selectable == 0 and not name.endswith("/")):
                    create_named(conn, owner, name)
            for name in subscriptions:
                subscribe(conn, owner, name)
            for alias, target in (aliases or {}).items():
                set_alias(conn, owner, alias, target)

    # messages
    def mail_messages(self, domain: str, account: str, mailbox: str) -> list[MailMessage]:
        with self._read() as conn:
            return messages(conn, mailbox_id(conn, domain, account, mailbox))

    def mail_message(self, domain: str, account: str, mailbox: str, uid: int) -> MailMessage:
        with self._read() as conn:
            found = messages(conn, mailbox_id(conn, domain, account, mailbox), uid)
            if not found:
                raise NotFound(f"no message UID {uid} in {mailbox!r} of {account}@{domain}")
            return found[0]

    def mail_fetch(
        self, domain: str, account: str, mailbox: str, uids: Sequence[int] | None,
        *, uidvalidity: int | None = None,
    ) -> list[MailMessage]:
        with self._read() as conn:
            box = _box(conn, domain, account, mailbox, uidvalidity=uidvalidity)
            return messages(conn, box.id, uids=uids)

    def mail_index(self, domain: str, account: str, mailbox: str) -> list[MessageMeta]:
        with self._read() as conn:
            return index(conn, _box(conn, domain, account, mailbox).id)

    def mail_mailbox_state(self, domain: str, account: str, mailbox: str) -> MailboxState:
        with self._read() as conn:
            box = _box(conn, domain, account, mailbox)
            v, n, h, count, unseen, size, recent_uid = _one(
                conn, "SELECT uidvalidity, uidnext, highestmodseq, message_count, unseen_count,"
                " total_size, recent_uid FROM mailboxes WHERE id = %s", (box.id,))
            recent = _one(conn, "SELECT COUNT(*) FROM messages WHERE mailbox_id = %s"
                          " AND uid >= %s", (box.id, recent_uid))[0]
            return MailboxState(uidvalidity=v, uidnext=n, highestmodseq=h, messages=count,
                                unseen=unseen, recent=recent, size=size)

    def mail_usage(self, domain: str, account: str) -> int:
        with self._read() as conn:
            return _usage(conn, domain, account)

    def mail_claim_recent(
        self, domain: str, account: str, mailbox: str, *, upto: int | None = None,
    ) -> int:
        # Not synced (no flush to wait for on every poll that sees new mail):
        # a crash can only make a message \Recent once more (RFC 3501 §2.3.2).
        with self._txn(sync=False) as conn:
            box = _box(conn, domain, account, mailbox, lock=True)
            first = _one(conn, "SELECT recent_uid FROM mailboxes WHERE id = %s",
                         (box.id,))[0]
            if upto is None:
                conn.execute("UPDATE mailboxes SET recent_uid = uidnext WHERE id = %s", (box.id,))
            else:  # never claim what the caller's view does not hold yet
                conn.execute("UPDATE mailboxes SET recent_uid ="
                             " GREATEST(recent_uid, LEAST(uidnext, %s)) WHERE id = %s",
                             (upto, box.id))
            return int(first)

    def mail_set_flags(
        self, domain: str, account: str, mailbox: str, uids: Sequence[int] | None,
        flags: Sequence[str], mode: str, *, unchanged_since: int | None = None,
        uidvalidity: int | None = None,
    ) -> FlagUpdates:
        with self._txn() as conn:
            box = _box(conn, domain, account, mailbox, uidvalidity=uidvalidity, lock=True)
            return set_flags(conn, box, uids, flags, mode, unchanged_since)

    def mail_expunge(
        self, domain: str, account: str, mailbox: str, uids: Sequence[int] | None = None,
        *, uidvalidity: int | None = None,
    ) -> list[int]:
        with self._txn() as conn:
            box = _box(conn, domain, account, mailbox, uidvalidity=uidvalidity, lock=True)
            return _remove(conn, box, _DELETED, uids)

    def mail_delete(self, domain: str, account: str, mailbox: str, uids: Sequence[int]) -> int:
        with self._txn() as conn:
            box = _box(conn, domain, account, mailbox, selectable=False, lock=True)
            return len(_remove(conn, box, "", uids))

    def mail_copy(
        self, domain: str, account: str, mailbox: str, uids: Sequence[int] | None,
        dst_domain: str, dst_account: str, dst_mailbox: str, *, max_usage: int | None = None,
        uidvalidity: int | None = None,
    ) -> CopiedUids:
        with self._txn() as conn:
            src = _box(conn, domain, account, mailbox, uidvalidity=uidvalidity, lock=True)
            dst = _box(conn, dst_domain, dst_account, dst_mailbox, lock=True)
            pairs = copy_messages(conn, src, uids, dst)
            _within(conn, dst_domain, dst_account, max_usage)
            return CopiedUids(pairs, dst.uidvalidity)

    def mail_move(
        self, domain: str, account: str, mailbox: str, uids: Sequence[int] | None,
        dst_domain: str, dst_account: str, dst_mailbox: str, *, max_usage: int | None = None,
        uidvalidity: int | None = None,
    ) -> CopiedUids:
        with self._txn() as conn:  # copy and remove: one transaction (RFC 6851 §3.3)
            src = _box(conn, domain, account, mailbox, uidvalidity=uidvalidity, lock=True)
            dst = _box(conn, dst_domain, dst_account, dst_mailbox, lock=True)
            pairs = copy_messages(conn, src, uids, dst)
            _remove(conn, src, "", [s for s, _ in pairs])
            _within(conn, dst_domain, dst_account, max_usage)
            return CopiedUids(pairs, dst.uidvalidity)

    def mail_append(
        self, domain: str, account: str, mailbox: str, data: bytes, *,
        flags: Sequence[str] = (), internal_date: float | None = None,
        summary: dict[str, str] | None = None, max_usage: int | None = None,
    ) -> tuple[int, int]:
        one = NewAppend(data, tuple(flags), internal_date, dict(summary or {}))
        uidvalidity, uids = self.mail_append_many(
            domain, account, mailbox, [one], max_usage=max_usage
        )
        return uidvalidity, uids[0]

    def mail_append_many(
        self, domain: str, account: str, mailbox: str, messages: Sequence[NewAppend], *,
        max_usage: int | None = None,
    ) -> tuple[int, list[int]]:
        if not messages:
            raise ValueError("nothing to append")
        with self._read() as conn:  # refuse early, before writing the bodies
            _box(conn, domain, account, mailbox)
        keys = [self.blob_put(m.data) for m in messages]  # each committed: durable
        now = time.time()
        with self._txn() as conn:  # one transaction: all or none (RFC 3502 §3)
            uids: list[int] = []
            for key, m in zip(keys, messages, strict=True):
                box = _box(conn, domain, account, mailbox, lock=True)
                uids.append(_insert_message(conn, box, NewMailMessage(
                    domain=domain, account=account, mailbox=mailbox, blob=key,
                    blob_size=len(m.data), flags=m.flags, summary=dict(m.summary),
                    internal_date=now if m.internal_date is None else m.internal_date,
                )))
            _within(conn, domain, account, max_usage)
            return box.uidvalidity, uids

    def mail_header_bytes(self, message: MailMessage) -> bytes:
        """The header section of a stored message (prefix + blob header - omit,
        up to and including the blank line), reading only the head of the blob."""
        data = b""
        while True:
            chunk = self.blob_read(message.blob, len(data), 16384)
            data += chunk
            end = mime.find_header_end(data)
            if end is not None or not chunk:
                break
        head = data if end is None else data[:end]
        parts, pos = [message.prefix], 0
        for start, stop in sorted(message.omit):
            parts.append(head[pos:start])
            pos = max(pos, stop)
        parts.append(head[pos:])
        return b"".join(parts)

    def mail_structure_get(
        self, domain: str, account: str, mailbox: str, uid: int,
    ) -> str | None:
        with self._read() as conn:
            box = _box(conn, domain, account, mailbox)
            row = conn.execute("SELECT structure FROM messages WHERE mailbox_id = %s AND uid = %s",
                               (box.id, uid)).fetchone()
            if row is None:
                raise NotFound(f"no message UID {uid} in {mailbox!r} of {account}@{domain}")
            return row[0]

    def mail_structure_put(
        self, domain: str, account: str, mailbox: str, uid: int, text: str,
    ) -> None:
        self.mail_structures_put(domain, account, mailbox, [(uid, text)])

    def mail_structures_put(
        self, domain: str, account: str, mailbox: str, items: Sequence[tuple[int, str]],
    ) -> None:
        with self._txn() as conn:
            box = _box(conn, domain, account, mailbox)
            conn.cursor().executemany(
                "UPDATE messages SET structure = %s WHERE mailbox_id = %s AND uid = %s",
                [(text, box.id, uid) for uid, text in items])

    def mail_structures(
        self, domain: str, account: str, mailbox: str, uids: Sequence[int] | None,
    ) -> dict[int, str]:
        with self._read() as conn:
            box = _box(conn, domain, account, mailbox)
            where, args = _uid_filter(uids)
            return dict(conn.execute(
                f"SELECT uid, structure FROM messages WHERE mailbox_id = %s{where}"
                " AND structure IS NOT NULL", [box.id, *args]))

    def mail_changes_since(
        self, domain: str, account: str, mailbox: str, modseq: int, *,
        uidnext: int | None = None,
    ) -> MailboxChanges:
        with self._read() as conn:
            return changes_since(conn, _box(conn, domain, account, mailbox), modseq, uidnext)
