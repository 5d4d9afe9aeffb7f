"""The private Kamailio (``tests/support/kamailio.py``) as a stateful proxy
and registrar between two sipp instances, so that the benchmark's reference
figures come from a Kamailio that really relays, record-routes, challenges
and registers."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.kamailio import KamailioInstance, require_kamailio
from tests.support.sipp import Sipp, free_port, require_sipp

pytestmark = pytest.mark.peer

USERS = {"alice": "alice-secret", "bob": "bob-secret"}


@pytest.fixture(autouse=True)
def _peers() -> None:
    require_sipp()
    require_kamailio()


def _register(tmp: Path, kam: KamailioInstance, user: str, password: str,
              port: int | None = None) -> Sipp:
    return Sipp(tmp, "register.xml", remote=kam.address, port=port, service=user,
                auth_user=user, auth_password=password, auth_uri=kam.domain, calls=1,
                keys={"domain": kam.domain}, timeout=10)


def test_twenty_calls_through_kamailio_all_succeed_and_follow_the_record_route(
        tmp_path: Path) -> None:
    with Sipp(tmp_path, "call_uas.xml", timeout=60) as uas, \
            KamailioInstance(tmp_path, forward=uas.address) as kam:
        result = Sipp(tmp_path, "call_uac.xml", remote=kam.address, service="callee",
                      calls=20, rate=50, limit=10, timeout=30,
                      extra=("-trace_msg", "-message_file", str(tmp_path / "uac.msg"))).run()
        assert result.ok, result.report() + kam.log()[-2000:]
        assert (result.successful, result.failed) == (20, 0)
    assert uas.result is not None and uas.result.successful == 20, uas.result
    trace = (tmp_path / "uac.msg").read_text(errors="replace")
    # The 200s carried Kamailio's Record-Route, and the BYEs went along it.
    assert f"Record-Route: <sip:127.0.0.1:{kam.port};lr" in trace
    bye = trace.split("BYE sip:", 1)[1].split("\n\n", 1)[0]
    assert bye.startswith(f"127.0.0.1:{uas.port};")  # to the callee's Contact ...
    assert f"\nRoute: <sip:127.0.0.1:{kam.port};lr" in bye  # ... by way of Kamailio


def test_a_call_reaches_the_contact_its_callee_registered_with_digest(
        tmp_path: Path) -> None:
    bob_port = free_port()
    with KamailioInstance(tmp_path, users=USERS, auth=True) as kam:
        registered = _register(tmp_path, kam, "bob", USERS["bob"], port=bob_port).run()
        assert registered.ok, registered.report() + kam.log()[-2000:]
        with Sipp(tmp_path, "call_uas.xml", port=bob_port) as bob:
            call = Sipp(tmp_path, "call_uac.xml", remote=kam.address, service="bob",
                        keys={"domain": kam.domain}, calls=5, rate=20, timeout=20).run()
            assert call.ok, call.report() + kam.log()[-2000:]
        assert bob.result is not None and bob.result.successful == 5, bob.result


def test_a_local_user_calling_out_is_challenged_then_relayed(tmp_path: Path) -> None:
    with Sipp(tmp_path, "call_uas.xml") as remote, \
            KamailioInstance(tmp_path, users=USERS, auth=True, forward=remote.address) as kam:
        keys = {"domain": "remote.test", "caller": f"alice@{kam.domain}"}
        call = Sipp(tmp_path, "call_uac_auth.xml", remote=kam.address, service="carol",
                    auth_user="alice", auth_password=USERS["alice"], keys=keys, calls=5,
                    auth_uri="carol@remote.test",
                    rate=20, timeout=20).run()
        assert call.ok, call.report() + kam.log()[-2000:]
        wrong = Sipp(tmp_path, "call_uac_auth.xml", remote=kam.address, service="carol",
                     auth_user="alice", auth_password="not-alices", keys=keys, calls=1,
                     timeout=10).run()
        assert not wrong.ok and wrong.failed == 1, wrong.report()
    assert remote.result is not None and remote.result.successful == 5, remote.result


def test_a_register_with_a_wrong_password_fails(tmp_path: Path) -> None:
    with KamailioInstance(tmp_path, users=USERS, auth=True) as kam:
        result = _register(tmp_path, kam, "bob", "not-bobs-password").run()
    assert not result.ok and result.successful == 0, result.report()


def test_a_call_to_a_user_with_no_registration_fails_with_404(tmp_path: Path) -> None:
    with KamailioInstance(tmp_path, users=USERS, auth=True) as kam:
        result = Sipp(tmp_path, "call_uac.xml", remote=kam.address, service="carol",
                      keys={"domain": kam.domain}, calls=1, timeout=10).run()
    assert not result.ok and result.failed == 1, result.report()
    assert "404 Not Found" in result.errors


def test_message_to_a_registered_user_is_delivered(tmp_path: Path) -> None:
    bob_port = free_port()
    with KamailioInstance(tmp_path, users=USERS, auth=True) as kam:
        assert _register(tmp_path, kam, "bob", USERS["bob"], port=bob_port).run().ok
        with Sipp(tmp_path, "message_uas.xml", port=bob_port) as bob:
            sent = Sipp(tmp_path, "message_uac.xml", remote=kam.address, service="bob",
                        keys={"domain": kam.domain, "caller": f"alice@{kam.domain}"},
                        calls=3, rate=20, timeout=20).run()
            assert sent.ok, sent.report() + kam.log()[-2000:]
        assert bob.result is not None and bob.result.successful == 3, bob.result


def test_options_to_kamailio_itself_is_answered(tmp_path: Path) -> None:
    with KamailioInstance(tmp_path) as kam:
        assert kam.options() == "SIP/2.0 200 OK"
        result = Sipp(tmp_path, "options_uac.xml", remote=kam.address, calls=3, rate=50,
                      timeout=10).run()
    assert result.ok and result.successful == 3, result.report()


def test_stop_ends_every_kamailio_process(tmp_path: Path) -> None:
    kam = KamailioInstance(tmp_path, children=2).start()
    pids = kam.pids()
    assert len(pids) > 3
    kam.stop()
    from tests.support.dovecot import running

    assert not [pid for pid in pids if running(pid)]
    assert kam.options(timeout=0.3) is None
