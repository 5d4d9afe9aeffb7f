"""The world of the SIP registrar and digest tests: the router.md §10 fixture
(``directory.py``) where alice@domain.dom and john@domain.dom keep a
sealed copy of their passwords (``PasswordEncryption`` = ``argon2+cram-md5``,
which SIP digest needs), and a REGISTER builder over plain values."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.directory import PASSWORDS, build_spec_fixture

from waypost.services.container import Services, open_services
from waypost.services.signals.registrar import Contact, RegisterRequest

ALICE = "alice@domain.dom"
JOHN = "john@domain.dom"
SIP_ACCOUNTS = (ALICE, JOHN)


def open_sip_world(data: Path) -> Services:
    """A fresh store in ``data`` with the fixture; the caller closes it."""
    svc = open_services(data, create=True)
    build_spec_fixture(svc.directory)
    for account in SIP_ACCOUNTS:
        svc.directory.set_account_settings(account, {
            "PasswordEncryption": "argon2+cram-md5", "Password": PASSWORDS[account]})
    return svc


@contextmanager
def sip_world(data: Path) -> Iterator[Services]:
    """:func:`open_sip_world`, closed at the end (a test's fixture)."""
    svc = open_sip_world(data)
    try:
        yield svc
    finally:
        svc.close()


def request(*contacts: str | Contact, to: str = f"sip:{ALICE}", account: str = ALICE,
            call_id: str = "call-1@phone", cseq: int = 1, expires: int | None = None,
            user_agent: str = "TestPhone/1.0") -> RegisterRequest:
    """A REGISTER from 192.0.2.7:5062 over UDP; plain strings are contacts
    without parameters."""
    return RegisterRequest(
        to=to, call_id=call_id, cseq=cseq, account=account, expires=expires,
        contacts=tuple(c if isinstance(c, Contact) else Contact(c) for c in contacts),
        transport="UDP", address="192.0.2.7", port=5062, user_agent=user_agent)
