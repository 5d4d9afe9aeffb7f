"""The private Postfix of ``tests/support/postfix.py`` receives and stores mail."""

from __future__ import annotations

import smtplib

import pytest
from tests.support.postfix import PostfixInstance, postfix_missing_reason

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(postfix_missing_reason() is not None, reason=postfix_missing_reason() or ""),
]

MESSAGE = (
    b"From: Alice <alice@sender.test>\r\n"
    b"To: bob@domain.dom\r\n"
    b"Subject: smoke\r\n"
    b"Message-ID: <smoke@sender.test>\r\n"
    b"\r\n"
    b"Hello Postfix.\r\n"
)


def test_postfix_stores_what_it_receives() -> None:
    with PostfixInstance("127.0.0.2", domains=["domain.dom"], hostname="old.test") as old:
        with smtplib.SMTP("127.0.0.2", 25, timeout=15) as client:
            assert client.ehlo()[0] == 250
            assert client.sendmail("alice@sender.test", ["bob@domain.dom"], MESSAGE) == {}
            assert client.rcpt("x@not-served.test")[0] == 503  # no MAIL: nothing queued
        rcpt, data = old.wait_for_messages(1)[0]
        assert rcpt == "bob@domain.dom"
        # Postfix stores LF line ends and puts its trace fields on top
        sent = MESSAGE.replace(b"\r\n", b"\n")
        assert data.endswith(sent)
        head = data[: -len(sent)]
        assert b"Delivered-To: bob@domain.dom\n" in head
        assert b"X-Original-To: bob@domain.dom\n" in head
        assert b"by old.test (Postfix)" in head
        assert old.count() == 1
    assert not old.root.exists()


def test_two_instances_side_by_side() -> None:
    with (
        PostfixInstance("127.0.0.2", domains=["a.test"]) as a,
        PostfixInstance("127.0.0.3", domains=["b.test"]) as b,
    ):
        for ip, rcpt in (("127.0.0.2", "x@a.test"), ("127.0.0.3", "y@b.test")):
            with smtplib.SMTP(ip, 25, timeout=15) as client:
                client.sendmail("s@sender.test", [rcpt], MESSAGE)
        assert [r for r, _ in a.wait_for_messages(1)] == ["x@a.test"]
        assert [r for r, _ in b.wait_for_messages(1)] == ["y@b.test"]
