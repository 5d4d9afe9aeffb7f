"""Versioned schema of the embedded SQLite store.

``MIGRATIONS`` is append-only: never edit or renumber an entry that has been
released, add a new one with the next version instead. :func:`migrate` runs
the missing ones at open, all in one transaction, and records each in
``schema_version``, so a half-applied upgrade never exists on disk.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence

from waypost.storage.interface import StoreError

Migration = tuple[int, str, str]

MIGRATIONS: list[Migration] = [
    (
        1,
        "directory: settings, router table, domains, domain aliases, objects",
        """
        CREATE TABLE meta (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            change_counter INTEGER NOT NULL
        );
        INSERT INTO meta (id, change_counter) VALUES (1, 0);

        CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );

        CREATE TABLE router_table (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            text TEXT NOT NULL
        );
        INSERT INTO router_table (id, text) VALUES (1, '');

        CREATE TABLE domains (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            name_lower TEXT NOT NULL UNIQUE,
            is_main INTEGER NOT NULL DEFAULT 0,
            settings TEXT NOT NULL DEFAULT '{}',
            account_defaults TEXT NOT NULL DEFAULT '{}',
            template TEXT NOT NULL DEFAULT '{}'
        );
        -- exactly one Main Domain: at most one row may have is_main = 1
        CREATE UNIQUE INDEX domains_one_main ON domains (is_main) WHERE is_main = 1;

        CREATE TABLE domain_aliases (
            alias_lower TEXT PRIMARY KEY,
            alias TEXT NOT NULL,
            domain_id INTEGER NOT NULL REFERENCES domains (id) ON DELETE CASCADE
        );
        CREATE INDEX domain_aliases_domain ON domain_aliases (domain_id);

        -- accounts, aliases, forwarders, groups, lists: one name space per domain
        CREATE TABLE objects (
            id INTEGER PRIMARY KEY,
            domain_id INTEGER NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            name_lower TEXT NOT NULL,
            kind TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}',
            secret TEXT,
            UNIQUE (domain_id, name_lower)
        );
        CREATE INDEX objects_kind ON objects (domain_id, kind);
        """,
    ),
    (
        2,
        "queue: messages, per-recipient delivery state, blob collection candidates",
        """
        -- one row per accepted message; the body is the content-addressed blob
        CREATE TABLE queue_messages (
            id TEXT PRIMARY KEY,
            mail_from TEXT NOT NULL,
            params TEXT NOT NULL DEFAULT '{}',
            client_ip TEXT NOT NULL DEFAULT '',
            helo TEXT NOT NULL DEFAULT '',
            auth_user TEXT,
            trusted INTEGER NOT NULL DEFAULT 0,
            protocol TEXT NOT NULL DEFAULT '',
            blob TEXT NOT NULL,
            size INTEGER NOT NULL,
            created REAL NOT NULL
        );
        CREATE INDEX queue_messages_blob ON queue_messages (blob);

        -- one row per destination (route) of one envelope recipient
        CREATE TABLE queue_recipients (
            id INTEGER PRIMARY KEY,
            message_id TEXT NOT NULL REFERENCES queue_messages (id) ON DELETE CASCADE,
            address TEXT NOT NULL,
            module TEXT NOT NULL,
            queue TEXT NOT NULL DEFAULT '',
            route_address TEXT NOT NULL DEFAULT '',
            real_to TEXT,
            mailbox TEXT,
            notify TEXT NOT NULL DEFAULT '',
            orcpt TEXT,
            state TEXT NOT NULL DEFAULT 'queued',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt REAL NOT NULL,
            last_error TEXT NOT NULL DEFAULT '',
            released INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX queue_recipients_message ON queue_recipients (message_id);
        CREATE INDEX queue_recipients_due ON queue_recipients (next_attempt)
            WHERE state IN ('queued', 'deferred');
        CREATE INDEX queue_recipients_queue ON queue_recipients (module, queue)
            WHERE state IN ('queued', 'deferred');

        -- blobs that lost a reference; the collector checks them (no refcounts
        -- to keep right: a blob is live while any row names it)
        CREATE TABLE blob_candidates (
            hash TEXT PRIMARY KEY
        );
        CREATE TRIGGER queue_messages_blob_gone AFTER DELETE ON queue_messages
        BEGIN
            INSERT OR IGNORE INTO blob_candidates (hash) VALUES (old.blob);
        END;
        """,
    ),
    (
        3,
        "mailstore: mailboxes per account, message metadata over blobs",
        """
        CREATE TABLE mailboxes (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            uidvalidity INTEGER NOT NULL,
            uidnext INTEGER NOT NULL DEFAULT 1,
            highestmodseq INTEGER NOT NULL DEFAULT 0,
            acl TEXT NOT NULL DEFAULT '{}',
            created REAL NOT NULL,
            UNIQUE (account_id, name)
        );

        -- the stored message is prefix + blob minus the omitted byte ranges:
        -- per-delivery headers never copy the shared body
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
            uid INTEGER NOT NULL,
            modseq INTEGER NOT NULL DEFAULT 0,
            flags TEXT NOT NULL DEFAULT '',
            internal_date REAL NOT NULL,
            size INTEGER NOT NULL,
            blob TEXT NOT NULL,
            prefix BLOB NOT NULL DEFAULT x'',
            omit TEXT NOT NULL DEFAULT '',
            hdr_from TEXT NOT NULL DEFAULT '',
            hdr_subject TEXT NOT NULL DEFAULT '',
            hdr_date TEXT NOT NULL DEFAULT '',
            hdr_message_id TEXT NOT NULL DEFAULT '',
            UNIQUE (mailbox_id, uid)
        );
        CREATE INDEX messages_blob ON messages (blob);
        CREATE TRIGGER messages_blob_gone AFTER DELETE ON messages
        BEGIN
            INSERT OR IGNORE INTO blob_candidates (hash) VALUES (old.blob);
        END;
        """,
    ),
    (
        4,
        "mailstore for IMAP: mailbox tree, counters, expunge log, subscriptions, aliases",
        """
        -- selectable = 0: only the "directory" entity of the name exists (\\Noselect),
        -- special_use NULL = by name (Sent, Drafts, ...), '' = none,
        -- recent_uid: messages from this UID on are \\Recent for the next session
        ALTER TABLE mailboxes ADD COLUMN selectable INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE mailboxes ADD COLUMN special_use TEXT;
        ALTER TABLE mailboxes ADD COLUMN recent_uid INTEGER NOT NULL DEFAULT 1;
        -- counters kept by the triggers below: STATUS and SELECT read O(1)
        ALTER TABLE mailboxes ADD COLUMN message_count INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE mailboxes ADD COLUMN unseen_count INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE mailboxes ADD COLUMN total_size INTEGER NOT NULL DEFAULT 0;
        UPDATE mailboxes SET
            message_count = (SELECT COUNT(*) FROM messages m WHERE m.mailbox_id = mailboxes.id),
            unseen_count = (SELECT COUNT(*) FROM messages m WHERE m.mailbox_id = mailboxes.id
                            AND instr(' ' || m.flags || ' ', ' \\Seen ') = 0),
            total_size = (SELECT COALESCE(SUM(size), 0) FROM messages m
                          WHERE m.mailbox_id = mailboxes.id),
            recent_uid = uidnext;

        -- the parsed MIME structure (JSON), cached at the first FETCH
        ALTER TABLE messages ADD COLUMN structure TEXT;
        CREATE INDEX messages_modseq ON messages (mailbox_id, modseq);

        CREATE TRIGGER messages_count_insert AFTER INSERT ON messages
        BEGIN
            UPDATE mailboxes SET message_count = message_count + 1,
                unseen_count = unseen_count + (instr(' ' || new.flags || ' ', ' \\Seen ') = 0),
                total_size = total_size + new.size
            WHERE id = new.mailbox_id;
        END;
        CREATE TRIGGER messages_count_delete AFTER DELETE ON messages
        BEGIN
            UPDATE mailboxes SET message_count = message_count - 1,
                unseen_count = unseen_count - (instr(' ' || old.flags || ' ', ' \\Seen ') = 0),
                total_size = total_size - old.size
            WHERE id = old.mailbox_id;
        END;
        CREATE TRIGGER messages_count_update AFTER UPDATE OF flags, size, mailbox_id ON messages
        WHEN old.mailbox_id <> new.mailbox_id OR old.size <> new.size
            OR (instr(' ' || old.flags || ' ', ' \\Seen ') = 0)
               <> (instr(' ' || new.flags || ' ', ' \\Seen ') = 0)
        BEGIN
            UPDATE mailboxes SET message_count = message_count - 1,
                unseen_count = unseen_count - (instr(' ' || old.flags || ' ', ' \\Seen ') = 0),
                total_size = total_size - old.size
            WHERE id = old.mailbox_id;
            UPDATE mailboxes SET message_count = message_count + 1,
                unseen_count = unseen_count + (instr(' ' || new.flags || ' ', ' \\Seen ') = 0),
                total_size = total_size + new.size
            WHERE id = new.mailbox_id;
        END;

        -- expunged UIDs with the MODSEQ of their removal (sessions, QRESYNC)
        CREATE TABLE expunged (
            mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
            uid INTEGER NOT NULL,
            modseq INTEGER NOT NULL,
            PRIMARY KEY (mailbox_id, uid)
        ) WITHOUT ROWID;
        CREATE INDEX expunged_modseq ON expunged (mailbox_id, modseq);

        -- the Mailbox Subscription list (names as written, foreign ones too)
        CREATE TABLE mail_subscriptions (
            account_id INTEGER NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            PRIMARY KEY (account_id, name)
        );

        -- Mailbox Aliases: alias name -> mailbox name (often foreign)
        CREATE TABLE mail_aliases (
            account_id INTEGER NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
            alias TEXT NOT NULL,
            target TEXT NOT NULL,
            PRIMARY KEY (account_id, alias)
        );
        """,
    ),
    (
        5,
        "account file storage: one random key per account names its tree of files",
        """
        -- files live in DATA/webfiles/<key>/; a random key (never an id that SQLite
        -- could hand out again) so a new account never sees a deleted one's files
        CREATE TABLE file_roots (
            account_id INTEGER PRIMARY KEY REFERENCES objects (id) ON DELETE CASCADE,
            key TEXT NOT NULL UNIQUE
        );
        """,
    ),
    (
        6,
        "UIDVALIDITY high-water mark: never handed out twice, whatever is deleted",
        """
        CREATE TABLE uidvalidity_mark (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            last INTEGER NOT NULL
        );
        INSERT INTO uidvalidity_mark (id, last)
            SELECT 1, COALESCE(MAX(uidvalidity), 0) FROM mailboxes;
        """,
    ),
    (
        7,
        "mail usage per account: the octets of its messages, kept by triggers (QUOTA)",
        """
        -- RFC 9208 STORAGE and MaxAccountSize enforcement read one row, never a sum.
        -- Message triggers keep it while the mailbox row exists; deleting a
        -- mailbox takes its total_size away at once (the messages its cascade
        -- removes then find no mailbox and change nothing).
        CREATE TABLE mail_usage (
            account_id INTEGER PRIMARY KEY REFERENCES objects (id) ON DELETE CASCADE,
            bytes INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO mail_usage (account_id, bytes)
            SELECT account_id, SUM(total_size) FROM mailboxes GROUP BY account_id;

        CREATE TRIGGER mail_usage_insert AFTER INSERT ON messages
        BEGIN
            INSERT INTO mail_usage (account_id, bytes)
                SELECT account_id, new.size FROM mailboxes WHERE id = new.mailbox_id
                ON CONFLICT (account_id) DO UPDATE SET bytes = bytes + excluded.bytes;
        END;
        CREATE TRIGGER mail_usage_delete AFTER DELETE ON messages
        BEGIN
            UPDATE mail_usage SET bytes = bytes - old.size WHERE account_id =
                (SELECT account_id FROM mailboxes WHERE id = old.mailbox_id);
        END;
        CREATE TRIGGER mail_usage_update AFTER UPDATE OF size, mailbox_id ON messages
        WHEN old.mailbox_id <> new.mailbox_id OR old.size <> new.size
        BEGIN
            UPDATE mail_usage SET bytes = bytes - old.size WHERE account_id =
                (SELECT account_id FROM mailboxes WHERE id = old.mailbox_id);
            INSERT INTO mail_usage (account_id, bytes)
                SELECT account_id, new.size FROM mailboxes WHERE id = new.mailbox_id
                ON CONFLICT (account_id) DO UPDATE SET bytes = bytes + excluded.bytes;
        END;
        CREATE TRIGGER mail_usage_mailbox_gone AFTER DELETE ON mailboxes
        BEGIN
            UPDATE mail_usage SET bytes = bytes - old.total_size
            WHERE account_id = old.account_id;
        END;
        """,
    ),
    (
        8,
        "queue: each recipient's delivery history (waypost queue show)",
        """
        -- one row per attempt or held look; goes with its recipient row
        CREATE TABLE queue_history (
            id INTEGER PRIMARY KEY,
            recipient_id INTEGER NOT NULL REFERENCES queue_recipients (id) ON DELETE CASCADE,
            at REAL NOT NULL,
            status TEXT NOT NULL,
            reply TEXT NOT NULL DEFAULT '',
            relay TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX queue_history_recipient ON queue_history (recipient_id);
        """,
    ),
    (
        9,
        "SIP registrations: the contact bindings of each account (RFC 3261 section 10)",
        """
        -- one row per registered contact; owned by the account row, so a renamed
        -- account keeps its phones and a deleted one loses them. ``key`` is the
        -- binding's identity chosen by the registrar (the contact URI compared
        -- as RFC 3261 19.1.4 says, or +sip.instance and reg-id, RFC 5626).
        CREATE TABLE sip_bindings (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            contact TEXT NOT NULL,
            expires REAL NOT NULL,
            q INTEGER,
            call_id TEXT NOT NULL,
            cseq INTEGER NOT NULL,
            instance TEXT,
            reg_id INTEGER,
            transport TEXT NOT NULL DEFAULT '',
            address TEXT NOT NULL DEFAULT '',
            port INTEGER NOT NULL DEFAULT 0,
            user_agent TEXT NOT NULL DEFAULT '',
            registered REAL NOT NULL,
            UNIQUE (account_id, key)
        );
        CREATE INDEX sip_bindings_expires ON sip_bindings (expires);
        """,
    ),
    (
        10,
        "queue: leased claims, so several processes deliver each recipient once (issue 15)",
        """
        -- the process delivering the recipient (host:pid:random) and until when
        -- its lease runs; NULL/0 while unclaimed. Settling clears both; a lease
        -- that ran out (its owner died) makes the recipient claimable again.
        ALTER TABLE queue_recipients ADD COLUMN owner TEXT;
        ALTER TABLE queue_recipients ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
        CREATE INDEX queue_recipients_owner ON queue_recipients (owner)
            WHERE owner IS NOT NULL;
        """,
    ),
]


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply the migrations newer than the database; return the versions applied.

    ``conn`` must be in autocommit mode (``isolation_level=None``): this
    function opens and commits its own ``BEGIN IMMEDIATE`` transaction, so two
    processes opening the same new database do not both migrate it.
    """
    _check_order(migrations)
    latest = migrations[-1][0] if migrations else 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
        if current > latest:
            raise StoreError(
                f"the database schema (version {current}) is newer than this Waypost"
                f" (version {latest}); upgrade Waypost"
            )
        applied = []
        for version, description, sql in migrations:
            if version <= current:
                continue
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (version, description, time.time()),
            )
            applied.append(version)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return applied


def schema_versions(conn: sqlite3.Connection) -> list[int]:
    return [row[0] for row in conn.execute("SELECT version FROM schema_version ORDER BY version")]


def _check_order(migrations: Sequence[Migration]) -> None:
    versions = [m[0] for m in migrations]
    if versions != sorted(set(versions)) or (versions and versions[0] < 1):
        raise StoreError(f"migration versions must be unique and increasing: {versions}")


def _statements(sql: str) -> Iterator[str]:
    """Split a script into statements (``executescript`` would commit our transaction)."""
    buffer = ""
    for piece in sql.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n\t;"):
                yield buffer.strip()
            buffer = ""
    if buffer.strip(" \n\t;"):
        raise StoreError(f"incomplete SQL statement in migration: {buffer.strip()[:60]!r}")
