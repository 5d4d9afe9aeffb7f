"""The SIP wire format (``protocols/sip/wire.py``), on bytes: messages
modelled on the RFC 4475 torture tests (written here, not copied: valid but
odd ones parse to the right values, invalid ones give the right status),
compact forms, folding, multiple values, limits, streams cut anywhere,
URIs and their §19.1.4 comparison, and the responses built from requests.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from tests.support.cli import Waypost

from waypost.protocols.sip import headers as sip_headers
from waypost.protocols.sip.headers import Headers, NameAddr, parse_name_addr, parse_via
from waypost.protocols.sip.syntax import SipError
from waypost.protocols.sip.uri import OtherUri, SipUri, parse_sip_uri, parse_uri
from waypost.protocols.sip.wire import (
    MAGIC_COOKIE,
    PING,
    PONG,
    KeepAlive,
    SipLimits,
    SipMessage,
    SipRequest,
    SipResponse,
    StreamFramer,
    error_response,
    new_branch,
    new_tag,
    parse_message,
    response_for,
)
from waypost.settings import ServerSettings, SettingError, validate

MANDATORY = {
    "Via": "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds",
    "Max-Forwards": "70",
    "To": "Bob <sip:bob@example.com>",
    "From": "Alice <sip:alice@example.org>;tag=1928301774",
    "Call-ID": "a84b4c76e66710@pc33.example.org",
    "CSeq": "314159 INVITE",
}


def message(start: str = "INVITE sip:bob@example.com SIP/2.0", *, drop: tuple[str, ...] = (),
            extra: tuple[str, ...] = (), body: bytes = b"", length: int | None = -1,
            **changes: str) -> bytes:
    """A request (or, with a status line, a response) from the mandatory
    headers, with some dropped, changed (``Call_ID=`` for Call-ID) or added."""
    fields = {**MANDATORY, **{k.replace("_", "-"): v for k, v in changes.items()}}
    lines = [start, *(f"{k}: {v}" for k, v in fields.items() if k not in drop), *extra]
    if length is not None:
        lines.append(f"Content-Length: {len(body) if length == -1 else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def refused(data: bytes, **kw: SipLimits) -> SipError:
    with pytest.raises(SipError) as info:
        parse_message(data, **kw)
    return info.value


def request(data: bytes) -> SipRequest:
    parsed = parse_message(data)
    assert isinstance(parsed, SipRequest)
    return parsed


# -- valid but odd (RFC 4475 §3.1.1) -------------------------------------------------

TORTUOUS = (
    b"INVITE sip:vivian@chair.example.com;unknownparam SIP/2.0\r\n"
    b"TO :\r\n sip:vivian@chair.example.com ;   tag    = 1918181833n\r\n"
    b'from   : "J Rosenberg \\\\\\""       <sip:jdr@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n'
    b"MaX-fOrWaRdS: 0068\r\n"
    b"Call-ID: tortuous.ndaksdj@192.0.2.1\r\n"
    b"Content-Length   : 12\r\n"
    b"cseq: 0009\r\n  INVITE\r\n"
    b"Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\n"
    b"s :\r\n"
    b"NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n"
    b"UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"
    b"Route:\r\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\n"
    b"v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n"
    b" SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\n"
    b'm:"Quoted string \\"\\"" <sip:jdr@example.com> ; newparam =\r\n      newvalue ;\r\n'
    b"  secondparam ; q = 0.33\r\n"
    b"\r\n"
    b"v=0\r\no=x 1 1"
)


def test_a_tortuous_invite_parses_to_the_right_values() -> None:
    """Whitespace around every separator, folding, compact and odd-case names,
    leading zeros, an empty header, escaped quotes (RFC 4475 §3.1.1.1)."""
    msg = request(TORTUOUS)
    assert msg.method == "INVITE"
    assert isinstance(msg.uri, SipUri) and msg.uri.params.has("unknownparam")
    assert msg.to.tag == "1918181833n" and str(msg.to.uri) == "sip:vivian@chair.example.com"
    assert msg.from_.display == 'J Rosenberg \\"' and msg.from_.tag == "98asjd8"
    assert msg.max_forwards == 68
    assert (msg.cseq.number, msg.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = msg.contacts.addresses
    assert contact.display == 'Quoted string ""' and contact.q == 0.33
    assert contact.params.get("newparam") == "newvalue" and contact.params.has("secondparam")
    (route,) = msg.name_addrs("Route")
    assert isinstance(route.uri, SipUri) and route.uri.loose_route
    assert msg.body == b"v=0\r\no=x 1 1"
    assert "Content-Length" not in msg.headers  # the framing, rewritten on output


def test_unusual_but_legal_characters_everywhere() -> None:
    """RFC 4475 §3.1.1.2: token characters in the method and header names, the
    user-unreserved and password characters of a URI."""
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    uri = ("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
           "(doesn't-it)@example.com")
    data = message(f"{method} {uri} SIP/2.0", CSeq=f"139122385 {method}",
                   extra=("extensionHeader-!.%*+_`'~: \u5927\u5947\u5999",),
                   To=f'"BEL: NUL: DEL:" <{uri}>')
    msg = request(data)
    assert msg.method == method
    assert isinstance(msg.uri, SipUri)
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert str(msg.uri) == uri
    assert msg.headers.get("EXTENSIONHEADER-!.%*+_`'~") == "\u5927\u5947\u5999"


def test_escapes_in_uris() -> None:
    """RFC 4475 §3.1.1.3-5: escaped characters (also %00) in the user part
    compare unescaped; ``%`` in a method or display name is no escape."""
    msg = request(message("INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0"))
    assert isinstance(msg.uri, SipUri)
    assert msg.uri.user == "sips%3Auser%40example.com"
    assert msg.uri.user_text == "sips:user@example.com"
    assert parse_sip_uri("sip:null-%00-null@example.com").user_text == "null-\x00-null"
    odd = request(message("RE%GISTER sip:registrar.example.com SIP/2.0",
                          CSeq="1 RE%GISTER", To='"%Z%45" <sip:resource@example.com>'))
    assert odd.method == "RE%GISTER" and odd.to.display == "%Z%45"


def test_display_names_with_and_without_space_before_the_angle() -> None:
    """RFC 4475 §3.1.1.6, and token display names joined by single spaces."""
    msg = request(message(From='caller<sip:caller@example.com>;tag=323',
                          To='"called"<sip:called@example.org>'))
    assert msg.from_.display == "caller" and msg.from_.tag == "323"
    assert msg.to.display == "called"
    assert parse_name_addr("Bob   Q  Smith <sip:b@x>", "To").display == "Bob Q Smith"
    assert parse_name_addr("<sip:b@x>", "To").display is None


def test_extra_octets_after_content_length_are_discarded_on_a_datagram() -> None:
    """RFC 4475 §3.1.1.8 / RFC 3261 §18.3."""
    data = message("REGISTER sip:example.com SIP/2.0", CSeq="1 REGISTER", body=b"")
    msg = parse_message(data + b"INVITE sip:joe@example.com SIP/2.0\r\nt: sip:joe@example.com\r\n\r\n")
    assert msg.body == b""
    # without a Content-Length, the datagram's rest is the body
    assert parse_message(message(length=None) + b"v=0\r\n").body == b"v=0\r\n"


def test_semicolons_in_the_user_part_and_unknown_transports() -> None:
    """RFC 4475 §3.1.1.9-10."""
    msg = request(message("OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0",
                          CSeq="1 OPTIONS"))
    assert isinstance(msg.uri, SipUri)
    assert msg.uri.user == "user;par=u%40example.net" and msg.uri.host == "example.com"
    assert not msg.uri.params.has("par")
    vias = request(message(Via="SIP/2.0/UNKNOWN t1.example.com;branch=z9hG4bKunk123, "
                               "SIP/2.0/SCTP t2.example.com;branch=z9hG4bKsctp, "
                               "SIP/2.0/tls t3.example.com:5061;branch=z9hG4bKtls")).vias
    assert [(v.transport, v.port) for v in vias] == [("UNKNOWN", None), ("SCTP", None),
                                                      ("TLS", 5061)]


def test_unusual_and_empty_reason_phrases() -> None:
    """RFC 4475 §3.1.1.12-13: UTF-8 reason phrases, and none at all."""
    head = "SIP/2.0 200 = 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e"
    odd = parse_message(message(head, CSeq="35 INVITE"))
    assert isinstance(odd, SipResponse) and odd.status == 200
    assert odd.reason == "= 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e"
    empty = parse_message(message("SIP/2.0 100 ", drop=("Max-Forwards",)))
    assert isinstance(empty, SipResponse) and (empty.status, empty.reason) == (100, "")
    assert empty.to_bytes().startswith(b"SIP/2.0 100 \r\n")


def test_long_values_within_the_limits() -> None:
    """RFC 4475 §3.1.1.7: long header values and many Via entries parse."""
    user = "a" * 2000
    vias = ", ".join(f"SIP/2.0/TCP host{i}.example.com;branch=z9hG4bK{i:04d}" for i in range(40))
    msg = request(message(f"INVITE sip:{user}@example.com SIP/2.0", Via=vias,
                          To=f'"{"I have a long name " * 20}" <sip:{user}@example.com>',
                          extra=("Unknown-LongHeader: " + "x" * 5000,)))
    assert len(msg.vias) == 40 and msg.vias[-1].branch == "z9hG4bK0039"
    assert isinstance(msg.uri, SipUri) and msg.uri.user == user


def test_zero_max_forwards_and_other_schemes_parse() -> None:
    """RFC 4475 §3.3.12 and §3.3.2-4: the session decides (483, 416)."""
    assert request(message(Max_Forwards="0")).max_forwards == 0
    msg = request(message("OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0", CSeq="1 OPTIONS",
                          To="<tel:+1-201-555-0123>"))
    assert msg.uri == OtherUri("soap.beep", "//192.0.2.103:3002")
    assert isinstance(msg.to.uri, OtherUri) and str(msg.to.uri) == "tel:+1-201-555-0123"
    with pytest.raises(SipError) as info:
        parse_sip_uri(str(msg.uri))
    assert (info.value.status, info.value.reason) == (416, "Unsupported URI Scheme")


# -- invalid (RFC 4475 §3.1.2, §3.3) ---------------------------------------------------


@pytest.mark.parametrize(("data", "reason"), [
    # §3.1.2.1: extraneous field separators
    (message(Via="SIP/2.0/UDP 192.0.2.15;;,;,,"), "Malformed Via header field (empty parameter)"),
    (message(Via="SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKa,"), "Malformed Via header field"),
    # §3.1.2.2-3: a Content-Length beyond the datagram, a negative one
    (message(body=b"v=0\r\n", length=9999), "Content-Length larger than the message"),
    (message(length=None, extra=("Content-Length: -999",)), "Malformed Content-Length header field"),
    # §3.1.2.4: overlarge scalars
    (message(CSeq="36893488147419103232 INVITE"), "Malformed CSeq header field"),
    (message(Max_Forwards="300"), "Malformed Max-Forwards header field"),
    (message(Max_Forwards="-1"), "Malformed Max-Forwards header field"),
    # §3.1.2.6: unterminated quoted string in a display name
    (message(From='"Bob <sip:bob@example.com>;tag=1'), "Unterminated quoted string"),
    # §3.1.2.7-11: the Request-Line
    (message("INVITE <sip:bob@example.com> SIP/2.0"), "Malformed Request-URI"),
    (message("INVITE sip:bob@example.com; lr SIP/2.0"), "Malformed Request-Line"),
    (message("INVITE  sip:bob@example.com  SIP/2.0"), "Malformed Request-Line"),
    (message("INVITE sip:bob@example.com SIP/2.0 "), "Malformed Request-Line"),
    (message("INVITE sip:bob@example.com?Route=%3Csip:x.example.com%3E SIP/2.0"),
     "Malformed Request-URI (headers)"),
    (message("INVITE sip:bob@exa_mple.com SIP/2.0"), "Malformed Request-URI"),
    (message("INVITE sip:bob@example.com:70000 SIP/2.0"), "Malformed Request-URI"),
    (message("INVITE sip:bob@[2001:db8::zz] SIP/2.0"), "Malformed Request-URI"),
    # §3.1.2.14-15: spaces in an addr-spec, non-token display names
    (message(To="<sip:bob@example.com >"), "Malformed To header field"),
    (message(To="Watson, Thomas <sip:t.watson@example.org>"), "Malformed To header field (URI needs <>)"),
    (message(From="Bell:Alex <sip:a@example.com>;tag=1"), "Malformed From header field"),
    # §3.1.2.17-18: CSeq method mismatch (also for an unknown method)
    (message(CSeq="1 ACK"), "CSeq method does not match the request method"),
    (message("NEWMETHOD sip:bob@example.com SIP/2.0"), "CSeq method does not match the request method"),
    # §3.3.1, §3.3.8-9: missing, doubled mandatory fields and Content-Length
    (message(drop=("Call-ID",)), "Missing Call-ID header field"),
    (message(drop=("To",)), "Missing To header field"),
    (message(drop=("From",)), "Missing From header field"),
    (message(drop=("CSeq",)), "Missing CSeq header field"),
    (message(drop=("Max-Forwards",)), "Missing Max-Forwards header field"),
    (message(drop=("Via",)), "Missing Via header field"),
    (message(extra=("Call-ID: other@example.org",)), "More than one Call-ID header field"),
    (message(extra=("t: <sip:eve@example.com>",)), "More than one To header field"),
    (message(extra=("l: 0",)), "More than one Content-Length header field"),
    # the header section itself
    (message(extra=("No colon here",)), "Malformed header field line"),
    (message(extra=("Bad Name: x",)), "Malformed header field line"),
    (message(extra=("X-Bell: ring\x07",)), "Control character in X-Bell header field"),
    (message(extra=("X-Bare: a\nb",)), "Bare CR or LF in header section"),
    (message(Call_ID="has space@example.org"), "Malformed Call-ID header field"),
    (message(Via="SIP/2.0/UDP 192.0.2.1;received=example.com"), "Malformed Via header field"),
    (message(Via="SIP/2.0/UDP 192.0.2.1;ttl=256"), "Malformed Via header field"),
    (message(Via="SIP/2.0/UDP 192.0.2.1;rport=0"), "Malformed Via header field"),
    (message(Via="SIP/2.0/UDP"), "Malformed Via header field"),
    (b" INVITE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n", "Malformed Request-Line"),
    (message() .replace(b"Bob", b"B\xf6b"), "Header section not UTF-8"),
])
def test_malformed_requests_get_400_naming_the_problem(data: bytes, reason: str) -> None:
    error = refused(data)
    assert (error.status, error.reason, error.drop, error.fatal) == (400, reason, False, False)


def test_a_continuation_before_any_header_is_refused() -> None:
    data = b"OPTIONS sip:a@example.com SIP/2.0\r\n folded: x\r\n" + message()[message().index(b"\r\n") + 2:]
    assert refused(data).reason == "Continuation line before the first header field"


def test_an_unknown_version_is_505() -> None:
    """RFC 4475 §3.1.2.16; the answer still carries the request's fields."""
    error = refused(message("OPTIONS sip:t.watson@example.org SIP/7.0", CSeq="1 OPTIONS"))
    assert (error.status, error.reason) == (505, "Version Not Supported")
    assert isinstance(error.message, SipRequest) and error.message.method == "OPTIONS"
    answer = error_response(error)
    assert answer is not None and answer.to_bytes().startswith(b"SIP/2.0 505 Version Not Supported\r\n")
    assert answer.headers.get("Call-ID") == MANDATORY["Call-ID"]


def test_the_400_answers_with_what_was_read() -> None:
    error = refused(message(drop=("Call-ID",)))
    answer = error_response(error)
    assert answer is not None and (answer.status, answer.reason) == (400, "Missing Call-ID header field")
    assert answer.headers.fields("Via") == [MANDATORY["Via"]]
    assert answer.headers.get("CSeq") == "314159 INVITE" and answer.headers.get("Call-ID") is None
    assert answer.to.tag  # a tag added (§8.2.6.2)
    # without a Via there is nowhere to send it
    assert error_response(refused(message(drop=("Via",)))) is None


@pytest.mark.parametrize("data", [
    message("SIP/2.0 4294967301 better not break the receiver"),  # §3.1.2.19
    message("SIP/2.0 700 Out of range"),
    message("SIP/2.0 099 Too small"),
    message("SIP/2.0 503 Service Unavailable", CSeq="36893488147419103232 INVITE"),  # §3.1.2.5
    message("SIP/2.0 200 OK", drop=("Call-ID",)),
    message("SIP/2.0 200 OK", Via="SIP/2.0/UDP ;;,,"),
    message("SIP/2.0 200 OK", body=b"abc", length=10),
    message("SIP/3.0 200 OK"),
    message("SIP/2.0 200 OK", extra=("X: \x00",)),
    b"SIP/2.0 200 OK\r\nVia: \xff\r\n\r\n",
    b"\r\n\r\n",
    b"hello",
    b"",
])
def test_garbled_responses_and_noise_are_dropped_silently(data: bytes) -> None:
    """§18.1.2: a response that cannot be read is discarded, never answered."""
    error = refused(data)
    assert error.drop and error.status is None and error_response(error) is None


def test_contact_errors_are_read_on_demand() -> None:
    """RFC 4475 §3.1.2.13: an escaped header in a URI without <> is a 400;
    ``*`` must stand alone; q and expires are checked."""
    bad_contact = request(message("REGISTER sip:example.com SIP/2.0", CSeq="1 REGISTER",
                                  extra=("Contact: sip:user@example.com?Route=%3Csip:x%3E",)))
    with pytest.raises(SipError) as info:
        bad_contact.contacts  # noqa: B018
    assert (info.value.status, info.value.reason) == (400, "Malformed Contact header field (URI needs <>)")
    for value, reason in [("*, <sip:a@b>", "Contact * must be the only contact"),
                          ("<sip:a@b>;q=1.5", "Malformed Contact q parameter"),
                          ("<sip:a@b>;expires=4294967296", "Malformed Contact expires parameter"),
                          ("<sip:a@b>;expires=soon", "Malformed Contact expires parameter")]:
        msg = request(message(extra=(f"Contact: {value}",)))
        with pytest.raises(SipError) as info:
            [(c.q, c.expires) for c in msg.contacts.addresses]
        assert (info.value.status, info.value.reason) == (400, reason)


def test_contact_parameters_belong_where_the_angle_brackets_say() -> None:
    """RFC 4475 §3.3.13-15: without <> a ;param is the contact's, inside <>
    the URI's; an escaped header inside <> is fine."""
    msg = request(message("REGISTER sip:example.com SIP/2.0", CSeq="1 REGISTER", extra=(
        "Contact: sip:+19725552222@gw1.example.net;unknownparam;expires=60",
        "m: <sip:+19725552222@gw1.example.net;unknownparam>;expires=70",
        "Contact: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>")))
    bare, angled, escaped = msg.contacts.addresses
    assert isinstance(bare.uri, SipUri) and not bare.uri.params and bare.expires == 60
    assert bare.params.has("unknownparam")
    assert isinstance(angled.uri, SipUri) and angled.uri.params.has("unknownparam")
    assert not angled.params.has("unknownparam") and angled.expires == 70
    assert isinstance(escaped.uri, SipUri)
    assert escaped.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)
    assert not msg.contacts.star
    star = request(message("REGISTER sip:example.com SIP/2.0", CSeq="2 REGISTER",
                           extra=("Contact: *", "Expires: 0")))
    assert star.contacts.star and star.contacts.addresses == () and star.expires == 0


def test_expires_header() -> None:
    assert request(message(extra=("Expires: 3600",))).expires == 3600
    assert request(message()).expires is None
    with pytest.raises(SipError, match="Malformed Expires header field"):
        request(message(extra=("Expires: 4294967296",))).expires  # noqa: B018


# -- header fields --------------------------------------------------------------------


@pytest.mark.parametrize(("compact", "name"), sorted(sip_headers.COMPACT.items()))
def test_compact_forms_are_stored_under_their_long_names(compact: str, name: str) -> None:
    fields = Headers([(compact.upper() if compact in "aeiou" else compact, "x")])
    assert list(fields) == [(name, "x")]
    assert fields.get(name.upper()) == "x" and fields.get(compact) == "x"


def test_a_message_in_compact_form() -> None:
    data = (b"INVITE sip:bob@example.com SIP/2.0\r\n"
            b"v: SIP/2.0/TCP client.example.org;branch=z9hG4bKc1\r\n"
            b"i: compact@example.org\r\nf: <sip:alice@example.org>;tag=a\r\nt: sip:bob@example.com\r\n"
            b"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nm: <sip:alice@192.0.2.5>\r\n"
            b"c: application/sdp\r\nk: 100rel, timer\r\nl: 4\r\n\r\nv=0\r\n")
    msg = request(data)
    assert msg.call_id == "compact@example.org" and msg.body == b"v=0\r"
    assert msg.headers.values("Supported") == ["100rel", "timer"]
    assert msg.headers.get("Content-Type") == "application/sdp"
    assert str(msg.contacts.addresses[0].uri) == "sip:alice@192.0.2.5"
    out = msg.to_bytes()
    assert b"\r\nCall-ID: compact@example.org\r\n" in out and b"\r\nContent-Length: 4\r\n\r\nv=0\r" in out


def test_folding_joins_continuation_lines_with_one_space() -> None:
    msg = request(message(extra=("Subject: I know you're there,\r\n\tpick up the phone\r\n  and talk to me!",)))
    assert msg.headers.get("Subject") == "I know you're there, pick up the phone and talk to me!"


def test_multiple_values_in_order_across_fields() -> None:
    """§7.3.1: a list header in one field or several means the same; commas in
    quoted strings and <...> do not split; other headers never split."""
    msg = request(message(extra=(
        'Route: "Proxy, One" <sip:p1.example.com;lr>, <sip:p2.example.com;lr>;x="a,b"',
        "Route: <sip:p3.example.com;lr>",
        "Date: Sat, 13 Nov 2010 23:29:00 GMT",
        'Authorization: Digest username="bob", realm="example.com"',
        "Authorization: Digest username=\"b2\"",
        "Supported:",
    )))
    routes = msg.name_addrs("Route")
    assert [str(r.uri) for r in routes] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr",
                                            "sip:p3.example.com;lr"]
    assert routes[0].display == "Proxy, One" and routes[1].params.get("x") == "a,b"
    assert msg.headers.values("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert len(msg.headers.values("Authorization")) == 2
    assert msg.headers.values("Supported") == []


def test_editing_header_fields() -> None:
    fields = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"),
                      ("Via", "SIP/2.0/UDP c;branch=z9hG4bK3"), ("To", "<sip:x@y>")])
    fields.add("v", "SIP/2.0/TCP proxy;branch=z9hG4bKp", first=True)
    assert [v.split(" ")[1] for v in fields.values("Via")] == ["proxy;branch=z9hG4bKp", "a;branch=z9hG4bK1",
                                                                "b;branch=z9hG4bK2", "c;branch=z9hG4bK3"]
    assert fields.pop_first_value("Via") == "SIP/2.0/TCP proxy;branch=z9hG4bKp"
    assert fields.pop_first_value("VIA") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert fields.fields("Via") == ["SIP/2.0/UDP b;branch=z9hG4bK2", "SIP/2.0/UDP c;branch=z9hG4bK3"]
    fields.set("To", "<sip:z@y>")
    assert list(fields)[-1] == ("To", "<sip:z@y>")
    assert fields.remove("via") == 2 and fields.pop_first_value("Via") is None
    with pytest.raises(ValueError):
        fields.add("X-Inject", "a\r\nVia: evil")
    with pytest.raises(ValueError):
        fields.add("Bad Name", "a")


# -- typed values ---------------------------------------------------------------------


def test_via_parameters() -> None:
    via = parse_via("SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKx;rport;received=192.0.2.1;"
                    "maddr=239.255.255.1;ttl=16")
    assert (via.host, via.port, via.branch, via.received) == ("[2001:db8::9]", 5070, "z9hG4bKx",
                                                              "192.0.2.1")
    assert via.has_rport and via.rport is None and via.maddr == "239.255.255.1" and via.ttl == 16
    filled = via.with_param("rport", "5071").with_param("received", "2001:db8::1")
    assert filled.rport == 5071 and filled.received == "2001:db8::1"
    assert str(filled) == ("SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKx;rport=5071;"
                           "received=2001:db8::1;maddr=239.255.255.1;ttl=16")
    assert parse_via(str(filled)) == filled
    assert not parse_via("SIP/2.0/TCP h").has_rport


def test_a_server_stamps_received_and_rport() -> None:
    """§18.2.1 and RFC 3581 §4."""
    same = parse_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa")
    assert same.received_from("192.0.2.1", 5060) == same
    assert str(same.received_from("198.51.100.7", 5060)) == (
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa;received=198.51.100.7")
    named = parse_via("SIP/2.0/TCP pc33.example.org;branch=z9hG4bKb")
    assert named.received_from("192.0.2.1", 41000).received == "192.0.2.1"
    nat = parse_via("SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKc")
    assert str(nat.received_from("203.0.113.9", 61000)) == (
        "SIP/2.0/UDP 10.0.0.5:5060;rport=61000;branch=z9hG4bKc;received=203.0.113.9")
    v6 = parse_via("SIP/2.0/UDP [2001:db8::9];rport;branch=z9hG4bKd")
    stamped = v6.received_from("2001:db8:0::9", 5062)
    assert (stamped.rport, stamped.received) == (5062, "2001:db8:0::9")


def test_name_addr_round_trips() -> None:
    value = parse_name_addr('"A \\"quoted\\" name" <sip:a@example.com;transport=tcp>;tag=x;expires=60;q=0.5',
                            "Contact")
    assert value.display == 'A "quoted" name' and value.expires == 60 and value.q == 0.5
    assert isinstance(value.uri, SipUri) and value.uri.transport == "tcp"
    assert parse_name_addr(str(value), "Contact") == value
    bare = parse_name_addr("sip:b@example.com;tag=1", "To")
    assert bare.tag == "1" and isinstance(bare.uri, SipUri) and not bare.uri.params
    assert str(bare.with_param("tag", "2")) == "<sip:b@example.com>;tag=2"
    assert NameAddr(parse_uri("tel:+1555")).tag is None


@pytest.mark.parametrize("text", [
    "sip:alice@atlanta.com",
    "sips:alice:secretword@atlanta.com;transport=tcp",
    "sip:+1-212-555-1212:1234@gateway.com;user=phone",
    "sip:alice@192.0.2.4:5061",
    "sip:[2001:db8::10]:5070;maddr=[2001:db8::1]",
    "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
    "sip:alice;day=tuesday@atlanta.com",
    "sip:user:@host.example.",
    "sip:host;lr;x=1",
])
def test_uris_round_trip(text: str) -> None:
    uri = parse_sip_uri(text)
    assert str(uri) == text
    assert parse_sip_uri(str(uri)) == uri


def test_uri_parts() -> None:
    uri = parse_sip_uri("SIPS:alice:pw@[2001:DB8::10]:5071;transport=TLS;lr?subject=x&h=")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips", "alice", "pw", "[2001:DB8::10]", 5071)
    assert uri.transport == "tls" and uri.loose_route and uri.headers == (("subject", "x"), ("h", ""))


@pytest.mark.parametrize(("a", "b"), [  # RFC 3261 §19.1.4, equivalent
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
     "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
    ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
    ("sip:bob@[2001:db8::1]", "sip:bob@[2001:DB8:0::1]"),
])
def test_equivalent_uris(a: str, b: str) -> None:
    assert parse_sip_uri(a) == parse_sip_uri(b) and parse_sip_uri(b) == parse_sip_uri(a)
    assert hash(parse_sip_uri(a)) == hash(parse_sip_uri(b))


@pytest.mark.parametrize(("a", "b"), [  # RFC 3261 §19.1.4, not equivalent
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sips:bob@biloxi.com"),
    ("sip:bob@biloxi.com;transport=udp", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;user=phone"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;maddr=192.0.2.1"),
    ("sip:bob:pw@biloxi.com", "sip:bob@biloxi.com"),
])
def test_different_uris(a: str, b: str) -> None:
    assert parse_sip_uri(a) != parse_sip_uri(b) and parse_sip_uri(b) != parse_sip_uri(a)


# -- limits -----------------------------------------------------------------------------


def test_a_header_section_over_the_limit_is_513() -> None:
    limits = SipLimits(max_header_bytes=600, max_headers=10, max_body_bytes=100)
    big = refused(message(extra=("X-Big: " + "x" * 600,)), limits=limits)
    assert (big.status, big.reason) == (513, "Message Too Large")
    many = refused(message(extra=tuple(f"X-{i}: {i}" for i in range(5))), limits=limits)
    assert (many.status, many.reason) == (513, "Message Too Large")
    assert error_response(many) is not None  # answered: the fields were read
    body = refused(message(body=b"x" * 101), limits=limits)
    assert (body.status, body.reason) == (413, "Request Entity Too Large")
    assert parse_message(message(body=b"x" * 100), limits=limits).body == b"x" * 100


def test_limits_come_from_the_settings() -> None:
    assert SipLimits.from_settings(ServerSettings.from_store({})) == SipLimits(16384, 100, 65536)
    stored = {"SIPMaxHeaderSize": "4K", "SIPMaxHeaders": "20", "SIPMaxBodySize": "1M"}
    assert SipLimits.from_settings(ServerSettings.from_store(stored)) == SipLimits(4096, 20, 1048576)
    for name, value in [("SIPMaxHeaderSize", "unlimited"), ("SIPMaxBodySize", "0"),
                        ("SIPMaxHeaders", "0"), ("SIPMaxHeaders", "many")]:
        with pytest.raises(SettingError):
            validate(name, value)


def test_the_sip_limits_are_administered_with_the_cli(tmp_path: Path) -> None:
    """The settings table is the CLI's: shown with their defaults, changed,
    and an unbounded or zero limit refused with one line."""
    wp = Waypost(tmp_path / "var")
    wp("init", "--domain", "sip.test")
    shown = wp("settings", "show").stdout
    assert all(name in shown for name in ("SIPMaxHeaderSize", "SIPMaxHeaders", "SIPMaxBodySize"))
    assert wp("settings", "show", "SIPMaxBodySize").stdout.strip() == "64K"
    wp("settings", "set", "SIPMaxHeaderSize", "8K")
    assert wp("settings", "show", "sipmaxheadersize").stdout.strip() == "8K"
    bad = wp("settings", "set", "SIPMaxBodySize", "unlimited", check=1)
    assert bad.stderr.startswith("error: SIPMaxBodySize")
    assert wp("settings", "show", "SIPMaxBodySize").stdout.strip() == "64K"


# -- streams ------------------------------------------------------------------------------


def drain(framer: StreamFramer) -> list[object]:
    """Every event the framer has now: messages as bytes, errors as tuples."""
    events: list[object] = []
    for _ in range(1000):
        try:
            item = framer.next()
        except SipError as exc:
            events.append((exc.status, exc.reason, exc.fatal))
            if exc.fatal:
                break
            continue
        if item is None:
            break
        events.append(item if isinstance(item, KeepAlive) else item.to_bytes())
    return events


def frame(chunks: list[bytes], limits: SipLimits | None = None) -> list[object]:
    framer = StreamFramer(limits)
    events: list[object] = []
    for chunk in chunks:
        framer.feed(chunk)
        events += drain(framer)
        if events and isinstance(events[-1], tuple) and events[-1][2]:
            break
    return events


STREAM = (b"\r\n\r\n" + message(body=b"v=0\r\n") + b"\r\n" + TORTUOUS
          + message(drop=("To",)) + b"\r\n\r\n"
          + message("SIP/2.0 180 Ringing", body=b"") + message(Max_Forwards="x"))


def test_a_stream_gives_messages_keep_alives_and_errors() -> None:
    events = frame([STREAM])
    assert events[0] is PING and events[2] is PONG and events[5] is PING
    assert isinstance(events[1], bytes) and events[1].endswith(b"\r\n\r\nv=0\r\n")
    assert events[3] == request(TORTUOUS).to_bytes()
    assert events[4] == (400, "Missing To header field", False)
    assert isinstance(events[6], bytes) and events[6].startswith(b"SIP/2.0 180 Ringing\r\n")
    assert events[7] == (400, "Malformed Max-Forwards header field", False)
    assert len(events) == 8
    assert PING.answer == b"\r\n" and PONG.answer == b""


def test_a_stream_cut_at_every_byte_boundary_frames_the_same() -> None:
    whole = frame([STREAM])
    for at in range(len(STREAM) + 1):
        assert frame([STREAM[:at], STREAM[at:]]) == whole, at
    assert frame([STREAM[i : i + 1] for i in range(len(STREAM))]) == whole


def test_a_stream_needs_content_length() -> None:
    """§18.3: without it the framing is lost; the request can still be answered."""
    events = frame([message(length=None) + message()])
    assert events == [(400, "Missing Content-Length header field", True)]
    framer = StreamFramer()
    framer.feed(message(length=None))
    with pytest.raises(SipError) as info:
        framer.next()
    answer = error_response(info.value)
    assert answer is not None and answer.status == 400
    with pytest.raises(SipError):  # stays broken
        framer.next()


def test_stream_limits_are_fatal() -> None:
    limits = SipLimits(max_header_bytes=1000, max_headers=50, max_body_bytes=100)
    assert frame([b"INVITE sip:a@b SIP/2.0\r\nX: " + b"x" * 1200], limits) == [
        (513, "Message Too Large", True)]
    assert frame([message(body=b"x" * 101)], limits) == [(413, "Request Entity Too Large", True)]
    assert frame([message(body=b"x" * 100)], limits) == [parse_message(message(body=b"x" * 100)).to_bytes()]
    assert frame([b"OPTIONS sip:a@b SIP/2.0\r\nTo: B\xf6b\r\n\r\n"]) == [(400, "Header section not UTF-8", True)]
    assert frame([message("SIP/2.0 200 OK", body=b"x" * 101)], limits) == [(None, "Request Entity Too Large", True)]


def test_a_response_on_a_stream_with_a_lying_length_breaks_it() -> None:
    events = frame([message("SIP/2.0 200 OK", length=None, extra=("Content-Length: x",))])
    assert events == [(None, "Malformed Content-Length header field", True)]


# -- building messages -------------------------------------------------------------------


def test_serialising_writes_crlf_and_the_true_content_length() -> None:
    msg = request(message(body=b"v=0\r\n", extra=("Content-Type: application/sdp",)))
    msg.body = b"v=0\r\no=changed\r\n"
    out = bytes(msg)
    assert out.endswith(b"Content-Type: application/sdp\r\nContent-Length: 16\r\n\r\nv=0\r\no=changed\r\n")
    assert b"\n" not in out.replace(b"\r\n", b"")
    assert parse_message(out) == msg
    built = SipRequest("OPTIONS", parse_uri("sip:example.com"), Headers(MANDATORY.items()))
    assert built.to_bytes().startswith(b"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP")
    with pytest.raises(ValueError):  # no injection through the start line
        SipResponse(200, "OK\r\nVia: evil", Headers()).to_bytes()


def test_response_for_copies_what_8_2_6_says() -> None:
    req = request(message(extra=("Timestamp: 54", "Record-Route: <sip:p.example.com;lr>")))
    trying = response_for(req, 100, "Trying")
    assert trying.headers.get("To") == MANDATORY["To"]  # no tag in a 100
    assert trying.headers.get("Timestamp") == "54"
    ok = response_for(req, 200, "OK", to_tag="abc")
    assert [n for n, _ in ok.headers] == ["Via", "From", "To", "Call-ID", "CSeq"]
    assert ok.to.tag == "abc" and ok.from_.tag == "1928301774"
    assert ok.cseq.number == 314159 and ok.call_id == MANDATORY["Call-ID"]
    assert parse_message(ok.to_bytes()) == ok
    tagged = request(message(To="<sip:bob@example.com>;tag=keep"))
    assert response_for(tagged, 486, "Busy Here", to_tag="new").to.tag == "keep"
    assert response_for(req, 404, "Not Found").to.tag != response_for(req, 404, "Not Found").to.tag


def test_branches_and_tags_are_fresh() -> None:
    branches = {new_branch() for _ in range(100)}
    assert len(branches) == 100 and all(b.startswith(MAGIC_COOKIE) for b in branches)
    assert all(parse_via(f"SIP/2.0/UDP h;branch={b}").branch == b for b in branches)
    tags = {new_tag() for _ in range(100)}
    assert len(tags) == 100 and all(len(t) >= 8 for t in tags)


# -- the module stays pure -----------------------------------------------------------------

WIRE_MODULES = ("wire", "headers", "uri", "syntax")  # transaction.py and session.py may do I/O
PURE = {"__future__", "copy", "dataclasses", "enum", "ipaddress", "re", "secrets", "typing",
        "collections.abc", "urllib.parse", "functools"}


def test_the_sip_wire_modules_import_no_io() -> None:
    """No sockets, asyncio, files, services or storage: only these standard
    modules and each other (settings only for type checking)."""
    folder = Path(sys.modules["waypost.protocols.sip.wire"].__file__ or "").parent
    for path in (folder / f"{name}.py" for name in WIRE_MODULES):
        tree = ast.parse(path.read_text())
        type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                     and "TYPE_CHECKING" in ast.unparse(node.test)
                     for stmt in node.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name in PURE or name.removeprefix("waypost.protocols.sip.") in WIRE_MODULES, (
                    path.name, name)


def test_messages_compare_by_their_bytes() -> None:
    a, b = parse_message(message()), parse_message(message())
    assert a == b and isinstance(a, SipMessage)
    b.headers.add("X-More", "1")
    assert a != b
    c = a.copy()
    assert c == a and type(c) is type(a)
    c.headers.add("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKfork", first=True)
    assert len(c.vias) == 2 and len(a.vias) == 1
