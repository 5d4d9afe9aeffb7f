"""State shared by several server processes (issue 15 point 3), end to end.

Two ``waypost serve`` processes, A and B, on ONE data directory with
different port offsets (each a lone worker, so a test can address each):
login failures and lock-outs count across both, a POP3 maildrop opened
through one is ``[IN-USE]`` in the other, a WebUser session made on one is
valid on the other and ends on both at logout, and IMAP IDLE on one sees an
APPEND made through the other.
"""

from __future__ import annotations

import concurrent.futures
import imaplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.server import WaypostServer

PW = "xproc-pw-1234"
LIMIT = 4
TIMEOUT = 20.0
SETTINGS = (("LoginFailureLimit", LIMIT), ("LoginFailureWindow", 120), ("LoginLockout", 120),
            ("LoginFailureMaxDelay", 1))
USERS = ("lou", "cara", "para", "paula", "wendy", "ida", "kim")


def start_twins(data: Path, settings: tuple[tuple[str, object], ...] = SETTINGS
                ) -> tuple[WaypostServer, WaypostServer]:
    """``init``, the accounts and settings, then A and B (B logs to its own file)."""
    a = WaypostServer(data).init()
    for name in USERS:
        a.cli("account", "add", f"{name}@{a.domain}", "--password", PW)
    for name, value in settings:
        a.cli("settings", "set", name, str(value))
    b = WaypostServer(data)
    b.log = data.parent / f"{data.name}-server-b.log"
    a.start()
    try:
        b.start()
    except BaseException:
        a.stop()
        raise
    return a, b


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WaypostServer, WaypostServer]]:
    a, b = start_twins(tmp_path_factory.mktemp("xproc") / "var")
    yield a, b
    b.stop()
    a.stop()


def port(srv: WaypostServer, setting: str) -> int:
    return srv.port(setting)


def imap_login(srv: WaypostServer, user: str, password: str) -> str:
    """``OK`` or the NO text of one IMAP LOGIN on a new connection."""
    conn = imaplib.IMAP4("127.0.0.1", port(srv, "IMAPPort"), timeout=TIMEOUT)
    try:
        conn.login(f"{user}@{srv.domain}", password)
    except imaplib.IMAP4.error as exc:
        return str(exc)
    finally:
        conn.shutdown()
    return "OK"


def verifications(srv: WaypostServer, proto: str, user: str) -> int:
    return srv.logs().count(f"{proto} password verification for '{user}@{srv.domain}'")


# -- login failures --------------------------------------------------------------------------


def test_failures_split_over_two_processes_lock_out_on_both(twins) -> None:
    a, b = twins
    for srv in (a, b, a, b):  # LIMIT wrong passwords in total, alternating
        assert "AUTHENTICATIONFAILED" in imap_login(srv, "lou", "wrong")
    # locked on both: the right password is refused without being verified
    assert "AUTHENTICATIONFAILED" in imap_login(a, "lou", PW)
    assert "AUTHENTICATIONFAILED" in imap_login(b, "lou", PW)
    assert verifications(a, "IMAP", "lou") + verifications(b, "IMAP", "lou") == LIMIT
    assert "locked out" in a.logs() + b.logs()
    assert imap_login(b, "kim", PW) == "OK"  # another account is not affected


def test_a_success_on_one_process_clears_the_pair_on_the_other(twins) -> None:
    a, b = twins
    for _ in range(LIMIT - 1):
        assert "AUTHENTICATIONFAILED" in imap_login(a, "cara", "wrong")
    assert imap_login(b, "cara", PW) == "OK"  # clears the three failures made on A
    for _ in range(LIMIT - 1):
        assert "AUTHENTICATIONFAILED" in imap_login(a, "cara", "wrong")
    assert imap_login(a, "cara", PW) == "OK"  # 3, not 6: not locked out


def test_parallel_guesses_over_two_processes_are_bounded(twins) -> None:
    a, b = twins
    servers = [a, b] * 8
    with concurrent.futures.ThreadPoolExecutor(len(servers)) as pool:
        replies = list(pool.map(lambda s: imap_login(s, "ida", "wrong"), servers))
    assert all("AUTHENTICATIONFAILED" in r for r in replies)
    verified = verifications(a, "IMAP", "ida") + verifications(b, "IMAP", "ida")
    # LIMIT, plus at most one unreserved first attempt per other process
    assert LIMIT <= verified <= LIMIT + 1, verified
    assert "AUTHENTICATIONFAILED" in imap_login(b, "ida", PW)
