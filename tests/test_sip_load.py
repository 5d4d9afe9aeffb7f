"""Waypost's SIP proxy and registrar under load, end to end with sipp
(issue 14 point 8: no failed call): real ``waypost serve``, sipp phones on
loopback, calls offered as fast as the proxy answers with up to 100 at once,
as ``bench/sip.py`` does.

What went wrong before, and what each test holds:

* the proxy lagged more than T1 behind under such a burst, so it sent the
  UAS an INVITE again after the UAS had answered (sipp's UAS aborts the call
  on that) and a 407 again after the caller's ACK (the caller aborts); an
  ACK waiting on a settings read in a thread let the BYE behind it overtake
  it (the UAS aborts): every call must complete, with and without digest;
* answered UDP transactions waiting out Timer J (32 s) counted against
  ``SIPMaxTransactions``, so a second burst of REGISTERs got 503: two
  bursts, each of more REGISTER transactions than the limit, all register.

sipp (3.6) answers only MD5 digest challenges, so the server offers MD5.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.server import WaypostServer
from tests.support.sipp import Sipp, SippResult, free_port, require_sipp, write_users

from waypost.services import passwords
from waypost.services.container import open_services

pytestmark = pytest.mark.peer

DOMAIN = "sip.load.test"
REMOTE = "remote.load.test"
USERS = [f"u{i:04d}" for i in range(300)]
LIMIT = 250  # SIPMaxTransactions: fewer than one burst of REGISTER transactions


def password(user: str) -> str:
    return f"pw-{user}-load"


@pytest.fixture(autouse=True)
def _sipp() -> None:
    require_sipp()


@pytest.fixture(scope="module")
def uas_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, uas_port: int) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("sipload") / "var", domain=DOMAIN,
                        log_level="WARNING").init()
    for name, value in (("SIPDigestAlgorithms", "MD5"), ("SIPMaxTransactions", str(LIMIT))):
        srv.cli("settings", "set", name, value)
    for user in ("alice", "callee"):
        srv.cli("account", "add", f"{user}@{DOMAIN}", "--password", password(user), "--odmr")
    srv.cli("router", "set", "-", input=f"Signal:{REMOTE} = {REMOTE}@127.0.0.1.{uas_port}._via\n")
    services = open_services(srv.data)  # hundreds of accounts: not one CLI process each
    try:
        passwords.configure(**passwords.FAST_PARAMETERS)
        with services.store.transaction():
            for user in USERS:
                services.directory.create_account(
                    f"{user}@{DOMAIN}", password=password(user),
                    settings={"PasswordEncryption": "argon2+cram-md5"})
    finally:
        passwords.reset()
        services.close()
    srv.start()
    yield srv
    srv.stop()


def proxy(server: WaypostServer) -> str:
    return f"127.0.0.1:{server.port('SIPPort')}"


def register_callee(tmp: Path, server: WaypostServer, port: int) -> None:
    done = Sipp(tmp, "register.xml", remote=proxy(server), port=port, service="callee",
                auth_user="callee", auth_password=password("callee"), auth_uri=DOMAIN,
                calls=1, keys={"domain": DOMAIN, "expires": "600"}, timeout=15).run()
    assert done.ok, done.report()


def calls(tmp: Path, server: WaypostServer, uas_port: int, count: int, *, auth: bool
          ) -> tuple[SippResult, SippResult]:
    """``count`` calls at up to 10,000/s, 100 at once: the caller's and the UAS's results."""
    with Sipp(tmp, "call_uas.xml", port=uas_port, timeout=60) as uas:
        if auth:
            uac = Sipp(tmp, "call_uac_auth.xml", remote=proxy(server), service="callee",
                       keys={"domain": REMOTE, "caller": f"alice@{DOMAIN}"},
                       auth_user="alice", auth_password=password("alice"),
                       auth_uri=f"callee@{REMOTE}", calls=count, rate=10000, limit=100,
                       timeout=40)
        else:
            uac = Sipp(tmp, "call_uac.xml", remote=proxy(server), service="callee",
                       keys={"domain": DOMAIN}, calls=count, rate=10000, limit=100,
                       timeout=40)
        caller = uac.run()
    assert uas.result is not None
    return caller, uas.result


def test_a_burst_of_calls_all_complete(tmp_path: Path, server: WaypostServer,
                                       uas_port: int) -> None:
    register_callee(tmp_path, server, uas_port)
    caller, uas = calls(tmp_path, server, uas_port, 1000, auth=False)
    assert (caller.successful, caller.failed) == (1000, 0), caller.report()
    assert (uas.successful, uas.failed) == (1000, 0), uas.report()


def test_a_burst_of_calls_with_digest_all_complete(tmp_path: Path, server: WaypostServer,
                                                   uas_port: int) -> None:
    caller, uas = calls(tmp_path, server, uas_port, 600, auth=True)
    assert (caller.successful, caller.failed) == (600, 0), caller.report()
    assert (uas.successful, uas.failed) == (600, 0), uas.report()


def test_two_bursts_of_registers_past_the_transaction_limit_all_register(
        tmp_path: Path, server: WaypostServer) -> None:
    inf = write_users(tmp_path / "users.csv", [(u, password(u)) for u in USERS])
    for burst in range(2):  # each REGISTER is two transactions (401, then 200)
        done = Sipp(tmp_path, "register_users.xml", remote=proxy(server), inf=inf,
                    calls=len(USERS), rate=10000, limit=100, auth_uri=DOMAIN,
                    keys={"domain": DOMAIN, "expires": "600"}, timeout=40,
                    name=f"register-burst-{burst}").run()
        assert (done.successful, done.failed) == (len(USERS), 0), done.report()
    listed = server.cli("sip", "registrations").stdout
    assert all(f"{u}@{DOMAIN}" in listed for u in USERS[:5])
