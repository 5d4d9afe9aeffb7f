"""The stateful proxy engine (``protocols/sip/proxy.py``) over the fake
transaction layer (``tests/support/sip_fakes.py``), a real store with the
router.md fixture (digest needs alice's sealed password), and a routing
decision and next-hop resolver each test chooses. Every test ends with no
response context, branch or task left."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from tests.support.directory import PASSWORDS
from tests.support.sip_fakes import (
    PHONE,
    FakeLayer,
    FakeServerTransaction,
    build_request,
)
from tests.support.sip_world import ALICE, sip_world

from waypost.protocols.sip.forwarding import BRANCH_PREFIX
from waypost.protocols.sip.proxy import ProxyTiming, StatefulProxy, stateful_proxy
from waypost.protocols.sip.transport import Destination
from waypost.protocols.sip.wire import SipRequest, SipResponse
from waypost.services.container import Services
from waypost.services.signals import digest
from waypost.services.signals.nexthop import Hop, NextHopError
from waypost.services.signals.routing import (
    Decision,
    Itself,
    Local,
    Refuse,
    Remote,
    SignalRequest,
)

BOB_A = "sip:bob@192.0.2.21:5062"
BOB_B = "sip:bob@192.0.2.22:5062"
FAST = ProxyTiming(timer_c=5.0, cancel_wait=1.0, next_hop_timeout=0.3, max_breadth=60,
                   refresh=0.0)
OUR_ROUTE = "<sip:127.0.0.1:5060;lr>"


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with sip_world(Path(tmp_path_factory.mktemp("sipproxy"))) as services:
        yield services


class World:
    """A proxy over a fake layer; ``decision`` is what routing answers,
    ``hops`` what the resolver gives for a host (default: the host itself)."""

    def __init__(self, svc: Services, decision: Decision, *,
                 hops: dict[str, list[Hop] | Exception | str] | None = None,
                 timing: ProxyTiming = FAST) -> None:
        self.layer = FakeLayer()
        self.decision = decision
        self.asked: list[SignalRequest] = []
        self.hops = hops or {}
        self.proxy = StatefulProxy(svc, self.layer, timing=timing, decide=self.decide,
                                   resolve=self.resolve)

    def decide(self, services: Services, request: SignalRequest) -> Decision:
        self.asked.append(request)
        return self.decision

    async def resolve(self, services: Services, host: str, port: int | None,
                      transport: str | None, *, secure: bool = False) -> list[Hop]:
        entry = self.hops.get(host)
        if isinstance(entry, Exception):
            raise entry
        if entry == "slow":
            await asyncio.sleep(30)
        if isinstance(entry, list):
            return entry
        return [Hop(transport or ("tls" if secure else "udp"), host, port or 5060, host)]

    async def send(self, request: SipRequest, source: Destination = PHONE
                   ) -> FakeServerTransaction:
        txn = self.layer.server_transaction(request, source)
        await self.proxy.handle(request, txn, source)
        return txn

    async def settle(self) -> None:
        """Every task ends and no state is left (the leak check)."""
        await self.proxy.join(5)
        assert self.proxy.pending() == (0, 0, 0)


def run(test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(20):
            await test()

    asyncio.run(bounded())


async def until(check: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


def vias_of(response: SipResponse) -> list[str]:
    return [v.host for v in response.vias]


# -- forking to a local account -----------------------------------------------------------


def test_a_call_forks_to_every_contact_and_the_first_2xx_cancels_the_rest(svc: Services
                                                                          ) -> None:
    async def go() -> None:
        w = World(svc, Local("bob@domain.dom", (BOB_A, BOB_B)))
        txn = await w.send(build_request())
        a = await w.layer.next_sent("INVITE")
        b = await w.layer.next_sent("INVITE")
        assert [str(a.request.uri), str(b.request.uri)] == [BOB_A, BOB_B]
        assert a.destination == Destination("udp", "192.0.2.21", 5062)
        assert a.request.top_via.branch != b.request.top_via.branch
        assert (a.request.top_via.branch or "").startswith(BRANCH_PREFIX)
        assert a.request.headers.values("Record-Route") == [OUR_ROUTE]
        assert a.request.max_forwards == 69
        assert txn.statuses == [100]
        a.answer(180, "Ringing", to_tag="a")
        b.answer(180, "Ringing", to_tag="b")
        await until(lambda: txn.statuses.count(180) == 2)
        assert vias_of(txn.sent[1]) == ["192.0.2.7"]  # our Via stripped
        a.answer(200, "OK", to_tag="a")
        final = await txn.final()
        assert final.status == 200 and vias_of(final) == ["192.0.2.7"]
        cancel = await w.layer.next_sent("CANCEL")
        assert cancel.destination == b.destination
        assert cancel.request.top_via.branch == b.request.top_via.branch
        cancel.answer(200, "OK")
        b.answer(487, "Request Terminated", to_tag="b")
        await w.settle()
        assert [r.status for r in txn.finals] == [200]
        assert w.asked == [SignalRequest("INVITE", "sip:bob@domain.dom",
                                         "sip:alice@domain.dom", "192.0.2.7", None)]

    run(go)


def test_a_second_2xx_is_forwarded_too_statelessly_to_the_caller(svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Local("bob@domain.dom", (BOB_A, BOB_B)))
        txn = await w.send(build_request())
        a = await w.layer.next_sent("INVITE")
        b = await w.layer.next_sent("INVITE")
        a.answer(200, "OK", to_tag="a")
        await txn.final()
        b.answer(200, "OK", to_tag="b")  # before our CANCEL could reach it
        await w.layer.wait_stateless(1)
        message, destination = w.layer.stateless[0]
        assert isinstance(message, SipResponse) and message.status == 200
        assert message.to.tag == "b" and destination == PHONE
        await w.settle()

    run(go)


def test_the_best_final_of_all_branches_goes_back_once_all_have_answered(svc: Services
                                                                         ) -> None:
    async def go() -> None:
        w = World(svc, Local("bob@domain.dom", (BOB_A, BOB_B)))
        txn = await w.send(build_request("MESSAGE"))
        a = await w.layer.next_sent("MESSAGE")
        b = await w.layer.next_sent("MESSAGE")
        assert "Record-Route" not in a.request.headers
        a.answer(486, "Busy Here")
        await asyncio.sleep(0.05)
        assert txn.finals == []  # b has not answered
        b.answer(480, "Temporarily Unavailable")
        final = await txn.final()
        assert final.status == 480 and vias_of(final) == ["192.0.2.7"]
        await w.settle()
        assert txn.statuses == [480]  # no 100 Trying for a MESSAGE

    run(go)


def test_a_6xx_cancels_the_other_branches_and_is_the_answer(svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Local("bob@domain.dom", (BOB_A, BOB_B)))
        txn = await w.send(build_request())
        a = await w.layer.next_sent("INVITE")
        b = await w.layer.next_sent("INVITE")
        b.answer(180, "Ringing", to_tag="b")
        a.answer(603, "Decline", to_tag="a")
        cancel = await w.layer.next_sent("CANCEL")
        assert cancel.destination == b.destination
        cancel.answer(200, "OK")
        b.answer(487, "Request Terminated", to_tag="b")
        assert (await txn.final()).status == 603
        await w.settle()

    run(go)


def test_max_breadth_limits_the_fork_and_zero_is_440(svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Local("bob@domain.dom", (BOB_A, BOB_B)))
        txn = await w.send(build_request("MESSAGE", headers=(("Max-Breadth", "1"),)))
        a = await w.layer.next_sent("MESSAGE")
        assert a.request.headers.get("Max-Breadth") == "1"
        a.answer(200, "OK")
        assert (await txn.final()).status == 200
        assert len(w.layer.sent) == 1
        txn = await w.send(build_request("MESSAGE", branch="z9hG4bK2",
                                         headers=(("Max-Breadth", "0"),)))
        assert (await txn.final()).status == 440
        await w.settle()

    run(go)


# -- CANCEL -------------------------------------------------------------------------------


def test_cancel_answers_200_cancels_ringing_branches_and_the_caller_gets_487(svc: Services
                                                                            ) -> None:
    async def go() -> None:
        w = World(svc, Local("bob@domain.dom", (BOB_A, BOB_B)))
        invite = build_request()
        txn = await w.send(invite)
        a = await w.layer.next_sent("INVITE")
        b = await w.layer.next_sent("INVITE")
        a.answer(180, "Ringing", to_tag="a")
        await until(lambda: 180 in txn.statuses)
        cancel_txn = await w.send(build_request("CANCEL"))
        assert [r.status for r in cancel_txn.sent] == [200]
        to_a = await w.layer.next_sent("CANCEL")
        assert to_a.destination == a.destination
        assert len([c for c in w.layer.sent if c.request.method == "CANCEL"]) == 1
        b.answer(183, "Session Progress", to_tag="b")  # §9.1: b is cancelled now
        to_b = await w.layer.next_sent("CANCEL")
        assert to_b.destination == b.destination
        for client in (to_a, to_b):
            client.answer(200, "OK")
        a.answer(487, "Request Terminated", to_tag="a")
        b.answer(487, "Request Terminated", to_tag="b")
        final = await txn.final()
        assert final.status == 487 and final.call_id == invite.call_id
        await w.settle()

    run(go)


def test_a_cancel_matching_nothing_is_481(svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Itself())
        txn = await w.send(build_request("CANCEL", branch="z9hG4bKnothing"))
        assert txn.statuses == [481]
        await w.settle()

    run(go)


# -- remote targets and failover ----------------------------------------------------------


def test_a_remote_target_fails_over_to_the_next_hop_on_503_and_408(svc: Services) -> None:
    hops = [Hop("udp", "192.0.2.31", 5060, "sip1.friend.com"),
            Hop("tcp", "192.0.2.32", 5070, "sip2.friend.com"),
            Hop("udp", "192.0.2.33", 5060, "sip3.friend.com")]

    async def go() -> None:
        w = World(svc, Remote("sip:bob@friend.com", "friend.com", None, None),
                  hops={"friend.com": hops})
        txn = await w.send(build_request(uri="sip:bob@friend.com"))
        first = await w.layer.next_sent("INVITE")
        assert first.destination == Destination("udp", "192.0.2.31", 5060)
        assert str(first.request.uri) == "sip:bob@friend.com"
        first.answer(503, "Service Unavailable")
        second = await w.layer.next_sent("INVITE")
        assert second.destination == Destination("tcp", "192.0.2.32", 5070)
        assert second.request.top_via.transport == "TCP"
        second.answer(408, "Request Timeout")  # the layer's Timer B
        third = await w.layer.next_sent("INVITE")
        third.answer(200, "OK")
        assert (await txn.final()).status == 200
        await w.settle()

    run(go)


def test_the_last_hops_503_goes_back_as_500(svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Remote("sip:bob@friend.com", "192.0.2.31", 5060, "udp"))
        txn = await w.send(build_request("MESSAGE", uri="sip:bob@friend.com"))
        hop = await w.layer.next_sent("MESSAGE")
        hop.answer(503, "Service Unavailable")
        assert (await txn.final()).status == 500
        await w.settle()

    run(go)


def test_next_hop_failures_answer_their_status_and_a_slow_dns_503(svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Remote("sip:bob@nx.example", "nx.example", None, None),
                  hops={"nx.example": NextHopError(404, "Not Found"), "slow.example": "slow"})
        txn = await w.send(build_request(uri="sip:bob@nx.example"))
        assert (await txn.final()).status == 404
        w.decision = Remote("sip:bob@slow.example", "slow.example", None, None)
        txn = await w.send(build_request(uri="sip:bob@slow.example", branch="z9hG4bK2"))
        assert (await txn.final()).status == 503
        assert w.layer.sent == []
        await w.settle()

    run(go)


# -- Timer C ------------------------------------------------------------------------------


def test_timer_c_cancels_a_branch_that_rings_too_long_and_gives_it_up(svc: Services) -> None:
    timing = ProxyTiming(timer_c=0.2, cancel_wait=0.2, next_hop_timeout=1, refresh=0)

    async def go() -> None:
        w = World(svc, Local("bob@domain.dom", (BOB_A,)), timing=timing)
        txn = await w.send(build_request())
        a = await w.layer.next_sent("INVITE")
        a.answer(180, "Ringing")
        cancel = await w.layer.next_sent("CANCEL", timeout=2)
        assert cancel.destination == a.destination
        # the UAS never answers the CANCEL nor the INVITE
        final = await txn.final(timeout=3)
        assert final.status == 408
        await w.settle()

    run(go)


def test_timer_c_is_at_least_three_minutes_from_the_settings(svc: Services) -> None:
    timing = ProxyTiming.from_settings(svc.settings())
    assert timing.timer_c == 200 and timing.max_breadth == 60 and timing.cancel_wait == 32
    svc.set_setting("SIPTimerC", "10")
    try:
        assert ProxyTiming.from_settings(svc.settings()).timer_c == 181
    finally:
        svc.set_setting("SIPTimerC", "default")


# -- the decision's other answers ---------------------------------------------------------


def test_a_refusal_answers_its_status_and_407_challenges(svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Refuse(403, "Forbidden"))
        txn = await w.send(build_request(uri="sip:bob@friend.com"))
        assert (await txn.final()).status == 403
        w.decision = Refuse(407, "Proxy Authentication Required", "domain.dom")
        txn = await w.send(build_request(uri="sip:bob@friend.com", branch="z9hG4bK2"))
        final = await txn.final()
        assert final.status == 407
        challenges = final.headers.fields("Proxy-Authenticate")
        assert [c.split("algorithm=")[1].split(",")[0] for c in challenges] == ["SHA-256", "MD5"]
        assert all('realm="domain.dom"' in c for c in challenges)
        assert w.layer.sent == []
        await w.settle()

    run(go)


def credentials(challenge: str, uri: str, password: str = PASSWORDS[ALICE],
                method: str = "INVITE") -> str:
    nonce = challenge.split('nonce="')[1].split('"')[0]
    response = digest.response_for("MD5", "alice", "domain.dom", password, method, uri,
                                   nonce, "00000001", "cn1")
    return (f'Digest username="alice", realm="domain.dom", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="cn1"')


def test_proxy_authorization_proves_the_account_and_is_consumed(svc: Services) -> None:
    async def go() -> None:
        uri = "sip:bob@friend.com"
        w = World(svc, Refuse(407, "Proxy Authentication Required", "domain.dom"))
        txn = await w.send(build_request(uri=uri))
        challenge = (await txn.final()).headers.fields("Proxy-Authenticate")[-1]
        w.decision = Remote(uri, "192.0.2.31", 5060, "udp")
        other = 'Digest username="x", realm="elsewhere.example", nonce="n", uri="u", response="r"'
        txn = await w.send(build_request(uri=uri, branch="z9hG4bK2", cseq=2, headers=(
            ("Proxy-Authorization", credentials(challenge, uri)),
            ("Proxy-Authorization", other))))
        sent = await w.layer.next_sent("INVITE")
        assert w.asked[-1].authenticated == ALICE
        assert sent.request.headers.fields("Proxy-Authorization") == [other]
        sent.answer(200, "OK")
        await txn.final()
        # a wrong password proves nothing
        w.decision = Refuse(407, "Proxy Authentication Required", "domain.dom")
        txn = await w.send(build_request(uri=uri, branch="z9hG4bK3", cseq=3, headers=(
            ("Proxy-Authorization", credentials(challenge, uri, "wrong")),)))
        assert (await txn.final()).status == 407
        assert w.asked[-1].authenticated is None
        await w.settle()

    run(go)


def test_the_server_itself_answers_options_and_refuses_other_methods(svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Itself())
        answers = {}
        for n, method in enumerate(("OPTIONS", "MESSAGE", "BYE")):
            txn = await w.send(build_request(method, uri="sip:domain.dom", branch=f"z9hG4bK{n}"))
            answers[method] = await txn.final()
        assert answers["OPTIONS"].status == 200 and "INVITE" in (
            answers["OPTIONS"].headers.get("Allow") or "")
        assert answers["MESSAGE"].status == 405 and answers["MESSAGE"].headers.get("Allow")
        assert answers["BYE"].status == 481
        await w.settle()

    run(go)


# -- validation before anything is decided ------------------------------------------------


def test_bad_requests_are_refused_before_routing(svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Local("bob@domain.dom", (BOB_A,)))
        cases = {483: build_request("MESSAGE", max_forwards=0),
                 416: build_request("MESSAGE", uri="tel:+15551234", branch="z9hG4bK2"),
                 420: build_request("MESSAGE", branch="z9hG4bK3",
                                    headers=(("Proxy-Require", "sec-agree"),))}
        for status, request in cases.items():
            txn = await w.send(request)
            assert (await txn.final()).status == status
        assert w.asked == [] and w.layer.sent == []
        await w.settle()

    run(go)


def test_a_request_that_loops_back_is_482(svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Remote("sip:bob@friend.com", "192.0.2.31", 5060, "udp"))
        first = build_request("MESSAGE", uri="sip:bob@friend.com")
        txn = await w.send(first)
        out = await w.layer.next_sent("MESSAGE")
        # friend.com sends it straight back to us
        back = out.request.copy()
        back.headers.add("Via", "SIP/2.0/UDP 192.0.2.31;branch=z9hG4bKfriend", first=True)
        looped = await w.send(back, Destination("udp", "192.0.2.31", 5060))
        assert (await looped.final()).status == 482
        out.answer(482, "Loop Detected")
        assert (await txn.final()).status == 482
        await w.settle()

    run(go)


# -- in-dialog and stateless requests -----------------------------------------------------


def test_an_in_dialog_request_follows_its_route_without_a_decision(svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Refuse(403, "Forbidden"))
        bye = build_request("BYE", uri=BOB_A, to_tag="a", cseq=2,
                            headers=(("Route", OUR_ROUTE),))
        txn = await w.send(bye)
        sent = await w.layer.next_sent("BYE")
        assert sent.destination == Destination("udp", "192.0.2.21", 5062)
        assert "Route" not in sent.request.headers and "Record-Route" not in sent.request.headers
        sent.answer(200, "OK")
        assert (await txn.final()).status == 200
        assert w.asked == []
        await w.settle()

    run(go)


def test_a_foreign_route_to_a_local_target_is_403(svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Local("bob@domain.dom", (BOB_A,)))
        txn = await w.send(build_request(headers=(("Route", "<sip:192.0.2.99;lr>"),)))
        assert (await txn.final()).status == 403
        assert w.layer.sent == []
        await w.settle()

    run(go)


def test_an_ack_to_a_2xx_is_forwarded_statelessly_by_our_route(svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Refuse(403, "Forbidden"))
        ack = build_request("ACK", uri=BOB_A, to_tag="a", headers=(("Route", OUR_ROUTE),))
        for _ in range(2):  # a retransmission gets the same branch
            await w.proxy.handle(ack, None, PHONE)
        await w.layer.wait_stateless(2)
        (first, where), (again, _) = w.layer.stateless
        assert isinstance(first, SipRequest) and isinstance(again, SipRequest)
        assert where == Destination("udp", "192.0.2.21", 5062)
        assert first.top_via.branch == again.top_via.branch
        assert first.max_forwards == 69 and "Route" not in first.headers
        # without our Route the decision rules: refused, nobody relays an ACK through us
        await w.proxy.handle(build_request("ACK", uri=BOB_A, to_tag="a"), None, PHONE)
        # a foreign Route is never followed statelessly
        await w.proxy.handle(build_request("ACK", uri=BOB_A, to_tag="a", headers=(
            ("Route", "<sip:192.0.2.99;lr>"),)), None, PHONE)
        await w.settle()
        assert len(w.layer.stateless) == 2
        assert [a.method for a in w.asked] == ["ACK"]

    run(go)


def test_a_stray_2xx_goes_back_statelessly_by_its_via_and_a_foreign_one_is_dropped(
        svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Itself())
        sent = build_request(vias=("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKwpabc.1;rport",))
        sent.headers.set("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKwpabc.1;rport")
        sent.headers.add("Via", "SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKc;received=192.0.2.7;"
                         "rport=6000")
        ok = SipResponse(200, "OK", sent.headers.copy())
        await w.proxy.on_stray_response(ok, Destination("udp", "192.0.2.21", 5062))
        await w.layer.wait_stateless(1)
        message, where = w.layer.stateless[0]
        assert where == Destination("udp", "192.0.2.7", 6000)
        assert isinstance(message, SipResponse) and len(message.vias) == 1
        foreign = SipResponse(200, "OK", build_request().headers.copy())
        await w.proxy.on_stray_response(foreign, PHONE)
        ringing = SipResponse(180, "Ringing", sent.headers.copy())
        await w.proxy.on_stray_response(ringing, PHONE)
        await w.settle()
        assert len(w.layer.stateless) == 1

    run(go)


def test_the_factory_builds_a_proxy_with_the_server_settings(svc: Services) -> None:
    proxy = stateful_proxy(svc, FakeLayer())
    assert isinstance(proxy, StatefulProxy) and proxy.timing == ProxyTiming()


def test_a_call_leaving_by_another_transport_is_record_routed_twice(svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Local("bob@domain.dom", (BOB_A,)))
        txn = await w.send(build_request(), Destination("tcp", "192.0.2.7", 40000))
        a = await w.layer.next_sent("INVITE")
        assert a.request.headers.values("Record-Route") == [
            OUR_ROUTE, "<sip:127.0.0.1:5060;transport=tcp;lr>"]
        a.answer(200, "OK")
        await txn.final()
        await w.settle()

    run(go)


def test_timer_c_never_cancels_a_non_invite_branch(svc: Services) -> None:
    timing = ProxyTiming(timer_c=0.2, cancel_wait=0.2, next_hop_timeout=1, refresh=0)

    async def go() -> None:
        w = World(svc, Local("bob@domain.dom", (BOB_A,)), timing=timing)
        txn = await w.send(build_request("MESSAGE"))
        a = await w.layer.next_sent("MESSAGE")
        a.answer(180, "Ringing")
        assert (await txn.final(timeout=3)).status == 408
        await w.settle()
        assert [c.request.method for c in w.layer.sent] == ["MESSAGE"]

    run(go)


def test_a_cancelled_call_answers_487_even_when_a_branch_timed_out(svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Local("bob@domain.dom", (BOB_A, BOB_B)))
        txn = await w.send(build_request())
        a = await w.layer.next_sent("INVITE")
        b = await w.layer.next_sent("INVITE")
        a.answer(180, "Ringing", to_tag="a")
        await until(lambda: 180 in txn.statuses)
        await w.send(build_request("CANCEL"))
        (await w.layer.next_sent("CANCEL")).answer(200, "OK")
        b.answer(408, "Request Timeout")  # b never answered: the layer's Timer B
        a.answer(487, "Request Terminated", to_tag="a")
        assert (await txn.final()).status == 487
        await w.settle()

    run(go)


def test_a_response_the_layer_synthesized_reaches_the_caller_with_its_own_vias(
        svc: Services) -> None:
    async def go() -> None:
        w = World(svc, Local("bob@domain.dom", (BOB_A,)))
        invite = build_request(vias=("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKup",))
        txn = await w.send(invite)
        a = await w.layer.next_sent("INVITE")
        synthesized = SipResponse(408, "Request Timeout", a.request.headers.copy())
        synthesized.headers.remove("Via")  # a layer that keeps no Via at all
        a.feed(synthesized)
        final = await txn.final()
        assert final.status == 408 and final.headers.fields("Via") == invite.headers.fields("Via")
        await w.settle()

    run(go)


def test_an_ack_without_a_route_set_goes_to_the_contacts_the_decision_gives(
        svc: Services) -> None:
    """sipp's built-in uac sends ACK and BYE to the proxy's own address."""
    async def go() -> None:
        w = World(svc, Local("bob@domain.dom", (BOB_A, BOB_B)))
        ack = build_request("ACK", uri="sip:bob@127.0.0.1:5060", to_tag="a")
        await w.proxy.handle(ack, None, PHONE)
        await w.layer.wait_stateless(2)
        await w.settle()
        sent = [(str(m.uri), d) for m, d in w.layer.stateless if isinstance(m, SipRequest)]
        assert sent == [(BOB_A, Destination("udp", "192.0.2.21", 5062)),
                        (BOB_B, Destination("udp", "192.0.2.22", 5062))]

    run(go)
