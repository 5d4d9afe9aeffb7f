"""The login guard under concurrency, end to end (issue 13 point 2).

A real ``waypost serve``; from 127.0.0.2, 50 parallel connections with 200
wrong passwords on each of SMTP AUTH, IMAP LOGIN, POP3 PASS and the web
login, all at once (one account per protocol, so the counts are each
protocol's). The verifications the server actually ran are counted from
its DEBUG log (``password verification for ...``). Then the right password:
from 127.0.0.3 it logs in at once everywhere, from 127.0.0.2 it is refused
with the reply of a wrong one (though the credentials cache knows it),
until the lock-out, short here, is over. And from ten addresses at once,
guessing one account: each address gets its guesses, the account is slowed
past its ceiling, and its owner still logs in from elsewhere.

The policy itself, with an injected clock: ``test_login_guard_policy.py``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from html.parser import HTMLParser

import httpx
import pytest
from tests.support.server import WaypostServer

ATTACKER = "127.0.0.2"
OTHER = "127.0.0.3"
PW = "guard-pw-1234"
LIMIT = 5
LOCKOUT = 30  # seconds; LoginFailureWindow too
CONNECTIONS = 50
GUESSES = 200
TIMEOUT = 120.0
USERS = {"SMTP": "sam", "IMAP": "ivy", "POP3": "pat", "WebUser": "wes"}
BOTS = [f"127.0.1.{n}" for n in range(1, 11)]

FAILED = {
    "SMTP": "535 5.7.8 Authentication credentials invalid",
    "IMAP": "NO [AUTHENTICATIONFAILED] Authentication failed",
    "POP3": "-ERR [AUTH] Authentication failed",
    "WebUser": "200 The name or the password is not correct. Please try again.",
}
SUCCEEDED = {"SMTP": "235 2.7.0 Authentication successful", "IMAP": "OK",
             "POP3": "+OK", "WebUser": "303 session"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("guard") / "var").init()
    for name in USERS.values():
        srv.cli("account", "add", f"{name}@{srv.domain}", "--password", PW)
    for name, value in (("LoginFailureLimit", LIMIT), ("LoginFailureWindow", LOCKOUT),
                        ("LoginLockout", LOCKOUT), ("LoginFailureMaxDelay", 1)):
        srv.cli("settings", "set", name, str(value))
    srv.start()
    yield srv
    srv.stop()


# -- one client per protocol: each returns its replies to ``passwords``, normalised ----------


async def connect(port: int, source: str
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), TIMEOUT)


async def line(reader: asyncio.StreamReader) -> str:
    data = await asyncio.wait_for(reader.readline(), TIMEOUT)
    assert data.endswith(b"\r\n"), data
    return data.decode().rstrip("\r\n")


async def smtp_reply(reader: asyncio.StreamReader) -> str:
    for _ in range(100):  # a multi-line reply ends with "NNN "
        text = await line(reader)
        if text[3:4] != "-":
            return text
    raise AssertionError("endless SMTP reply")


async def smtp(srv: WaypostServer, source: str, user: str, passwords: list[str]) -> list[str]:
    reader, writer = await connect(srv.submission, source)
    try:
        assert (await smtp_reply(reader)).startswith("220 ")
        writer.write(b"EHLO guard.test\r\n")
        assert (await smtp_reply(reader)).startswith("250 ")
        replies = []
        for password in passwords:
            blob = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            writer.write(f"AUTH PLAIN {blob}\r\n".encode())
            replies.append(await smtp_reply(reader))
        writer.write(b"QUIT\r\n")
        assert (await smtp_reply(reader)).startswith("221 ")
        return replies
    finally:
        writer.close()


async def imap(srv: WaypostServer, source: str, user: str, passwords: list[str]) -> list[str]:
    reader, writer = await connect(srv.port("IMAPPort"), source)
    try:
        assert (await line(reader)).startswith("* OK")
        replies = []
        for n, password in enumerate(passwords):
            writer.write(f'a{n} LOGIN "{user}" "{password}"\r\n'.encode())
            for _ in range(100):
                text = await line(reader)
                if text.startswith(f"a{n} "):
                    break
            reply = text.removeprefix(f"a{n} ")
            replies.append("OK" if reply.startswith("OK") else reply)
        return replies
    finally:
        writer.close()


async def pop3(srv: WaypostServer, source: str, user: str, passwords: list[str]) -> list[str]:
    reader, writer = await connect(srv.port("POP3Port"), source)
    try:
        assert (await line(reader)).startswith("+OK")
        replies = []
        for password in passwords:
            writer.write(f"USER {user}\r\n".encode())
            assert (await line(reader)).startswith("+OK")
            writer.write(f"PASS {password}\r\n".encode())
            reply = await line(reader)
            replies.append("+OK" if reply.startswith("+OK") else reply)
        return replies
    finally:
        writer.close()


class _Token(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.token = ""
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        fields = dict(attrs)
        if tag == "input" and fields.get("name") == "csrfToken":
            self.token = fields.get("value") or ""


async def web(srv: WaypostServer, source: str, user: str, passwords: list[str]) -> list[str]:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(base_url=srv.url(), transport=transport, timeout=TIMEOUT,
                                 follow_redirects=False) as client:
        replies = []
        for password in passwords:
            page = await client.get("/")
            token = _Token(page.text).token
            assert page.status_code == 200 and token
            got = await client.post("/login", data={"Username": user, "Password": password,
                                                    "csrfToken": token})
            if got.status_code == 303 and "/Session/" in got.headers["location"]:
                replies.append("303 session")
            else:  # the login page again, with the error of a wrong password
                error = re.search(r'<p class="error"[^>]*>\s*(.*?)\s*</p>', got.text, re.S)
                replies.append(f"{got.status_code} {error.group(1) if error else got.text}")
        return replies


Client = Callable[[WaypostServer, str, str, list[str]], Awaitable[list[str]]]
CLIENTS: dict[str, Client] = {"SMTP": smtp, "IMAP": imap, "POP3": pop3, "WebUser": web}


def login_all(srv: WaypostServer, source: str) -> dict[str, str]:
    """The right password once on every protocol, at the same time."""

    async def run() -> list[list[str]]:
        return await asyncio.gather(*(
            CLIENTS[proto](srv, source, f"{user}@{srv.domain}", [PW])
            for proto, user in USERS.items()))

    return {proto: replies[0] for proto, replies in zip(USERS, asyncio.run(run()), strict=True)}


def verifications(srv: WaypostServer, proto: str, source: str) -> int:
    account = f"{USERS[proto]}@{srv.domain}"
    return srv.logs().count(f"{proto} password verification for {account!r} from {source}\n")


# -- the test ---------------------------------------------------------------------------------


def test_parallel_guessing_gets_limit_guesses_and_locks_out_only_the_guesser(
        server: WaypostServer) -> None:
    # The right password first, from the attacker's address: now in the credentials cache.
    assert login_all(server, ATTACKER) == SUCCEEDED
    assert all(verifications(server, proto, ATTACKER) == 1 for proto in USERS)

    async def flood() -> dict[str, list[str]]:
        per_connection = GUESSES // CONNECTIONS

        async def guesses(proto: str, n: int) -> list[str]:
            wrong = [f"wrong-{proto}-{n}-{i}" for i in range(per_connection)]
            return await CLIENTS[proto](server, ATTACKER, f"{USERS[proto]}@{server.domain}",
                                        wrong)

        results = await asyncio.gather(*(guesses(proto, n)
                                         for proto in USERS for n in range(CONNECTIONS)))
        return {proto: [r for replies in results[i * CONNECTIONS:(i + 1) * CONNECTIONS]
                        for r in replies] for i, proto in enumerate(USERS)}

    replies = asyncio.run(flood())
    for proto in USERS:
        assert replies[proto] == [FAILED[proto]] * GUESSES, proto
        # 1 right + at most LIMIT wrong passwords verified, whatever the concurrency.
        assert verifications(server, proto, ATTACKER) == 1 + LIMIT, proto
    logs = server.logs()
    assert logs.count(f"locked out for {LOCKOUT} s after {LIMIT} failures") == len(USERS)
    assert PW not in logs and "wrong-SMTP-0-0" not in logs

    # Another address is not locked out, on any protocol, nor slowed.
    started = time.monotonic()
    assert login_all(server, OTHER) == SUCCEEDED
    assert time.monotonic() - started < LOCKOUT
    # The guesser's address is, even with the right (and cached) password, unverified.
    assert login_all(server, ATTACKER) == FAILED
    assert all(verifications(server, proto, ATTACKER) == 1 + LIMIT for proto in USERS)

    # After the lock-out the right password works again from there.
    deadline = time.monotonic() + LOCKOUT + 90
    got = login_all(server, ATTACKER)
    while got != SUCCEEDED and time.monotonic() < deadline:
        assert all(got[proto] in (FAILED[proto], SUCCEEDED[proto]) for proto in USERS), got
        time.sleep(1)
        got = login_all(server, ATTACKER)
    assert got == SUCCEEDED


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    """Long windows (nothing expires during the test), a low account ceiling."""
    srv = WaypostServer(tmp_path_factory.mktemp("guard-ceiling") / "var").init()
    srv.cli("account", "add", f"dora@{srv.domain}", "--password", PW)
    for name, value in (("LoginFailureLimit", LIMIT), ("LoginFailureWindow", 3600),
                        ("LoginLockout", 3600), ("LoginFailureMaxDelay", 1),
                        ("LoginAccountFailureLimit", 10)):
        srv.cli("settings", "set", name, str(value))
    srv.start()
    yield srv
    srv.stop()


def test_guessing_from_many_addresses_slows_the_account_but_never_locks_it_out(
        slow_server: WaypostServer) -> None:
    server = slow_server
    account = f"dora@{server.domain}"

    async def botnet() -> list[list[str]]:
        return await asyncio.gather(*(
            imap(server, bot, account, [f"wrong-{bot}-{i}" for i in range(LIMIT + 1)])
            for bot in BOTS))

    for replies in asyncio.run(botnet()):
        assert replies == [FAILED["IMAP"]] * (LIMIT + 1)
    logs = server.logs()
    for bot in BOTS:  # each address got its LIMIT guesses, no more
        assert logs.count(f"IMAP password verification for {account!r} from {bot}\n") == LIMIT
    # 50 failures, past LoginAccountFailureLimit: slowed, yet the owner gets in on
    # every protocol from an address that did not fail.
    assert re.search(rf"IMAP login as {re.escape(repr(account))} from 127\.0\.1\.\d+ slowed 1\.0 s",
                     logs)

    async def owner() -> list[list[str]]:
        return await asyncio.gather(*(CLIENTS[proto](server, OTHER, account, [PW])
                                      for proto in USERS))

    assert [replies[0] for replies in asyncio.run(owner())] == list(SUCCEEDED.values())
    # A bot's address stays locked out for this account, with the usual reply.
    assert asyncio.run(imap(server, BOTS[0], account, [PW])) == [FAILED["IMAP"]]
