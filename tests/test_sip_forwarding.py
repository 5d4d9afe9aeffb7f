"""The proxy's pure forwarding rules (``protocols/sip/forwarding.py``, RFC 3261
§16, §9.1, RFC 5393) on parsed messages: validation, route preprocessing,
the forwarded copy, loop detection, best-response selection, CANCEL."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.support.sip_fakes import build_request

from waypost.protocols.sip.forwarding import (
    BRANCH_PREFIX,
    Refusal,
    Target,
    Us,
    branch_for,
    breadth_shares,
    cancel_for,
    choose_response,
    forward_copy,
    is_dialog_creating,
    looped,
    max_breadth_of,
    next_hop,
    preprocess_routes,
    record_route,
    response_hop,
    stateless_branch,
    strip_via,
    validate,
)
from waypost.protocols.sip.uri import SipUri
from waypost.protocols.sip.wire import SipRequest, SipResponse, parse_message, response_for

US = Us.of([("127.0.0.1", 5060), ("127.0.0.1", 5061)], ["domain.dom"])
OUR_ROUTE = "<sip:127.0.0.1:5060;lr>"


def forward(request: SipRequest, target: str | None = "sip:bob@192.0.2.9:5070",
            suffix: str = "1") -> SipRequest:
    uri = None if target is None else SipUri("sip", "192.0.2.9", "bob", port=5070)
    return forward_copy(request, target=uri, via_transport="udp", sent_by=("127.0.0.1", 5060),
                        branch=branch_for(request, suffix),
                        record=record_route(("127.0.0.1", 5060), "udp"))


def reparse(message: SipRequest | SipResponse) -> SipRequest | SipResponse:
    parsed = parse_message(message.to_bytes())
    assert isinstance(parsed, (SipRequest, SipResponse))
    return parsed


# -- §16.3 validation ---------------------------------------------------------------------


def test_a_good_request_passes_validation() -> None:
    assert validate(build_request(), US) is None


def test_a_tel_request_uri_is_416() -> None:
    refusal = validate(build_request(uri="tel:+15551234"), US)
    assert refusal == Refusal(416, "Unsupported URI Scheme")


def test_max_forwards_zero_is_483_for_every_method() -> None:
    for method in ("INVITE", "OPTIONS", "MESSAGE"):
        refusal = validate(build_request(method, max_forwards=0), US)
        assert refusal is not None and refusal.status == 483


def test_proxy_require_is_420_naming_the_unsupported_options() -> None:
    request = build_request(headers=(("Proxy-Require", "foo, bar"),))
    refusal = validate(request, US)
    assert refusal is not None and refusal.status == 420
    response = refusal.response(request)
    assert response.headers.get("Unsupported") == "foo, bar"
    assert response.headers.get("Call-ID") == request.call_id


def test_a_request_coming_back_unchanged_is_a_loop() -> None:
    request = build_request()
    sent = forward(request, target=None)
    back = reparse(sent)
    assert isinstance(back, SipRequest)
    back.headers.add("Via", "SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKother", first=True)
    assert looped(back, US)
    refusal = validate(back, US)
    assert refusal is not None and refusal.status == 482


def test_a_retargeted_request_is_a_spiral_not_a_loop() -> None:
    sent = forward(build_request(uri="sip:bob@domain.dom"), target=None)
    sent.uri = SipUri("sip", "domain.dom", "carol")  # another proxy retargeted it to us
    assert not looped(sent, US)
    assert validate(sent, US) is None


def test_a_loop_is_only_seen_in_our_own_vias() -> None:
    sent = forward(build_request(), target=None)
    other = Us.of([("127.0.0.2", 5060)])
    assert not looped(sent, other)


def test_branches_of_one_request_differ_but_share_the_loop_hash() -> None:
    request = build_request()
    a, b = branch_for(request, "1"), branch_for(request, "2")
    assert a != b and a.startswith(BRANCH_PREFIX) and b.startswith(BRANCH_PREFIX)
    assert a.split(".")[0] == b.split(".")[0]


def test_a_stateless_branch_is_the_same_for_a_retransmission() -> None:
    assert stateless_branch(build_request("ACK")) == stateless_branch(build_request("ACK"))
    assert stateless_branch(build_request("ACK")) != stateless_branch(
        build_request("ACK", branch="z9hG4bKcaller2"))


# -- §16.4 route preprocessing ------------------------------------------------------------


def test_our_route_on_top_is_removed() -> None:
    request = build_request(headers=(("Route", f"{OUR_ROUTE}, <sip:192.0.2.80;lr>"),))
    pre = preprocess_routes(request, US)
    assert pre.our_route
    assert pre.request.headers.values("Route") == ["<sip:192.0.2.80;lr>"]
    assert request.headers.values("Route") == [OUR_ROUTE, "<sip:192.0.2.80;lr>"]  # unchanged


def test_a_route_naming_a_local_domain_is_ours() -> None:
    request = build_request(headers=(("Route", "<sip:domain.dom;lr>"),))
    pre = preprocess_routes(request, US)
    assert pre.our_route and "Route" not in pre.request.headers


def test_two_routes_of_ours_on_top_are_both_removed() -> None:
    request = build_request(headers=(("Route", OUR_ROUTE), ("Route", "<sip:127.0.0.1;lr>")))
    pre = preprocess_routes(request, US)
    assert pre.our_route and pre.request.headers.values("Route") == []


def test_a_foreign_route_is_kept_and_not_ours() -> None:
    request = build_request(headers=(("Route", "<sip:192.0.2.80;lr>"),))
    pre = preprocess_routes(request, US)
    assert not pre.our_route and pre.request.headers.values("Route") == ["<sip:192.0.2.80;lr>"]


def test_a_strict_router_request_uri_is_replaced_by_the_last_route() -> None:
    request = build_request(uri="sip:127.0.0.1:5060",
                            headers=(("Route", "<sip:192.0.2.80>, <sip:bob@192.0.2.9>"),))
    pre = preprocess_routes(request, US)
    assert str(pre.request.uri) == "sip:bob@192.0.2.9"
    assert pre.request.headers.values("Route") == ["<sip:192.0.2.80>"]
    assert pre.our_route


# -- §16.6 the forwarded copy -------------------------------------------------------------


def test_the_copy_has_the_target_fewer_hops_our_via_and_record_route() -> None:
    request = build_request(max_forwards=10)
    sent = reparse(forward(request))
    assert isinstance(sent, SipRequest)
    assert str(sent.uri) == "sip:bob@192.0.2.9:5070"
    assert sent.max_forwards == 9
    top = sent.top_via
    assert top.host == "127.0.0.1" and top.port == 5060 and top.transport == "UDP"
    assert (top.branch or "").startswith(BRANCH_PREFIX) and top.has_rport
    assert len(sent.vias) == 2
    assert sent.headers.values("Record-Route") == ["<sip:127.0.0.1:5060;lr>"]
    assert request.max_forwards == 10 and len(request.vias) == 1  # the original is untouched


def test_requests_outside_dialog_creation_get_no_record_route() -> None:
    for request in (build_request("MESSAGE"), build_request("INVITE", to_tag="t1"),
                    build_request("BYE", to_tag="t1")):
        assert "Record-Route" not in forward(request).headers
    assert is_dialog_creating(build_request("SUBSCRIBE"))


def test_record_route_over_tcp_names_the_transport_and_sips_stays_sips() -> None:
    assert str(record_route(("127.0.0.1", 5060), "tcp")) == "<sip:127.0.0.1:5060;transport=tcp;lr>"
    assert str(record_route(("::1", 5061), "tls", secure=True)) == "<sips:[::1]:5061;lr>"


def test_max_forwards_one_is_forwarded_as_zero() -> None:
    assert forward(build_request(max_forwards=1)).max_forwards == 0


def test_a_strict_next_hop_gets_the_request_uri_in_the_route_set() -> None:
    request = build_request(headers=(("Route", "<sip:192.0.2.80>, <sip:192.0.2.81;lr>"),))
    sent = forward(request, target=None)
    assert str(sent.uri) == "sip:192.0.2.80"
    assert sent.headers.values("Route") == ["<sip:192.0.2.81;lr>", "<sip:bob@domain.dom>"]


def test_the_next_hop_is_the_first_route_else_the_request_uri() -> None:
    hop = next_hop(build_request(headers=(("Route", "<sip:192.0.2.80:5070;transport=tcp;lr>"),)))
    assert isinstance(hop, Target)
    assert (hop.host, hop.port, hop.transport, hop.secure) == ("192.0.2.80", 5070, "tcp", False)
    hop = next_hop(build_request(uri="sips:bob@[2001:db8::1];maddr=192.0.2.5"))
    assert isinstance(hop, Target)
    assert (hop.host, hop.port, hop.transport, hop.secure) == ("192.0.2.5", None, "tls", True)
    assert next_hop(build_request(uri="tel:+1555")) == Refusal(416, "Unsupported URI Scheme")


def test_max_breadth_is_shared_among_parallel_branches() -> None:
    assert breadth_shares(None, 60, 2) == [30, 30]
    assert breadth_shares(5, 60, 2) == [3, 2]
    assert breadth_shares(1, 60, 3) == [1]  # only one branch may be forked
    assert breadth_shares(0, 60, 1) == []  # 440
    assert max_breadth_of(build_request(headers=(("Max-Breadth", "7"),))) == 7
    assert max_breadth_of(build_request(headers=(("Max-Breadth", "x"),))) is None
    sent = forward_copy(build_request(), target=None, via_transport="tcp",
                        sent_by=("127.0.0.1", 5060), branch="z9hG4bKwpx.1", max_breadth=3)
    assert sent.headers.get("Max-Breadth") == "3" and sent.top_via.transport == "TCP"


# -- §16.7 responses ----------------------------------------------------------------------


def answer(request: SipRequest, status: int, *headers: tuple[str, str]) -> SipResponse:
    response = response_for(request, status, f"Status {status}", to_tag="x")
    for name, value in headers:
        response.headers.add(name, value)
    return response


def test_strip_via_removes_ours_and_none_when_nothing_is_left() -> None:
    sent = forward(build_request())
    response = answer(sent, 180)
    stripped = strip_via(response)
    assert stripped is not None and len(stripped.vias) == 1
    assert stripped.top_via.host == "192.0.2.7"
    alone = response_for(build_request(), 200, "OK")
    assert strip_via(alone) is None


def test_the_response_hop_follows_received_and_rport() -> None:
    response = SipResponse(200, "OK")
    response.headers.add("Via", "SIP/2.0/UDP phone.example;received=192.0.2.7;rport=6000")
    hop = response_hop(response)
    assert (hop.transport, hop.host, hop.port) == ("udp", "192.0.2.7", 6000)
    plain = SipResponse(200, "OK")
    plain.headers.add("Via", "SIP/2.0/TLS 192.0.2.8;branch=z9hG4bKa")
    hop = response_hop(plain)
    assert (hop.transport, hop.host, hop.port) == ("tls", "192.0.2.8", 5061)


def test_a_6xx_wins_over_every_other_final() -> None:
    request = build_request()
    finals = [answer(request, 404), answer(request, 603), answer(request, 302)]
    assert choose_response(request, finals).status == 603


def test_the_lowest_class_wins_and_401_407_are_preferred_in_4xx() -> None:
    request = build_request()
    assert choose_response(request, [answer(request, 486), answer(request, 302)]).status == 302
    assert choose_response(request, [answer(request, 486), answer(request, 404)]).status == 404
    assert choose_response(request, [answer(request, 404), answer(request, 407)]).status == 407


def test_challenges_of_every_401_and_407_are_aggregated() -> None:
    request = build_request()
    a = answer(request, 401, ("WWW-Authenticate", 'Digest realm="a", nonce="1"'))
    b = answer(request, 407, ("Proxy-Authenticate", 'Digest realm="b", nonce="2"'))
    c = answer(request, 401, ("WWW-Authenticate", 'Digest realm="a", nonce="1"'))
    best = choose_response(request, [a, b, c])
    assert best.status == 401
    assert best.headers.fields("WWW-Authenticate") == ['Digest realm="a", nonce="1"']
    assert best.headers.fields("Proxy-Authenticate") == ['Digest realm="b", nonce="2"']
    assert "Proxy-Authenticate" not in a.headers  # the branch's response is untouched


def test_a_503_is_sent_back_as_500_without_retry_after() -> None:
    request = build_request()
    best = choose_response(request, [answer(request, 503, ("Retry-After", "30"))])
    assert (best.status, best.reason) == (500, "Server Internal Error")
    assert "Retry-After" not in best.headers


def test_no_final_at_all_is_a_408() -> None:
    request = build_request()
    best = choose_response(request, [])
    assert best.status == 408 and best.headers.get("Call-ID") == request.call_id


# -- §9.1 CANCEL ---------------------------------------------------------------------------


def test_the_cancel_of_a_branch_matches_its_transaction() -> None:
    sent = forward(build_request(cseq=7, headers=(("Route", "<sip:192.0.2.80;lr>"),)))
    cancel = reparse(cancel_for(sent))
    assert isinstance(cancel, SipRequest)
    assert cancel.method == "CANCEL" and cancel.uri == sent.uri
    assert [str(v) for v in cancel.vias] == [str(sent.top_via)]
    assert str(cancel.cseq) == "7 CANCEL"
    assert cancel.call_id == sent.call_id
    assert cancel.headers.get("From") == sent.headers.get("From")
    assert cancel.headers.get("To") == sent.headers.get("To")
    assert cancel.headers.values("Route") == ["<sip:192.0.2.80;lr>"]


# -- purity --------------------------------------------------------------------------------

PURE = {"__future__", "hashlib", "dataclasses", "collections.abc", "typing"}


def test_the_forwarding_module_does_no_io() -> None:
    """Only these standard modules and the pure SIP wire modules."""
    path = Path(sys.modules["waypost.protocols.sip.forwarding"].__file__ or "")
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            assert name in PURE or name.removeprefix("waypost.protocols.sip.") in (
                "wire", "headers", "uri", "syntax"), name
