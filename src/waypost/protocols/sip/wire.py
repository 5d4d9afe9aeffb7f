"""SIP messages on the wire (RFC 3261 §7, §18.3, §20), pure: no sockets,
no clocks, no storage, no asyncio, so the transports, the transaction layer
and the fuzzers share one parser.

* :func:`parse_message` reads one UDP datagram; :class:`StreamFramer`
  cuts messages out of a TCP/TLS byte stream.
* Bad input raises :class:`SipError`: the status and reason to answer with,
  or ``drop`` (a garbled response, §18.1.2; a datagram that is not a
  request). Its ``headers`` hold what could be read, so a 400 can still
  carry the request's Via, From, To, Call-ID and CSeq
  (:func:`error_response`); :func:`response_for` answers a good request.

Choices where RFC 3261 leaves one:

* Strict framing: header lines end in CRLF, and a bare CR or LF in the
  header section is a 400 (§7; a lenient LF reader and a strict one would
  frame a stream differently). Empty lines before a start line are
  skipped (§7.5); on a stream they are RFC 5626 §3.5.1 keep-alives
  (:data:`PING` for CRLFCRLF, :data:`PONG` for one CRLF), reported so the
  session can answer a ping with a pong.
* The request line is exactly ``Method SP Request-URI SP SIP-Version``:
  extra, trailing or embedded spaces and ``<...>`` around the URI are a 400
  (RFC 4475 §3.1.2.7-3.1.2.10, which allows either reading); ``SIP/x.y``
  other than 2.0 is ``505 Version Not Supported`` (§21.5.6); a Request-URI
  with ``?headers`` is a 400 (§19.1.1, RFC 4475 §3.1.2.11).
* Header sections must be UTF-8 without control characters but HTAB
  (§7.3.1 TEXT-UTF8), otherwise 400; also inside a quoted-pair, which RFC
  4475 §3.1.1.2 would allow (a raw BEL or NUL in a display name): no phone
  needs one, and refusing them keeps logs and the CLI clean.
* Mandatory headers (§8.1.1): Via, To, From, Call-ID, CSeq and, in a
  request, Max-Forwards; each of the single ones exactly once (RFC 4475
  §3.3.8); a CSeq method differing from the request's is a 400 (§8.2.2.3
  allows no other reading), also for unknown methods, where RFC 4475
  §3.1.2.18 would prefer 501: this layer cannot know which methods exist.
  Responses missing any of them, or otherwise malformed, are dropped.
* ``Content-Length`` is the framing, not a header the message keeps: the
  parser takes it off (on a datagram it is optional, bytes beyond it are
  discarded, and a value beyond the datagram is a 400, §18.3), and
  :meth:`SipMessage.to_bytes` writes the body's true length last. So a
  proxy that changes a body can never forward a stale length.
* Limits (:class:`SipLimits`): a header section too large or with too
  many fields is ``513 Message Too Large``; a body too large is ``413
  Request Entity Too Large`` (§21.4.11, §21.5.7). On a stream both lose
  the framing (``fatal``), as does a missing or unreadable Content-Length.
* Typed views (Via, To, From, CSeq, Contact, Max-Forwards, Expires) are
  read on demand from the header fields, so a proxy edits the fields and
  never a stale copy; they raise :class:`SipError` (400). Scalars beyond
  their grammar's range (Max-Forwards over 255, CSeq, Expires and
  ``expires`` from 2**32) are a 400, the stricter reading RFC 4475
  §3.1.2.4 allows, rather than a silent default.
"""

from __future__ import annotations

import copy
import enum
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn, Self

from waypost.protocols.sip.headers import (
    Contacts,
    CSeq,
    Headers,
    NameAddr,
    Via,
    parse_call_id,
    parse_contacts,
    parse_cseq,
    parse_delta,
    parse_name_addr,
    parse_via,
)
from waypost.protocols.sip.syntax import TOKEN, SipError, bad
from waypost.protocols.sip.uri import SipUri, Uri, parse_uri

if TYPE_CHECKING:
    from waypost.settings import ServerSettings

VERSION = "SIP/2.0"
MAGIC_COOKIE = "z9hG4bK"
"""Start of every RFC 3261 branch parameter (§8.1.1.7)."""
CRLF = b"\r\n"

_VERSION = re.compile(r"SIP/([0-9]+)\.([0-9]+)", re.IGNORECASE)
_STATUS_LINE = re.compile(r"(SIP/[0-9]+\.[0-9]+) ([0-9]{3})(?: (.*))?", re.IGNORECASE | re.DOTALL)
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class SipLimits:
    """Sizes a peer may not exceed (the ``SIPMax...`` settings, whose
    defaults these are: a SIP header section rarely passes 2K, an SDP body
    4K)."""

    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    max_body_bytes: int = 64 * 1024

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> SipLimits:
        return cls(
            # the settings refuse "unlimited" and 0
            max_header_bytes=settings.size("SIPMaxHeaderSize") or 1,
            max_headers=settings.number("SIPMaxHeaders"),
            max_body_bytes=settings.size("SIPMaxBodySize") or 1,
        )


# --------------------------------------------------------------------------
# Messages


class SipMessage:
    """What requests and responses share: header fields, body, typed views.
    Two messages are equal when they serialise to the same bytes."""

    headers: Headers
    body: bytes

    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The message with CRLF line ends and its true Content-Length."""
        start = self.start_line()
        if "\r" in start or "\n" in start:  # header values are checked by Headers.add
            raise ValueError(f"not a SIP start line: {start!r}")
        lines = [start, *(f"{n}: {v}" for n, v in self.headers)]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def copy(self) -> Self:
        """A copy whose header fields change apart (a proxy forks one per branch)."""
        new = copy.copy(self)
        new.headers = self.headers.copy()
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipMessage):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]

    # -- typed views --------------------------------------------------------

    def single(self, name: str) -> str:
        """The one field of a header that must appear exactly once."""
        found = self.headers.fields(name)
        if not found:
            raise bad(f"Missing {name} header field")
        if len(found) > 1:
            raise bad(f"More than one {name} header field")
        return found[0]

    @property
    def vias(self) -> list[Via]:
        values = self.headers.values("Via")
        if not values:
            raise bad("Missing Via header field")
        return [parse_via(v) for v in values]

    @property
    def top_via(self) -> Via:
        values = self.headers.values("Via")
        if not values:
            raise bad("Missing Via header field")
        return parse_via(values[0])

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self.single("From"), "From header field")

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self.single("To"), "To header field")

    @property
    def call_id(self) -> str:
        return parse_call_id(self.single("Call-ID"))

    @property
    def cseq(self) -> CSeq:
        return parse_cseq(self.single("CSeq"))

    @property
    def max_forwards(self) -> int | None:
        """§20.22: 0 to 255 (RFC 4475 §3.1.2.4: more is a 400)."""
        if "Max-Forwards" not in self.headers:
            return None
        return parse_delta(self.single("Max-Forwards"), "Max-Forwards header field", 255)

    @property
    def expires(self) -> int | None:
        """§20.19: delta-seconds below 2**32."""
        if "Expires" not in self.headers:
            return None
        return parse_delta(self.single("Expires"), "Expires header field")

    @property
    def contacts(self) -> Contacts:
        return parse_contacts(self.headers.values("Contact"))

    def name_addrs(self, name: str) -> list[NameAddr]:
        """A list header of name-addrs (Route, Record-Route, Path)."""
        return [parse_name_addr(v, f"{name} header field") for v in self.headers.values(name)]


@dataclass(eq=False)
class SipRequest(SipMessage):
    method: str
    uri: Uri
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {VERSION}"


@dataclass(eq=False)
class SipResponse(SipMessage):
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def start_line(self) -> str:
        return f"{VERSION} {self.status} {self.reason}"


class KeepAlive(enum.Enum):
    """RFC 5626 §3.5.1 keep-alives between messages on a stream."""

    PING = "ping"  # CRLFCRLF from a client: answer with a CRLF
    PONG = "pong"  # a single CRLF

    @property
    def answer(self) -> bytes:
        """What to send back: a CRLF for a ping, nothing for a pong."""
        return CRLF if self is KeepAlive.PING else b""


PING = KeepAlive.PING
PONG = KeepAlive.PONG


# --------------------------------------------------------------------------
# Parsing


@dataclass(slots=True)
class _Head:
    """A header section read as far as it goes: the message without its
    body, the first error met, and the Content-Length (None when absent)."""

    response: bool
    message: SipMessage | None
    headers: Headers | None
    error: SipError | None
    length: int | None


def _read_head(data: bytes, limits: SipLimits) -> _Head:
    """Start line and header fields of ``data`` (which ends in CRLFCRLF)."""
    response = data[:4].upper() == b"SIP/"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return _Head(response, None, None, _fail(bad("Header section not UTF-8"), response), None)
    lines = text[:-4].split("\r\n")
    errors: list[SipError] = []
    if len(data) > limits.max_header_bytes:
        errors.append(SipError(513, "Message Too Large"))
    fields: list[tuple[str, str]] = []
    for line in lines[1:]:
        if "\r" in line or "\n" in line:
            errors.append(bad("Bare CR or LF in header section"))
        elif line[:1] in (" ", "\t"):
            if not fields:
                errors.append(bad("Continuation line before the first header field"))
            else:
                name, value = fields[-1]
                fields[-1] = (name, value + " " + line.strip(" \t"))
        else:
            name, colon, value = line.partition(":")
            name = name.rstrip(" \t")
            if not colon or not TOKEN.fullmatch(name):
                errors.append(bad("Malformed header field line"))
            else:
                fields.append((name, value))
    if len(fields) > limits.max_headers:
        errors.append(SipError(513, "Message Too Large"))
    headers = Headers()
    lengths: list[str] = []
    for name, value in fields:
        if _CTL.search(value):
            errors.append(bad(f"Control character in {name[:40]} header field"))
        elif name.lower() in ("content-length", "l"):
            lengths.append(value)
        else:
            headers.add(name, value)
    length: int | None = None
    if len(lengths) > 1:
        errors.append(bad("More than one Content-Length header field"))
        length = -1
    elif lengths:
        try:
            length = parse_delta(lengths[0], "Content-Length header field")
        except SipError as exc:
            errors.append(exc)
            length = -1
    message, start_error = _start(lines[0], headers, response)
    if start_error is not None:
        errors.insert(0, start_error)
    head = _Head(response, message, headers, None, length)
    if errors:
        head.error = _attach(errors[0], head)
    return head


def _attach(error: SipError, head: _Head) -> SipError:
    """``error`` about ``head``'s message: dropped for a response (§18.1.2),
    else carrying the request as far as it was read."""
    if head.response:
        return _fail(error, True)
    error.message, error.headers = head.message, head.headers
    return error


def _fail(error: SipError, response: bool) -> SipError:
    """A response's problems are never answered (§18.1.2)."""
    return SipError(None, error.reason, drop=True) if response else error


def _start(line: str, headers: Headers, response: bool
           ) -> tuple[SipMessage | None, SipError | None]:
    """The message of a start line (§7.1, §7.2) and the line's error; a
    request with a readable method and URI is built even when its version
    is wrong, so the 505 is logged with it."""
    if response:
        match = _STATUS_LINE.fullmatch(line)
        if not match or match.group(1).upper() != VERSION or _CTL.search(match.group(3) or ""):
            return None, bad("Malformed status line")
        status = int(match.group(2))
        if not 100 <= status <= 699:
            return None, bad("Status code out of range")
        return SipResponse(status, match.group(3) or "", headers), None
    parts = line.split(" ")
    if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or not _VERSION.fullmatch(parts[2]):
        return None, bad("Malformed Request-Line")
    method, uri_text, version = parts
    try:
        uri = parse_uri(uri_text, "Request-URI")
    except SipError as exc:
        return None, exc
    if isinstance(uri, SipUri) and uri.headers:  # §19.1.1 table: not in a Request-URI
        return None, bad("Malformed Request-URI (headers)")
    request = SipRequest(method, uri, headers)
    if version.upper() != VERSION:
        return request, SipError(505, "Version Not Supported")
    return request, None


def _check(message: SipMessage) -> None:
    """The headers every request and response must have (§8.1.1, §8.2.2.3)."""
    message.vias  # noqa: B018 (read for its checks)
    message.to  # noqa: B018
    message.from_  # noqa: B018
    message.call_id  # noqa: B018
    cseq = message.cseq
    if isinstance(message, SipRequest):
        if "Max-Forwards" not in message.headers:
            raise bad("Missing Max-Forwards header field")
        message.max_forwards  # noqa: B018
        if cseq.method != message.method:
            raise bad("CSeq method does not match the request method")


def _finish(head: _Head, body: bytes, limits: SipLimits) -> SipMessage:
    """The message of a framed head and body, or its first error."""
    if head.error is not None:
        raise head.error
    assert head.message is not None
    if len(body) > limits.max_body_bytes:
        raise _attach(SipError(413, "Request Entity Too Large"), head)
    head.message.body = body
    try:
        _check(head.message)
    except SipError as exc:
        raise _attach(exc, head) from None
    return head.message


def _skip_empty_lines(data: bytes) -> bytes:
    while data.startswith(CRLF):
        data = data[2:]
    return data


def parse_message(data: bytes, *, limits: SipLimits | None = None) -> SipMessage:
    """The message in one datagram (§18.3: Content-Length optional, bytes
    beyond it discarded). A datagram of empty lines only (a keep-alive) or
    without a header section is dropped."""
    limits = limits or SipLimits()
    data = _skip_empty_lines(data)
    if not data:
        raise SipError(None, "Keep-alive", drop=True)
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise SipError(None, "Not a SIP message (no header section)", drop=True)
    head = _read_head(data[: end + 4], limits)
    rest = data[end + 4 :]
    if head.error is None and head.length is not None and head.length > len(rest):
        head.error = _attach(bad("Content-Length larger than the message"), head)
    body = rest if head.length is None or head.length < 0 else rest[: head.length]
    return _finish(head, body, limits)


class StreamFramer:
    """Messages out of a TCP/TLS stream, however it is cut (§18.3: each
    message must carry a Content-Length). :meth:`feed` bytes, then call
    :meth:`next` until it returns None. A non-``fatal`` :class:`SipError`
    concerns one message and the stream goes on; after a ``fatal`` one the
    framer raises it again: close the connection."""

    def __init__(self, limits: SipLimits | None = None) -> None:
        self.limits = limits or SipLimits()
        self._buffer = bytearray()
        self._scanned = 0  # no CRLFCRLF starts before this offset
        self._head: _Head | None = None
        self._body_at = 0
        self._broken: SipError | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def next(self) -> SipMessage | KeepAlive | None:
        """The next message or keep-alive, None when more bytes are needed."""
        if self._broken is not None:
            raise self._broken
        buf = self._buffer
        if self._head is None:
            if buf.startswith(CRLF):
                if buf.startswith(b"\r\n\r\n"):
                    self._consume(4)
                    return PING
                if len(buf) >= 4 or (len(buf) == 3 and buf[2:3] != b"\r"):
                    self._consume(2)
                    return PONG
                return None
            end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
            if end < 0:
                self._scanned = len(buf)
                if len(buf) > self.limits.max_header_bytes:
                    self._break(SipError(513, "Message Too Large"), None)
                return None
            if end + 4 > self.limits.max_header_bytes:
                self._break(SipError(513, "Message Too Large"), None)
            head = _read_head(bytes(buf[: end + 4]), self.limits)
            if head.length is None:  # unreadable (not UTF-8), or no Content-Length
                unread = head.error if head.headers is None else None
                self._break(unread or bad("Missing Content-Length header field"), head)
            if head.length is not None and head.length < 0:
                self._break(head.error or bad("Malformed Content-Length"), head)
            if (head.length or 0) > self.limits.max_body_bytes:
                self._break(SipError(413, "Request Entity Too Large"), head)
            self._head, self._body_at = head, end + 4
        head = self._head
        assert head is not None and head.length is not None
        if len(buf) < self._body_at + head.length:
            return None
        body = bytes(buf[self._body_at : self._body_at + head.length])
        self._consume(self._body_at + head.length)
        self._head = None
        return _finish(head, body, self.limits)

    def _consume(self, count: int) -> None:
        del self._buffer[:count]
        self._scanned = 0

    def _break(self, error: SipError, head: _Head | None) -> NoReturn:
        """Framing lost: ``error`` now and for every later call."""
        if head is not None:
            error = _attach(error, head)
        error.fatal = True
        self._broken = error
        raise error


# --------------------------------------------------------------------------
# Building responses and identifiers


def new_branch() -> str:
    """A branch parameter unique in space and time (§8.1.1.7)."""
    return MAGIC_COOKIE + secrets.token_hex(12)


def new_tag() -> str:
    """A From/To tag: 32 random bits at least (§19.3); we use 64."""
    return secrets.token_hex(8)


def response_for(request: SipMessage, status: int, reason: str, *,
                 to_tag: str | None = None) -> SipResponse:
    """A response to ``request`` per §8.2.6: Via fields, From, Call-ID and
    CSeq copied; To copied, with a tag added when it has none (except to a
    100, §8.2.6.2: ``to_tag``, or a new one); Timestamp copied into a 100
    (§8.2.6.1)."""
    headers = Headers()
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in request.headers.fields(name):
            if name == "To" and status > 100:
                value = _tagged(value, to_tag)
            headers.add(name, value)
    if status == 100:
        for value in request.headers.fields("Timestamp"):
            headers.add("Timestamp", value)
    return SipResponse(status, reason, headers)


def error_response(error: SipError) -> SipResponse | None:
    """The answer to a bad request (:func:`response_for` on what was read
    of it), or None when nothing may or can be sent: ``drop``, or no Via to
    send it along (§18.2.2)."""
    if error.drop or error.status is None or error.headers is None:
        return None
    if "Via" not in error.headers:
        return None
    partial = SipResponse(0, "", error.headers)
    return response_for(partial, error.status, error.reason)


def _tagged(to_value: str, tag: str | None) -> str:
    try:
        if parse_name_addr(to_value, "To header field").tag is not None:
            return to_value
    except SipError:
        return to_value
    return f"{to_value};tag={tag or new_tag()}"
