"""Fuzz target for the proxy's forwarding rules (``protocols/sip/forwarding.py``)
on every message the wire parser accepts (seeds in ``corpus/sip/messages``
and ``corpus/sip_forwarding``).

Two strategies: byte mutants of the seeds, and line mutants that keep the
header section whole and add proxy lines (Route, Via, Max-Forwards), so
many more reach the forwarding rules.

Properties: route preprocessing raises nothing but :class:`SipError`;
validation gives None or a refusal RFC 3261 §16.3 names (400, 416, 420, 482,
483); a request that passes has a next hop or a 400/416; its forwarded copy
parses again, has our Via on top and one hop less, and (sent back unchanged
with no strict router on the way) is seen as a loop; the CANCEL of the copy
parses and matches it; a response's Via stripping, next hop and best-response
choice raise nothing else, and the choice is one of the finals, a 500 for a
503, or a 408 for none.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.fuzz import TARGET, mutants, seed_ids, seeds

from waypost.protocols.sip.forwarding import (
    BRANCH_PREFIX,
    Refusal,
    Us,
    branch_for,
    cancel_for,
    choose_response,
    forward_copy,
    looped,
    next_hop,
    preprocess_routes,
    record_route,
    response_hop,
    strip_via,
    validate,
)
from waypost.protocols.sip.syntax import SipError
from waypost.protocols.sip.uri import SipUri
from waypost.protocols.sip.wire import SipLimits, SipRequest, SipResponse, parse_message

MESSAGES = seeds("sip/messages") + seeds("sip_forwarding")
TOKENS = ["\r\n", " ", ";", ",", "<", ">", ";lr", ";tag=x", ";maddr=127.0.0.1",
          "Route: <sip:127.0.0.1:5060;lr>\r\n", "Route: <sip:192.0.2.80>\r\n",
          "Route: <tel:+1>\r\n", "Proxy-Require: x\r\n", "Max-Forwards: 0\r\n",
          "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKwp0\r\n", "sips:", "tel:",
          "127.0.0.1:5060", "[::1]", "domain.dom", "z9hG4bKwp", "SIP/2.0 503 x\r\n",
          "SIP/2.0 401 x\r\n", "SIP/2.0 603 x\r\n"]
US = Us.of([("127.0.0.1", 5060), ("127.0.0.1", 5061)], ["domain.dom"])
LIMITS = SipLimits(max_header_bytes=4096, max_headers=60, max_body_bytes=1024)
REFUSALS = {400, 416, 420, 482, 483}


LINES = ["Route: <sip:127.0.0.1:5060;lr>", "Route: <sip:127.0.0.1;lr>, <sip:192.0.2.80>",
         "Route: <sip:domain.dom;lr>", "Route: <sips:192.0.2.81;lr;transport=tcp>",
         "Route: <sip:192.0.2.80;maddr=127.0.0.1>", "Proxy-Require: x", "Max-Forwards: 0",
         "Max-Forwards: 1", "Max-Breadth: 0", "Max-Breadth: 3",
         "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKwp0;rport",
         "Via: SIP/2.0/TLS [::1]:5061;branch=z9hG4bKwpdeadbeef.1", "To: <sip:b@x>;tag=t",
         "Record-Route: <sip:192.0.2.90;lr>", "Proxy-Authorization: Digest realm=x"]


@st.composite
def line_mutants(draw: st.DrawFn) -> bytes:
    """A seed whose header lines are mutated, dropped, repeated or joined
    by proxy lines (Route, Via, Max-Forwards ...), the header section kept
    whole, so most of them still parse and reach the forwarding rules."""
    seed = draw(st.sampled_from(MESSAGES))
    head, _, body = seed.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(1, len(lines)))
        op = draw(st.integers(0, 3))
        if op == 0:
            lines.insert(at, draw(st.sampled_from(LINES)).encode())
        elif op == 1 and at < len(lines):
            lines[at] = draw(mutants([lines[at]], [t for t in TOKENS if "\r" not in t],
                                     most=2))
        elif op == 2 and at < len(lines):
            del lines[at]
        elif at < len(lines):
            lines.insert(at, lines[at])
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def check_request(request: SipRequest) -> None:
    try:
        pre = preprocess_routes(request, US)
    except SipError:
        return
    refusal = validate(pre.request, US)
    if refusal is not None:
        assert refusal.status in REFUSALS
        refusal.response(request).to_bytes()
        return
    target = next_hop(pre.request)
    if isinstance(target, Refusal):
        assert target.status in (400, 416)
        return
    before = pre.request.max_forwards
    copy = forward_copy(pre.request, target=None, via_transport="udp",
                        sent_by=("127.0.0.1", 5060), branch=branch_for(pre.request, "1"),
                        record=record_route(("127.0.0.1", 5060), "udp"))
    again = parse_message(copy.to_bytes())
    assert isinstance(again, SipRequest)
    assert (again.top_via.branch or "").startswith(BRANCH_PREFIX)
    assert again.max_forwards == (70 if before is None else before - 1)
    routes = pre.request.name_addrs("Route")
    strict = routes and isinstance(routes[0].uri, SipUri) and not routes[0].uri.loose_route
    if not strict and request.method not in ("ACK", "CANCEL"):
        assert looped(again, US)
    cancel = parse_message(cancel_for(copy).to_bytes())
    assert isinstance(cancel, SipRequest) and cancel.method == "CANCEL"
    assert cancel.top_via == again.top_via and cancel.cseq.number == again.cseq.number


def check_response(response: SipResponse) -> None:
    stripped = strip_via(response)
    if stripped is not None:
        try:
            response_hop(stripped)
        except SipError:
            pass
    finals = [r for r in (response, stripped) if r is not None and r.status >= 300]
    try:
        request = parse_message(MESSAGES[0])
    except SipError:  # pragma: no cover - the first seed is a good request
        raise
    assert isinstance(request, SipRequest)
    best = choose_response(request, finals)
    assert best.status in {r.status for r in finals} | {500, 408}
    best.to_bytes()


def check(data: bytes) -> None:
    try:
        message = parse_message(data, limits=LIMITS)
    except SipError:
        return
    if isinstance(message, SipRequest):
        check_request(message)
    else:
        assert isinstance(message, SipResponse)
        check_response(message)


@pytest.mark.parametrize("data", MESSAGES, ids=seed_ids(MESSAGES))
def test_forwarding_seeds(data: bytes) -> None:
    check(data)


@TARGET
@given(mutants(MESSAGES, TOKENS))
def test_forwarding_mutants(data: bytes) -> None:
    check(data)


@TARGET
@given(line_mutants())
def test_forwarding_line_mutants(data: bytes) -> None:
    check(data)
