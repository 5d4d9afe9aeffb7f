"""The POP3 server over real sockets: logins, the maildrop, UPDATE, bad input, guessing.

One server for the module. Every test connects from its own loopback
address (127.0.0.N), so the (account, IP) lock-out of the guessing test cannot
touch the others, and works on its own account where it changes a maildrop.
"""

from __future__ import annotations

import base64
import itertools
import poplib
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from tests.support.mailbox import read_mailbox
from tests.support.pop3_session import StubOffice, run_session
from tests.support.server import WaypostServer

from waypost.protocols.pop3.session import Session

PW = "pop-pw-1234"
DOMAIN = "domain.dom"
_ips = itertools.count(10)


def new_ip() -> str:
    return f"127.0.0.{next(_ips)}"


def unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class POP3From(poplib.POP3):
    """poplib.POP3 bound to a chosen source address."""

    def __init__(self, host: str, port: int, source: str, timeout: float = 15) -> None:
        self.source = source
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self.source, 0)
        )


class POP3SFrom(poplib.POP3_SSL, POP3From):
    def __init__(self, host: str, port: int, source: str, timeout: float = 15) -> None:
        self.source = source
        poplib.POP3_SSL.__init__(self, host, port, timeout=timeout, context=unverified())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("pop3") / "var").init()
    srv.cli("domain", "add", DOMAIN)
    for name in ("alice", "bob", "carol", "dave", "erin", "frank", "gus"):
        srv.cli("account", "add", f"{name}@{DOMAIN}", "--password", PW)
    srv.cli("alias", "add", f"ali@{DOMAIN}", f"alice@{DOMAIN}")
    srv.cli("account", "add", f"henry@{DOMAIN}")  # keeps a sealed password, for APOP
    srv.cli("account", "set", f"henry@{DOMAIN}", "PasswordEncryption", "argon2+cram-md5")
    srv.cli("account", "passwd", f"henry@{DOMAIN}", "--password", PW)
    srv.cli("account", "set", f"dave@{DOMAIN}", "AccessModes", "Mail,IMAP")
    srv.cli("domain", "add", "nopop.dom")
    srv.cli("domain", "set", "nopop.dom", "DomainAccessModes", "Mail,IMAP")
    srv.cli("account", "add", "gina@nopop.dom", "--password", PW)
    srv.cli("settings", "set", "LoginFailureLimit", "3")
    srv.start()
    yield srv
    srv.stop()


def pop(server: WaypostServer, source: str | None = None) -> POP3From:
    return POP3From("127.0.0.1", server.port("POP3Port"), source or new_ip())


def login(server: WaypostServer, user: str, source: str | None = None) -> POP3From:
    client = pop(server, source)
    client.user(user)
    client.pass_(PW)
    return client


def deliver(server: WaypostServer, account: str, messages: list[bytes]) -> list[bytes]:
    """Send through the real SMTP listener; return what the mailbox then holds."""
    before = len(read_mailbox(server.data, account))
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as smtp:
        for message in messages:
            smtp.sendmail("sender@example.org", [account], message)

    def delivered() -> list[bytes] | None:
        stored = read_mailbox(server.data, account)
        return stored if len(stored) >= before + len(messages) else None

    return server.wait_for(delivered, what=f"delivery to {account}")


def uids(server: WaypostServer, account: str) -> list[str]:
    out = server.cli("mailbox", "show", account).stdout
    return re.findall(r"^\s*(\d+)\s", out.split("\n", 1)[1], re.M)


MESSAGES = [
    b"From: Sender <sender@example.org>\r\nSubject: first\r\n\r\nline 1\r\nline 2\r\nline 3\r\n",
    b"From: sender@example.org\r\nSubject: dots\r\n\r\n.starts with a dot\r\n..two\r\n.\r\nend\r\n",
    "From: sender@example.org\r\nSubject: =?utf-8?q?h=C3=A9?=\r\nContent-Type: text/plain;"
    " charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nhé ☃\r\n".encode(),
]


@pytest.fixture(scope="module")
def alice_mail(server: WaypostServer) -> list[bytes]:
    return deliver(server, f"alice@{DOMAIN}", MESSAGES)


class Raw:
    """A bare socket, to send what poplib would not."""

    def __init__(self, server: WaypostServer, source: str | None = None) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", server.port("POP3Port")),
            timeout=15,
            source_address=(source or new_ip(), 0),
        )
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self) -> str:
        return self.file.readline(4096).decode("utf-8", "replace").rstrip("\r\n")

    def cmd(self, text: str | bytes) -> str:
        data = text if isinstance(text, bytes) else text.encode()
        self.sock.sendall(data + b"\r\n")
        return self.line()

    def multi(self) -> list[str]:
        lines = []
        while (line := self.line()) != ".":
            lines.append(line)
        return lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# -- greeting, CAPA, TLS ---------------------------------------------------------


def test_greeting_and_capa(server: WaypostServer) -> None:
    client = pop(server)
    assert client.getwelcome().startswith(b"+OK") and b"<" not in client.getwelcome()
    caps = client.capa()
    for cap in (
        "TOP",
        "UIDL",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "STLS",
        "USER",
        "IMPLEMENTATION",
    ):
        assert cap in caps, cap
    assert caps["SASL"] == ["PLAIN"]
    client.user(f"alice@{DOMAIN}")
    client.pass_(PW)
    after = client.capa()
    assert "UIDL" in after and "TOP" in after
    assert not {"STLS", "USER", "SASL"} & set(after)
    client.quit()


def test_apop_is_off_by_default(server: WaypostServer) -> None:
    raw = Raw(server)
    assert "<" not in raw.greeting
    assert raw.cmd("APOP alice@domain.dom c4c9334bac560ecc979e58001b3e22fb") == (
        "-ERR APOP is not enabled; use USER/PASS or AUTH PLAIN"
    )
    assert raw.cmd("QUIT").startswith("+OK")
    raw.close()


def test_apop_when_enabled(server: WaypostServer) -> None:
    """APOP works for an account that keeps a sealed password, fails like a wrong
    password for one that keeps only the hash, and is slowed like any failure."""
    server.cli("settings", "set", "POP3APOP", "YES")  # read at the next connection
    try:
        client = pop(server)
        assert re.search(rb" <\d+\.\d+\.[0-9a-f]+@main\.dom>$", client.getwelcome())
        assert client.apop(f"henry%{DOMAIN}", PW).startswith(b"+OK henry@domain.dom has")
        client.quit()
        client = pop(server)
        with pytest.raises(poplib.error_proto) as info:
            client.apop(f"frank@{DOMAIN}", PW)  # argon2 only: cannot be checked
        assert info.value.args[0] == b"-ERR [AUTH] Authentication failed"
        with pytest.raises(poplib.error_proto) as info:
            client.apop(f"henry@{DOMAIN}", "wrong")
        assert info.value.args[0] == b"-ERR [AUTH] Authentication failed"
        with pytest.raises(poplib.error_proto) as info:
            client._shortcmd(f"APOP henry@{DOMAIN} 1234")
        assert info.value.args[0] == b"-ERR Invalid APOP digest: expected 32 hexadecimal digits"
        client.quit()
    finally:
        server.cli("settings", "set", "POP3APOP", "default")
    assert b"<" not in pop(server).getwelcome()


def test_stls_then_login(server: WaypostServer) -> None:
    client = pop(server)
    client.stls(unverified())
    caps = client.capa()
    assert "STLS" not in caps and "USER" in caps
    client.user(f"alice@{DOMAIN}")
    client.pass_(PW)
    client.stat()
    client.quit()


def test_pop3s(server: WaypostServer) -> None:
    client = POP3SFrom("127.0.0.1", server.port("POP3SPort"), new_ip())
    assert "STLS" not in client.capa()
    client.user(f"alice%{DOMAIN}")
    client.pass_(PW)
    client.stat()
    client.quit()


def test_stls_refuses_pipelined_plaintext(server: WaypostServer) -> None:
    raw = Raw(server)
    raw.sock.sendall(b"STLS\r\nUSER alice@domain.dom\r\n")
    assert raw.line() == "-ERR No commands may follow STLS in the same packet"
    assert raw.cmd("NOOP") == "-ERR NOOP is not valid before login"  # still in step, no TLS
    raw.close()


# -- logins ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [f"alice@{DOMAIN}", f"alice%{DOMAIN}", f"ali@{DOMAIN}", "ALICE@Domain.Dom"]
)
def test_login_names_go_through_the_router(server: WaypostServer, name: str) -> None:
    client = pop(server)
    assert client.user(name).startswith(b"+OK")
    assert client.pass_(PW).startswith(f"+OK alice@{DOMAIN} has".encode())
    client.quit()


def auth_plain(client: poplib.POP3, login: str, password: str) -> bytes:
    blob = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
    return client._shortcmd(f"AUTH PLAIN {blob}")


def test_auth_plain_initial_response_and_continuation(server: WaypostServer) -> None:
    client = pop(server)
    assert auth_plain(client, f"ali@{DOMAIN}", PW).startswith(b"+OK alice@domain.dom")
    client.quit()
    raw = Raw(server)
    assert raw.cmd("AUTH PLAIN") == "+ "
    assert raw.cmd("*") == "-ERR Authentication cancelled"
    assert raw.cmd("AUTH PLAIN") == "+ "
    assert raw.cmd("%%%") == "-ERR Invalid base64 data"
    assert raw.cmd("AUTH PLAIN !!notbase64") == "-ERR Invalid base64 data"
    assert raw.cmd("AUTH CRAM-MD5") == "-ERR Unsupported SASL mechanism CRAM-MD5; use PLAIN"
    assert raw.cmd("AUTH") == "+OK SASL mechanisms follow"
    assert raw.multi() == ["PLAIN"]
    assert raw.cmd("AUTH PLAIN") == "+ "
    blob = base64.b64encode(f"alice@{DOMAIN}\0alice@{DOMAIN}\0{PW}".encode()).decode()
    assert raw.cmd(blob).startswith("+OK alice@domain.dom has")
    assert raw.cmd("QUIT").startswith("+OK")
    raw.close()


def test_access_modes_without_pop_are_refused(server: WaypostServer) -> None:
    for name in (f"dave@{DOMAIN}", "gina@nopop.dom"):
        client = pop(server)
        client.user(name)
        with pytest.raises(poplib.error_proto) as info:
            client.pass_(PW)
        assert info.value.args[0] == b"-ERR [AUTH] POP3 access is not enabled for this account"
        client.quit()


def test_maildrop_in_use(server: WaypostServer) -> None:
    first = login(server, f"frank@{DOMAIN}")
    second = pop(server)
    second.user(f"frank%{DOMAIN}")
    with pytest.raises(poplib.error_proto) as info:
        second.pass_(PW)
    assert info.value.args[0].startswith(b"-ERR [IN-USE]")
    first.quit()
    second.user(f"frank@{DOMAIN}")
    assert second.pass_(PW).startswith(b"+OK")
    second.quit()


# -- the maildrop ----------------------------------------------------------------


def test_stat_list_uidl_top_retr(server: WaypostServer, alice_mail: list[bytes]) -> None:
    stored = alice_mail
    assert len(stored) == 3 and stored[0].startswith(b"Return-Path: <sender@example.org>")
    client = login(server, f"alice@{DOMAIN}")
    assert client.stat() == (3, sum(len(m) for m in stored))
    _, listing, _ = client.list()
    assert listing == [f"{i} {len(m)}".encode() for i, m in enumerate(stored, 1)]
    assert client.list(2) == f"+OK 2 {len(stored[1])}".encode()
    uidvalidity = re.search(
        r"UIDVALIDITY (\d+)", server.cli("mailbox", "show", f"alice@{DOMAIN}").stdout
    )[1]
    _, ids, _ = client.uidl()
    expected = [
        f"{n} {uidvalidity}.{uid}".encode()
        for n, uid in enumerate(uids(server, f"alice@{DOMAIN}"), 1)
    ]
    assert ids == expected
    assert client.uidl(3) == b"+OK " + expected[2]
    for n, message in enumerate(stored, 1):
        response, lines, _ = client.retr(n)
        assert response == f"+OK {len(message)} octets".encode()
        assert b"\r\n".join(lines) + b"\r\n" == message  # exactly the stored bytes
    _, lines, _ = client.top(1, 0)
    header = stored[0].split(b"\r\n\r\n")[0]
    assert b"\r\n".join(lines) == header + b"\r\n"
    _, lines, _ = client.top(1, 2)
    assert lines[-3:] == [b"", b"line 1", b"line 2"]
    _, lines, _ = client.top(2, 99)
    assert b"\r\n".join(lines) + b"\r\n" == stored[1]
    client.quit()
    again = login(server, f"alice@{DOMAIN}")
    assert again.uidl()[1] == ids  # stable across sessions
    again.quit()


def test_pipelined_commands(server: WaypostServer, alice_mail: list[bytes]) -> None:
    raw = Raw(server)
    raw.sock.sendall(
        b"USER alice@domain.dom\r\nPASS " + PW.encode() + b"\r\nSTAT\r\nLIST 1\r\nNOOP\r\nQUIT\r\n"
    )
    replies = [raw.line() for _ in range(6)]
    assert replies[2] == f"+OK 3 {sum(len(m) for m in alice_mail)}"
    assert replies[3] == f"+OK 1 {len(alice_mail[0])}"
    assert all(r.startswith("+OK") for r in replies)
    raw.close()


def test_dele_then_rset_keeps(server: WaypostServer) -> None:
    account = f"erin@{DOMAIN}"
    deliver(server, account, MESSAGES[:2])
    client = login(server, account)
    assert client.dele(1) == b"+OK Message 1 deleted"
    assert client.stat()[0] == 1
    _, listing, _ = client.list()
    assert [line.split()[0] for line in listing] == [b"2"]  # numbers do not move
    assert client.rset().startswith(b"+OK Maildrop has 2 messages")
    client.quit()
    assert len(uids(server, account)) == 2


def test_dele_then_quit_deletes(server: WaypostServer) -> None:
    account = f"bob@{DOMAIN}"
    deliver(server, account, MESSAGES)
    before = uids(server, account)
    client = login(server, account)
    client.dele(1)
    client.dele(3)
    assert len(uids(server, account)) == 3  # nothing removed before QUIT
    assert client.quit() == b"+OK Signing off (1 messages left)"
    assert uids(server, account) == [before[1]]
    client = login(server, account)
    assert client.stat()[0] == 1
    client.quit()


def test_dele_then_drop_deletes_nothing(server: WaypostServer) -> None:
    account = f"gus@{DOMAIN}"
    deliver(server, account, MESSAGES[:2])
    client = login(server, account)
    client.dele(1)
    client.dele(2)
    client.sock.close()  # gone without QUIT: no UPDATE state
    client.file.close()

    def relogin() -> POP3From | None:
        try:
            return login(server, account)
        except poplib.error_proto as exc:  # [IN-USE] until the server saw the close
            assert b"[IN-USE]" in exc.args[0]
            return None

    again = server.wait_for(relogin, timeout=10, what="the maildrop lock to be released")
    assert again.stat()[0] == 2
    again.quit()
    assert len(uids(server, account)) == 2


# -- bad input ---------------------------------------------------------------------


BEFORE_LOGIN = [
    ("FOO", "-ERR Unknown command FOO"),
    ("STAT", "-ERR STAT is not valid before login"),
    ("RETR 1", "-ERR RETR is not valid before login"),
    ("PASS x", "-ERR Send USER first"),
    ("USER", "-ERR Missing argument; syntax: USER name"),
    ("USER a b", "-ERR Too many arguments; syntax: USER name"),
    ("", "-ERR Empty command"),
    ("1234", "-ERR Syntax error: a command starts with a keyword"),
    (b"NO\x00OP", "-ERR Invalid characters in command (control characters)"),
    (b"USER \xff", "-ERR Invalid characters in command (not UTF-8)"),
    ("USER " + "x" * 300, "-ERR Command line too long (255 octets at most)"),
    ("CAPA now", "-ERR Too many arguments; syntax: CAPA"),
]

AFTER_LOGIN = [
    ("RETR", "-ERR Missing argument; syntax: RETR message-number"),
    ("RETR 1 2", "-ERR Too many arguments; syntax: RETR message-number"),
    ("RETR -1", "-ERR Invalid message number '-1': expected a number from 1"),
    ("RETR 0", "-ERR Invalid message number '0': expected a number from 1"),
    ("RETR abc", "-ERR Invalid message number 'abc': expected a number from 1"),
    ("RETR 99999999999", "-ERR Invalid message number '99999999999': expected a number from 1"),
    ("RETR 4", "-ERR No message 4: the maildrop has 3"),
    ("LIST 9", "-ERR No message 9: the maildrop has 3"),
    ("UIDL x", "-ERR Invalid message number 'x': expected a number from 1"),
    ("LIST 1 2", "-ERR Too many arguments; syntax: LIST [message-number]"),
    ("TOP 1", "-ERR Missing argument; syntax: TOP message-number lines"),
    ("TOP 1 -5", "-ERR Invalid line count '-5': expected a number from 0"),
    ("TOP 1  2", "-ERR Syntax: TOP message-number lines (arguments separated by single spaces)"),
    ("DELE", "-ERR Missing argument; syntax: DELE message-number"),
    ("DELE 1", "+OK Message 1 deleted"),
    ("DELE 1", "-ERR Message 1 is deleted"),
    ("RETR 1", "-ERR Message 1 is deleted"),
    ("TOP 1 0", "-ERR Message 1 is deleted"),
    ("USER alice", "-ERR USER is not valid after login"),
    ("PASS x", "-ERR PASS is not valid after login"),
    ("STLS", "-ERR STLS is not valid after login"),
    ("AUTH PLAIN", "-ERR AUTH is not valid after login"),
    ("NOOP x", "-ERR Too many arguments; syntax: NOOP"),
    ("XYZZY", "-ERR Unknown command XYZZY"),
    ("RETR " + "9" * 300, "-ERR Command line too long (255 octets at most)"),
]


def test_malformed_commands_get_err_and_the_session_goes_on(
    server: WaypostServer, alice_mail: list[bytes]
) -> None:
    raw = Raw(server)
    for command, expected in BEFORE_LOGIN:
        assert raw.cmd(command) == expected, command
    assert raw.cmd("USER alice@domain.dom") == "+OK Send PASS"
    assert raw.cmd(f"PASS {PW}").startswith("+OK")
    for command, expected in AFTER_LOGIN:
        assert raw.cmd(command) == expected, command
    assert raw.cmd("STAT") == f"+OK 2 {sum(len(m) for m in alice_mail[1:])}"
    assert raw.cmd("RSET").startswith("+OK Maildrop has 3 messages")
    assert raw.cmd("NOOP") == "+OK"
    assert raw.cmd("QUIT").startswith("+OK")
    raw.close()


def test_an_overlong_line_split_over_packets(server: WaypostServer) -> None:
    raw = Raw(server)
    for _ in range(20):
        raw.sock.sendall(b"x" * 4000)
    assert raw.cmd("") == "-ERR Command line too long (255 octets at most)"
    assert raw.cmd("QUIT") == "+OK Bye"
    raw.close()


# -- password guessing -------------------------------------------------------------


def failed_login(server: WaypostServer, name: str, password: str, source: str) -> float:
    client = pop(server, source)
    client.user(name)
    started = time.monotonic()
    with pytest.raises(poplib.error_proto) as info:
        client.pass_(password)
    elapsed = time.monotonic() - started
    assert info.value.args[0] == b"-ERR [AUTH] Authentication failed"
    client.quit()
    return elapsed


def test_password_guessing_is_slowed_then_locked_out(server: WaypostServer) -> None:
    attacker = new_ip()
    target = f"carol@{DOMAIN}"
    times = [failed_login(server, target, f"guess{i}", attacker) for i in range(3)]
    assert times[0] >= 0.45 and times[1] >= 0.95 and times[2] >= 1.95, times
    # LoginFailureLimit 3: locked out now, for carol from the attacker's IP only
    # (issue 13: a lock-out must not be a weapon against the user). The right
    # password is refused there with the same text, also under another name of
    # carol, and the refusal is as slow as a failure; carol from another IP and
    # other logins from the attacker's IP are not locked out.
    locked = [(target, attacker), (f"carol%{DOMAIN}", attacker)]
    with ThreadPoolExecutor(len(locked)) as pool:
        waits = list(pool.map(lambda case: failed_login(server, case[0], PW, case[1]), locked))
    assert min(waits) >= 1.95, waits
    login(server, target).quit()
    login(server, f"alice@{DOMAIN}", attacker).quit()
    logs = server.logs()
    assert "locked out for 300 s after 3 failures" in logs
    assert "refused: locked out" in logs
    assert PW not in logs and "guess1" not in logs


# -- in-process: what loopback tests cannot show ----------------------------------


def test_no_passwords_without_tls_from_a_remote_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Session, "loopback", property(lambda self: False))
    office = StubOffice()

    async def script(line, cmd, reader) -> None:
        assert (await line()).startswith("+OK")
        assert await cmd("CAPA") == "+OK Capability list follows"
        caps = []
        while (cap := await line()) != ".":
            caps.append(cap)
        assert "STLS" in caps and "USER" not in caps and not any("SASL" in c for c in caps)
        assert await cmd("USER alice") == "-ERR [AUTH] Log in only over TLS: use STLS first"
        assert await cmd("PASS secret") == "-ERR [AUTH] Log in only over TLS: use STLS first"
        blob = base64.b64encode(b"\0alice\0secret").decode()
        assert await cmd(f"AUTH PLAIN {blob}") == (
            "-ERR [AUTH] Log in only over TLS: use STLS first"
        )
        assert await cmd("AUTH") == "+OK SASL mechanisms follow"
        assert await line() == "."
        assert await cmd("QUIT") == "+OK Bye"

    run_session(office, script, tls=unverified_server())
    assert office.logins == []  # no password was even looked at


def unverified_server() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # never used: STLS is not sent


def test_idle_client_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    office = StubOffice(POP3IdleTimeout="1")

    async def script(line, cmd, reader) -> None:
        assert (await line()).startswith("+OK")
        started = time.monotonic()
        assert await line() == "-ERR Idle for too long, closing connection (no messages deleted)"
        assert await reader.read() == b""
        assert 0.9 <= time.monotonic() - started < 5

    run_session(office, script)
