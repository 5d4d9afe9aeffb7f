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
import poplib
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.support.server import WaypostServer

from waypost.protocols.imap.session import IDLE_POLL
from waypost.storage.open import open_store

PW = "xproc-pw-1234"
LIMIT = 4
TIMEOUT = 20.0
SETTINGS = (("LoginFailureLimit", LIMIT), ("LoginFailureWindow", 120), ("LoginLockout", 120),
            ("LoginFailureMaxDelay", 1))
USERS = ("lou", "cara", "para", "paula", "wendy", "ida", "kim", "nina")


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


# -- POP3 maildrop locks -----------------------------------------------------------------------


def pop3(srv: WaypostServer, user: str) -> poplib.POP3:
    """A POP3 session logged in as ``user`` (raises error_proto when refused)."""
    conn = poplib.POP3("127.0.0.1", srv.port("POP3Port"), timeout=TIMEOUT)
    conn.user(f"{user}@{srv.domain}")
    try:
        conn.pass_(PW)
    except poplib.error_proto:
        conn.close()
        raise
    return conn


def refused_in_use(srv: WaypostServer, user: str) -> bool:
    try:
        pop3(srv, user).quit()
    except poplib.error_proto as exc:
        assert b"[IN-USE]" in exc.args[0], exc
        return True
    return False


def test_pop3_maildrop_is_in_use_across_processes_and_freed_at_quit(twins) -> None:
    a, b = twins
    held = pop3(a, "para")
    try:
        assert refused_in_use(b, "para")
        assert refused_in_use(a, "para")  # and in its own process
    finally:
        held.quit()
    assert not refused_in_use(b, "para")  # freed at once by QUIT


def test_pop3_maildrop_freed_when_the_connection_drops(twins) -> None:
    a, b = twins
    held = pop3(b, "para")
    assert refused_in_use(a, "para")
    held.close()  # no QUIT: nothing deleted, the lock dropped all the same
    deadline = time.monotonic() + 5
    while refused_in_use(a, "para"):
        assert time.monotonic() < deadline, "the lock outlived the connection"
        time.sleep(0.1)


def test_pop3_lock_of_a_killed_process(tmp_path: Path) -> None:
    """Renewed while held; a holder of this host killed with ``kill -9`` is
    seen gone and its lock taken over at once; a holder elsewhere (another
    node, which cannot be checked) is waited out until its lease ends."""
    lease = 4  # renewed every 1.3 s; slack below for a loaded machine
    a, b = start_twins(tmp_path / "var", (*SETTINGS, ("POP3LockLease", lease)))
    try:
        held = pop3(a, "paula")
        time.sleep(lease * 1.5)  # renewed meanwhile: still held
        assert refused_in_use(b, "paula"), "the lease was not renewed"
        store = open_store(a.data)
        try:
            name = next(n for n in (f"pop3:paula@{a.domain}", "pop3:paula")
                        if store.shared_lock_holder(n))
            a.kill()  # kill -9 with the lock held
            held.close()
            assert not refused_in_use(b, "paula"), "a dead local holder kept the maildrop"
            assert store.shared_lock_holder(name) is None  # b's session ended: dropped
            foreign = "other-node.example:4711:abcd1234"
            assert store.shared_lock_take(name, foreign, now=time.time(), ttl=lease)
            taken = time.monotonic()
            assert refused_in_use(b, "paula"), "another node's live lease was ignored"
            deadline = taken + lease + 10
            while refused_in_use(b, "paula"):
                assert time.monotonic() < deadline, "the lease never ran out"
                time.sleep(0.2)
            assert time.monotonic() - taken >= lease / 3  # freed by the lease alone
        finally:
            store.close()
    finally:
        b.stop()
        a.stop()


# -- WebUser sessions ------------------------------------------------------------------------


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrfToken"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrfToken"',
                      page)
    assert found, page[:2000]
    return found.group(1) or found.group(2)


def test_webuser_session_made_on_one_process_works_on_the_other_until_logout(twins) -> None:
    a, b = twins
    # One browser (cookies are per host, not per port): the login form from A,
    # posted to B (the form's token is signed by a secret both share).
    with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as client:
        form = client.get(a.url("/"))
        assert form.status_code == 200
        done = client.post(b.url("/login"), data={
            "Username": "wendy", "Password": PW, "csrfToken": csrf_of(form.text)})
        assert done.status_code == 303, done.text[:500]
        path = done.headers["location"]
        assert path.startswith("/Session/")
        on_b = client.get(b.url(path))
        on_a = client.get(a.url(path))
        assert on_a.status_code == on_b.status_code == 200
        assert "INBOX" in on_a.text
        assert csrf_of(on_a.text) == csrf_of(on_b.text)  # the same CSRF token
        # the id alone is not enough on either process (the cookie is needed)
        with httpx.Client(timeout=TIMEOUT) as stranger:
            assert stranger.get(a.url(path)).status_code == 403
        # WebUserBindIP: the cookie from another address is refused too
        with httpx.Client(timeout=TIMEOUT, cookies=client.cookies,
                          transport=httpx.HTTPTransport(local_address="127.0.0.2")) as moved:
            assert moved.get(a.url(path)).status_code == 403
        # logout on A ends it on B at once
        assert client.get(a.url(path.replace("Mailboxes.wssp", "Logout"))).status_code == 200
        after = client.get(b.url(path), headers={"Cookie": on_a.request.headers["Cookie"]})
        assert after.status_code == 403 and "INBOX" not in after.text


# -- IMAP IDLE ---------------------------------------------------------------------------------


def test_idle_on_one_process_sees_an_append_made_through_the_other(twins) -> None:
    a, b = twins
    user = f"kim@{a.domain}"
    with socket.create_connection(("127.0.0.1", b.port("IMAPPort")), timeout=TIMEOUT) as sock:
        reader = sock.makefile("rb")

        def send(text: str) -> None:
            sock.sendall(text.encode() + b"\r\n")

        def until(prefix: bytes) -> list[bytes]:
            seen = []
            while True:
                got = reader.readline()
                assert got, seen
                seen.append(got)
                if got.startswith(prefix):
                    return seen

        until(b"* OK")
        send(f'a1 LOGIN "{user}" "{PW}"')
        assert until(b"a1 ")[-1].startswith(b"a1 OK")
        send("a2 SELECT INBOX")
        selected = until(b"a2 ")
        exists = next(int(line.split()[1]) for line in selected if line.endswith(b"EXISTS\r\n"))
        send("a3 IDLE")
        until(b"+ ")
        appender = imaplib.IMAP4("127.0.0.1", a.port("IMAPPort"), timeout=TIMEOUT)
        try:
            appender.login(user, PW)
            typ, _ = appender.append("INBOX", None, None,
                                     b"Subject: across\r\n\r\nfrom process A\r\n")
            assert typ == "OK"
        finally:
            appender.logout()
        appended = time.monotonic()
        line = until(b"* ")[-1]
        waited = time.monotonic() - appended
        assert line == b"* %d EXISTS\r\n" % (exists + 1), line
        # IDLE_POLL is 1 s; the rest is slack for a loaded machine
        assert waited < IDLE_POLL + 2.0, waited
        send("DONE")
        assert until(b"a3 ")[-1].startswith(b"a3 OK")


# -- caches: a CLI change is seen by every process --------------------------------------------


def test_cli_changes_reach_both_processes_at_once(twins) -> None:
    """The Router table and the Directory (version counter, VERSION_TTL) and
    the credentials cache (keyed by the stored hash) of each process."""
    a, b = twins
    assert imap_login(a, "nina", PW) == "OK" and imap_login(b, "nina", PW) == "OK"  # cached
    a.cli("router", "set", "-", input=f"<boss@{a.domain}> = nina@{a.domain}\n")
    assert imap_login(b, "boss", PW) == "OK" and imap_login(a, "boss", PW) == "OK"
    b.cli("account", "passwd", f"nina@{a.domain}", "--password", "new-" + PW)
    for srv in (a, b):  # the cached old password is refused at once, the new one works
        assert "AUTHENTICATIONFAILED" in imap_login(srv, "nina", PW)
        assert imap_login(srv, "nina", "new-" + PW) == "OK"
