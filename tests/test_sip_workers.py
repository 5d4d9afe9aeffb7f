"""Calls through two SIP worker processes (issue 15 point 3, issue 14 point 8):
``serve --worker 0/2`` and ``serve --worker 1/2`` on one data directory and
one port offset, so the kernel hashes each phone's source address and port
to one of them (SO_REUSEPORT), with real sipp phones on loopback.

Which worker a phone's port reaches is found out first, without guessing:
an unauthenticated REGISTER from the port gets a 401 whose nonce names the
book (so the process) that issued it (``nonces.py``). Then:

* bob registers (digest) through one worker and alice calls him 200 times,
  ten per second, from a port hashed to the other: no failed call. The
  INVITE's 180/200 come from bob's port, which the kernel would hash to
  bob's worker; they reach the caller's worker only because that worker
  sent the INVITE from its private port and named it in the Via (without
  that every call fails: a stray 180 is dropped). The ACK and BYE follow
  the Record-Route, the shared port, statelessly;
* alice, registered through the other worker, is called from a port of
  bob's worker: both directions;
* a caller hangs up while bob's phone rings: the CANCEL goes through the
  caller's worker and ends with 487 at both ends;
* in-dialog requests from both sides (INFO, UPDATE, REFER, BYE from the
  caller; NOTIFY from the callee, whose port reaches the other worker).

The pair is started by ``tests/support/sip_workers.py``, the one place to
change when the supervisor (``serve --workers N``) takes over.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.server import WaypostServer
from tests.support.sip_ua import SipUA
from tests.support.sip_workers import WorkerGroup
from tests.support.sipp import Sipp, require_sipp

pytestmark = pytest.mark.peer

DOMAIN = "domain.dom"
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-2"}
PROBES = 40
"""Source ports tried at most to find two for each worker."""


@pytest.fixture(autouse=True)
def _sipp() -> None:
    require_sipp()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerGroup]:
    group = WorkerGroup(tmp_path_factory.mktemp("sipworkers") / "var", 2).init()
    admin = group.first
    admin.cli("domain", "add", DOMAIN)
    for user, password in PASSWORDS.items():
        admin.cli("account", "add", f"{user}@{DOMAIN}", "--password", password, "--odmr")
    for name, value in (("SIPDigestAlgorithms", "MD5"), ("ClientIPAddresses", "127.0.0.1")):
        admin.cli("settings", "set", name, value)
    group.start()
    try:
        yield group
    finally:
        group.stop()


def proxy(server: WaypostServer) -> str:
    return f"127.0.0.1:{server.port('SIPPort')}"


def worker_of(server: WaypostServer, ua: SipUA) -> bytes:
    """The nonce book (one per process) that answers REGISTERs from ``ua``'s port."""
    register = ua.request("REGISTER", f"sip:{DOMAIN}", to=f"sip:bob@{DOMAIN}",
                          extra=(("Contact", ua.contact("bob")),))
    answer = ua.ask(register)
    assert answer.status == 401, answer.status
    nonce = re.search(r'nonce="([^"]+)"', answer.single("WWW-Authenticate"))
    assert nonce is not None
    return base64.urlsafe_b64decode(nonce.group(1))[:4]


def ports_by_worker(server: WaypostServer) -> list[list[int]]:
    """Two free UDP ports for each worker, found by asking (see the module notes)."""
    found: dict[bytes, list[int]] = {}
    for _ in range(PROBES):
        with SipUA(server.port("SIPPort"), timeout=5) as ua:
            found.setdefault(worker_of(server, ua), []).append(ua.local[1])
        if len(found) == 2 and all(len(ports) >= 2 for ports in found.values()):
            break
    assert len(found) == 2, f"every probe reached one worker: {found}"
    return [ports[:2] for ports in found.values()]


def register(tmp: Path, server: WaypostServer, user: str, port: int) -> None:
    done = Sipp(tmp, "register.xml", remote=proxy(server), port=port, service=user,
                auth_user=user, auth_password=PASSWORDS[user], auth_uri=DOMAIN, calls=1,
                keys={"domain": DOMAIN, "expires": "600"}, timeout=15).run()
    assert done.ok, done.report()


def top_vias(trace: Path, method: str) -> set[str]:
    """The top Via sent-by of every ``method`` request in a sipp message trace."""
    text = trace.read_text(errors="replace")
    return set(re.findall(rf"^{method} sip:[^\n]*\n(?:[^\n]+\n)*?Via: SIP/2.0/UDP ([^;\s]+)",
                          text, re.MULTILINE))


def test_calls_cross_workers_with_no_failure(tmp_path: Path,
                                             servers: WorkerGroup) -> None:
    server = servers.first
    (bob_port, bob_caller), (alice_port, alice_caller) = ports_by_worker(server)
    register(tmp_path, server, "bob", bob_port)
    register(tmp_path, server, "alice", alice_port)
    shared = proxy(server)
    try:
        with Sipp(tmp_path, "call_uas.xml", port=bob_port, timeout=55,
                  extra=("-trace_msg", "-message_file", str(tmp_path / "bob.msg"))) as bob:
            # alice_caller is hashed to the worker alice registered through, not bob's
            call = Sipp(tmp_path, "call_uac.xml", remote=shared, port=alice_caller,
                        service="bob", keys={"domain": DOMAIN, "caller": f"alice@{DOMAIN}"},
                        calls=200, rate=10, limit=20, timeout=50).run()
            assert call.ok, call.report()
            assert (call.successful, call.failed) == (200, 0)
        assert bob.result is not None and bob.result.successful == 200, bob.result.report()
        # the INVITEs came with the caller's worker's private port in the Via
        vias = top_vias(tmp_path / "bob.msg", "INVITE")
        assert len(vias) == 1 and shared not in vias, vias
        # the other way round: bob calls from a port of his own worker; alice's
        # phone was registered through the other
        with Sipp(tmp_path, "call_uas.xml", port=alice_port, timeout=40) as alice:
            back = Sipp(tmp_path, "call_uac.xml", remote=shared, port=bob_caller,
                        service="alice", keys={"domain": DOMAIN, "caller": f"bob@{DOMAIN}"},
                        calls=20, rate=10, limit=5, timeout=30).run()
            assert back.ok, back.report()
            assert (back.successful, back.failed) == (20, 0)
        assert alice.result is not None and alice.result.successful == 20
    finally:
        for user in PASSWORDS:
            server.cli("sip", "unregister", f"{user}@{DOMAIN}", check=False)


@pytest.mark.parametrize(("uas", "uac"), [
    # the caller hangs up while bob's phone rings: CANCEL, 487 at both ends
    ("ring_cancel_uas.xml", "cancel_uac.xml"),
    # INFO, UPDATE, REFER and BYE of the caller reach the caller's worker;
    # the callee's NOTIFY, sent from its own port along its Route set (the
    # shared port), reaches bob's worker, which never saw the INVITE and
    # routes it statelessly by the Route set
    ("indialog_uas.xml", "indialog_uac.xml"),
])
def test_a_caller_on_the_other_worker_cancels_and_talks_inside_the_dialog(
        tmp_path: Path, servers: WorkerGroup, uas: str, uac: str) -> None:
    server = servers.first
    (bob_port, _), (_, caller) = ports_by_worker(server)
    register(tmp_path, server, "bob", bob_port)
    try:
        with Sipp(tmp_path, uas, port=bob_port, timeout=40) as bob:
            call = Sipp(tmp_path, uac, remote=proxy(server), port=caller,
                        service="bob", keys={"domain": DOMAIN, "caller": f"alice@{DOMAIN}"},
                        calls=10, rate=5, limit=5, timeout=30).run()
            assert call.ok, call.report()
            assert (call.successful, call.failed) == (10, 0)
        assert bob.result is not None and bob.result.successful == 10, bob.result.report()
    finally:
        server.cli("sip", "unregister", f"bob@{DOMAIN}", check=False)
