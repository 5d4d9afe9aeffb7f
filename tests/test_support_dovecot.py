"""The private Dovecot of ``tests/support/dovecot.py`` serves its Maildir over IMAP."""

from __future__ import annotations

import imaplib
import time
from pathlib import Path

import pytest
from tests.support.dovecot import DovecotInstance, dovecot_missing_reason, free_port, running

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(dovecot_missing_reason() is not None, reason=dovecot_missing_reason() or ""),
]


def message(n: int, size: int = 0) -> bytes:
    return (
        (
            f"From: Alice <alice@sender.test>\r\n"
            f"To: bench@domain.dom\r\n"
            f"Subject: smoke {n}\r\n"
            f"Message-ID: <smoke-{n}@sender.test>\r\n"
            f"\r\n"
            f"Hello Dovecot, message {n}.\r\n"
        ).encode()
        + b"x" * size
        + b"\r\n"
    )


def test_dovecot_serves_the_maildir(tmp_path: Path) -> None:
    dovecot = DovecotInstance(tmp_path, free_port())
    sent = [message(1), message(2, 3000), message(3)]
    try:
        dovecot.prepare()
        dovecot.add_message(sent[0], "S", when=time.time() - 3600)
        dovecot.add_message(sent[1], "FS")
        dovecot.add_message(sent[2])
        dovecot.start()
        assert dovecot.pids()[0] == dovecot.pid
        with imaplib.IMAP4("127.0.0.1", dovecot.port, timeout=15) as imap:
            assert imap.login(dovecot.user, dovecot.password)[0] == "OK"
            typ, data = imap.select("INBOX")
            assert typ == "OK" and int(data[0]) == 3
            typ, data = imap.fetch("1:*", "(UID FLAGS RFC822.SIZE)")
            assert typ == "OK" and len(data) == 3
            # UIDs in the order the messages were added; sizes as sent (CRLF)
            assert b"UID 1 " in data[0] and b"\\Seen" in data[0]
            assert b"\\Flagged" in data[1] and f"RFC822.SIZE {len(sent[1])}".encode() in data[1]
            assert b"\\Seen" not in data[2]
            typ, data = imap.fetch("2", "(BODY.PEEK[])")
            assert typ == "OK" and data[0][1] == sent[1]
            typ, data = imap.search(None, "TEXT", '"message 3"')
            assert typ == "OK" and data[0].split() == [b"3"]
        # a wrong password is refused
        with (
            imaplib.IMAP4("127.0.0.1", dovecot.port, timeout=15) as other,
            pytest.raises(imaplib.IMAP4.error),
        ):
            other.login(dovecot.user, "wrong")
    finally:
        pids = dovecot.pids()
        dovecot.stop()
    assert len(pids) > 3 and not any(running(pid) for pid in pids)  # master, log, auth, ...
    assert not dovecot.root.exists()


def test_dovecot_with_argon2id_passwords_and_keywords(tmp_path: Path) -> None:
    """As bench/imap.py runs it: ARGON2ID in the passwd-file, the auth cache
    on, and Maildir keyword letters named in ``dovecot-keywords``."""
    dovecot = DovecotInstance(
        tmp_path, free_port(), users={"carol": "secret-1"}, scheme="ARGON2ID",
        extra="auth_cache_size = 1M\nauth_cache_ttl = 60 secs\n",
    )  # fmt: skip
    try:
        dovecot.prepare()
        assert (dovecot.root / "users").read_text().startswith("carol:{ARGON2ID}$argon2id$")
        assert "secret-1" not in (dovecot.root / "users").read_text()
        letters = dovecot.set_keywords(["$Junk", "Work"])
        assert letters == "ab"
        dovecot.add_message(message(1), "Sa")
        dovecot.add_message(message(2), "b")
        dovecot.start()
        for _ in range(2):  # the second login is answered from the cache
            with imaplib.IMAP4("127.0.0.1", dovecot.port, timeout=30) as imap:
                assert imap.login("carol", "secret-1")[0] == "OK"
                assert imap.select("INBOX")[0] == "OK"
                typ, data = imap.uid("SEARCH", "KEYWORD", "$Junk")
                assert typ == "OK" and data[0].split() == [b"1"]
                typ, data = imap.fetch("2", "(FLAGS)")
                assert typ == "OK" and b"Work)" in data[0] and b"$Junk" not in data[0]
        with (
            imaplib.IMAP4("127.0.0.1", dovecot.port, timeout=30) as other,
            pytest.raises(imaplib.IMAP4.error),
        ):
            other.login("carol", "secret-2")
    finally:
        dovecot.stop()
