"""SMTP wire format, pure: no sockets, no clocks, no storage.

Everything here works on bytes/str handed in by a caller, so the server
session, the outbound client and fuzzers all share one parser. Errors a
client must see are raised as :class:`CommandError` carrying the exact
:class:`Reply` to send (RFC 5321 / 3463 codes).

Covered: command lines (with the 1000-octet limit), ``MAIL FROM`` /
``RCPT TO`` paths and ESMTP parameters (SIZE, BODY, SMTPUTF8, RET, ENVID,
AUTH, NOTIFY, ORCPT), xtext (RFC 3461), reply formatting and parsing, the
DATA body reader (end of data only at ``CRLF.CRLF``: SMTP smuggling) and
client-side dot-stuffing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from waypost.protocols import lines
from waypost.services.delivery import transport

MAX_LINE = 1000
"""Longest command or text line in octets, CRLF included (RFC 5321 §4.5.3.1.4/6)."""

CRLF = b"\r\n"
DATA_END = b".\r\n"
"""What a client sends after the dot-stuffed body (which ends in CRLF)."""


# --------------------------------------------------------------------------
# Replies


_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


@dataclass(frozen=True, slots=True)
class Reply(transport.Reply):
    """One SMTP reply. ``text`` may hold several lines separated by ``\\n``.

    ``enhanced`` is the RFC 3463 status code (``"2.1.0"``) or ``""``; when
    set it is repeated on every line, as RFC 2034 asks. The fields and their
    classification (positive, transient, ...) are the relay's plain
    :class:`~waypost.services.delivery.transport.Reply`; this class adds the
    checks and the wire form, so a reply the client reads is what the relay
    is given.
    """

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"reply code out of range: {self.code}")
        if self.enhanced and not _ENHANCED.fullmatch(self.enhanced):
            raise ValueError(f"bad enhanced status code: {self.enhanced!r}")

    def to_bytes(self) -> bytes:
        lines = self.lines
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            rest = f"{self.enhanced} {line}" if self.enhanced else line
            rest = rest.rstrip(" ")
            out.append(f"{self.code}{sep}{rest}\r\n" if rest or sep == "-" else f"{self.code}\r\n")
        return "".join(out).encode("utf-8")

    __bytes__ = to_bytes

    def __str__(self) -> str:
        head = f"{self.code} {self.enhanced}".rstrip()
        return f"{head} {' / '.join(self.lines)}".rstrip()


class ReplySyntaxError(ValueError):
    """A peer's reply line is not ``NNN[ -]text``."""


def parse_reply_line(line: bytes) -> tuple[int, bool, str]:
    """``b"250-SIZE 100\\r\\n"`` -> ``(250, False, "SIZE 100")``; the bool is *last line*."""
    text = line.rstrip(b"\r\n").decode("utf-8", "replace")
    if len(text) < 3 or not text[:3].isdigit() or not text[:3].isascii():
        raise ReplySyntaxError(f"bad reply line {line[:80]!r}")
    code = int(text[:3])
    if not 200 <= code <= 599:
        raise ReplySyntaxError(f"reply code out of range in {line[:80]!r}")
    if len(text) == 3:
        return code, True, ""
    if text[3] not in " -":
        raise ReplySyntaxError(f"bad reply line {line[:80]!r}")
    return code, text[3] == " ", text[4:]


def make_reply(code: int, texts: Sequence[str]) -> Reply:
    """Build a :class:`Reply` from parsed lines, lifting a leading enhanced code."""
    m = _ENHANCED.match(texts[0]) if texts else None
    enhanced = ""
    if m and m.group(1) == str(code)[0]:
        enhanced = f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
        texts = [t[len(enhanced) :].lstrip(" ") if t.startswith(enhanced) else t for t in texts]
    return Reply(code, enhanced, "\n".join(texts))


def parse_reply(lines: Sequence[bytes]) -> Reply:
    """Join the raw lines of one (possibly multi-line) reply."""
    if not lines:
        raise ReplySyntaxError("empty reply")
    parsed = [parse_reply_line(x) for x in lines]
    code = parsed[0][0]
    if any(c != code for c, _, _ in parsed):
        raise ReplySyntaxError("reply code changes inside a multi-line reply")
    return make_reply(code, [t for _, _, t in parsed])


class CommandError(Exception):
    """A client command is refused; ``reply`` is what the server must answer."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _err(code: int, enhanced: str, text: str) -> CommandError:
    return CommandError(Reply(code, enhanced, text))


LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")


# --------------------------------------------------------------------------
# Command lines


@dataclass(frozen=True, slots=True)
class Command:
    """``verb`` upper-cased; ``arg`` is the rest after one space, right-stripped."""

    verb: str
    arg: str = ""


_VERB = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def parse_command(line: bytes, limit: int = MAX_LINE) -> Command:
    """Split one command line (terminator included or not) into verb and argument.

    Bare-LF terminated lines are accepted for commands (many clients send
    them); a CR or other control character inside the line is a syntax error.
    """
    if len(line) > limit:
        raise CommandError(LINE_TOO_LONG)
    if line.endswith(b"\r\n"):
        line = line[:-2]
    elif line.endswith(b"\n"):
        line = line[:-1]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise _err(500, "5.5.2", "Invalid characters in command") from None
    if _CONTROL.search(text):
        raise _err(500, "5.5.2", "Invalid characters in command")
    verb, _, arg = text.partition(" ")
    if not _VERB.fullmatch(verb):
        raise _err(500, "5.5.2", "Syntax error, command unrecognized")
    return Command(verb.upper(), arg.rstrip())


class LineBuffer(lines.LineBuffer):
    """Command lines between DATA transactions; the bytes a
    :class:`DataReader` leaves over (pipelined commands) are fed back in
    here. An over-long line raises :data:`LINE_TOO_LONG` once it has ended."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        super().__init__(limit)

    def next_line(self, limit: int | None = None) -> bytes | None:  # type: ignore[override]
        line = super().next_line(limit)
        if line is self.TOO_LONG:
            raise CommandError(LINE_TOO_LONG)
        return line  # type: ignore[return-value]


# --------------------------------------------------------------------------
# xtext (RFC 3461 §4)


def xtext_encode(value: str) -> str:
    """Encode as xtext: ``!``..``~`` except ``+`` and ``=`` as is, else ``+XX`` (UTF-8)."""
    out = []
    for b in value.encode("utf-8"):
        if 33 <= b <= 126 and b not in (0x2B, 0x3D):
            out.append(chr(b))
        else:
            out.append(f"+{b:02X}")
    return "".join(out)


_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-Fa-f]{2})*")


def xtext_decode(value: str) -> str:
    """Decode xtext; raises ValueError on malformed input (lower-case hex tolerated)."""
    if not _XTEXT.fullmatch(value):
        raise ValueError(f"malformed xtext: {value!r}")
    out = bytearray()
    i = 0
    while i < len(value):
        if value[i] == "+":
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(value[i]))
            i += 1
    return out.decode("utf-8")


# --------------------------------------------------------------------------
# Paths (RFC 5321 §4.1.2, RFC 6531 for UTF-8)

_U = "\u0080-\U0010ffff"
_ATEXT = rf"A-Za-z0-9!#$%&'*+\-/=?^_`{{|}}~{_U}"
# Lenient dot-string: stray dots ("a..b", "a.") exist in the wild and are harmless.
_DOT_STRING = rf"[{_ATEXT}.]+"
_QUOTED = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_U}]|\\[\x20-\x7e{_U}])*"'
# Lenient labels: "_" appears in real host names (and in "._via").
_LABEL = rf"[A-Za-z0-9_{_U}][A-Za-z0-9_\-{_U}]*"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"
_HOST = rf"(?:{_DOMAIN}|{_LITERAL})"
_PATH = re.compile(
    rf"(?P<route>@{_HOST}(?:,@{_HOST})*:)?"
    # A trailing dot on the domain is tolerated; the Router compares without it.
    rf"(?P<local>{_DOT_STRING}|{_QUOTED})@(?P<domain>{_HOST})\.?"
)
_HOST_RE = re.compile(_LITERAL)


def _literal_ok(lit: str) -> bool:
    inner = lit[1:-1]
    tag, sep, rest = inner.partition(":")
    if not sep:
        try:
            ipaddress.IPv4Address(inner)
        except ValueError:
            return False
        return True
    if tag.lower() == "ipv6":
        try:
            ipaddress.IPv6Address(rest)
        except ValueError:
            return False
        return True
    # General-address-literal: Standardized-tag ":" 1*dcontent
    return bool(re.fullmatch(r"[A-Za-z0-9-]*[A-Za-z0-9]", tag)) and bool(rest)


_LOCAL_ONLY = re.compile(rf"(?:{_DOT_STRING}|{_QUOTED})")


def _check_path(inner: str, *, allow_postmaster: bool) -> bool:
    """``allow_postmaster`` (RCPT): a local part alone is accepted too, as
    CGP does: the Router treats it as a Main Domain address, and relay
    tricks such as bang paths (``host!user``) get the Router's verdict
    (550 5.7.1), not a syntax error."""
    if allow_postmaster and _LOCAL_ONLY.fullmatch(inner):
        return True
    m = _PATH.fullmatch(inner)
    if not m:
        return False
    literals = _HOST_RE.findall(m.group("route") or "")
    if m.group("domain").startswith("["):
        literals.append(m.group("domain"))
    return all(_literal_ok(lit) for lit in literals)


def _split_path(arg: str) -> tuple[str, str] | None:
    """``<inner> rest`` -> (inner, rest); None when there is no well-formed ``<...>``."""
    if not arg.startswith("<"):
        return None
    quoted = escaped = False
    for i in range(1, len(arg)):
        ch = arg[i]
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return arg[1:i], arg[i + 1 :]
    return None


# --------------------------------------------------------------------------
# ESMTP parameters

MAIL_PARAMS = frozenset({"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH"})
RCPT_PARAMS = frozenset({"NOTIFY", "ORCPT"})
NOTIFY_FLAGS = ("SUCCESS", "FAILURE", "DELAY")


def allowed_params(extensions: Collection[str]) -> tuple[frozenset[str], frozenset[str]]:
    """The MAIL and RCPT parameter keywords a listener advertising ``extensions``
    (EHLO keywords such as ``"SIZE 1000"``, ``"8BITMIME"``, ``"DSN"``) must accept."""
    ext = {e.split(" ")[0].upper() for e in extensions}
    mail = {"SIZE", "SMTPUTF8", "AUTH"} & ext
    if "8BITMIME" in ext:
        mail.add("BODY")
    if "DSN" in ext:
        mail |= {"RET", "ENVID"}
    rcpt = {"NOTIFY", "ORCPT"} if "DSN" in ext else set()
    return frozenset(mail), frozenset(rcpt)


_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_VALUE = re.compile(rf"[\x21-\x3c\x3e-\x7e{_U}]+")


def _parse_params(text: str, allowed: Collection[str]) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split(" "):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not _KEYWORD.fullmatch(key) or (eq and not _VALUE.fullmatch(value)):
            raise _err(501, "5.5.4", f"Syntax error in parameter {item[:40]!r}")
        key = key.upper()
        if key not in allowed:
            raise _err(555, "5.5.4", f"Unsupported parameter {key}")
        if key in params:
            raise _err(501, "5.5.4", f"Duplicate parameter {key}")
        params[key] = value if eq else None
    return params


def _need_value(key: str, value: str | None) -> str:
    if value is None:
        raise _err(501, "5.5.4", f"{key} needs a value")
    return value


@dataclass(frozen=True, slots=True)
class MailParams:
    """ESMTP parameters of ``MAIL FROM``; xtext values already decoded."""

    size: int | None = None
    body: str | None = None  # "7BIT" | "8BITMIME"
    smtputf8: bool = False
    ret: str | None = None  # "FULL" | "HDRS"
    envid: str | None = None
    auth: str | None = None  # a mailbox, or "<>"

    def to_args(self, extensions: Collection[str], size: int | None = None) -> list[str]:
        """The parameters to send to a server offering ``extensions`` (upper-case
        EHLO keywords). ``size`` overrides ``self.size`` (the real body size)."""
        ext = {e.upper() for e in extensions}
        args: list[str] = []
        size = self.size if size is None else size
        if size is not None and "SIZE" in ext:
            args.append(f"SIZE={size}")
        if self.body and "8BITMIME" in ext:
            args.append(f"BODY={self.body}")
        if self.smtputf8 and "SMTPUTF8" in ext:
            args.append("SMTPUTF8")
        if "DSN" in ext:
            if self.ret:
                args.append(f"RET={self.ret}")
            if self.envid is not None:
                args.append(f"ENVID={xtext_encode(self.envid)}")
        if self.auth is not None and "AUTH" in ext:
            args.append("AUTH=<>" if self.auth == "<>" else f"AUTH={xtext_encode(self.auth)}")
        return args


@dataclass(frozen=True, slots=True)
class RcptParams:
    """ESMTP parameters of ``RCPT TO`` (RFC 3461 DSN)."""

    notify: tuple[str, ...] | None = None  # ("NEVER",) or a subset of NOTIFY_FLAGS
    orcpt: tuple[str, str] | None = None  # (addr-type, address); rfc822 xtext decoded

    def to_args(self, extensions: Collection[str]) -> list[str]:
        if "DSN" not in {e.upper() for e in extensions}:
            return []
        args: list[str] = []
        if self.notify:
            args.append("NOTIFY=" + ",".join(self.notify))
        if self.orcpt:
            kind, addr = self.orcpt
            value = xtext_encode(addr) if kind.lower() == "rfc822" else addr
            args.append(f"ORCPT={kind};{value}")
        return args


@dataclass(frozen=True, slots=True)
class MailFrom:
    """``address`` is the reverse-path as written inside ``<>`` ("" for the null path)."""

    address: str
    params: MailParams = field(default_factory=MailParams)


@dataclass(frozen=True, slots=True)
class RcptTo:
    """``address`` is the forward-path as written inside ``<>``, source route
    (``@a,@b:user@dom``) and quoting kept for the Router."""

    address: str
    params: RcptParams = field(default_factory=RcptParams)


def _split_verb_arg(arg: str, word: str, usage: str) -> tuple[str, str]:
    head = arg[: len(word)]
    if head.upper() != word:
        raise _err(501, "5.5.4", f"Syntax: {usage}")
    rest = arg[len(word) :].lstrip(" ")  # tolerate "MAIL FROM: <x>"
    split = _split_path(rest)
    if split is None:
        raise _err(501, "5.5.4", f"Syntax: {usage}")
    inner, tail = split
    if tail and not tail.startswith(" "):
        raise _err(501, "5.5.4", f"Syntax: {usage}")
    return inner, tail


def _require_ascii_unless_utf8(address: str, smtputf8: bool, who: str) -> None:
    if not smtputf8 and not address.isascii():
        raise _err(553, "5.6.7", f"Non-ASCII {who} address requires SMTPUTF8")


def parse_mail(arg: str, allowed: Collection[str] = MAIL_PARAMS) -> MailFrom:
    """Parse the argument of ``MAIL`` (``FROM:<path> params``).

    ``allowed`` are the parameter keywords this listener advertises; others
    get ``555 5.5.4``. Size limits are the session's business (552 5.3.4).
    """
    inner, tail = _split_verb_arg(arg, "FROM:", "MAIL FROM:<address>")
    if inner and not _check_path(inner, allow_postmaster=False):
        raise _err(501, "5.1.7", "Bad sender address syntax")
    raw = _parse_params(tail, allowed)
    kw: dict[str, object] = {}
    for key, value in raw.items():
        if key == "SIZE":
            v = _need_value(key, value)
            if not v.isdigit() or not v.isascii() or len(v) > 20:
                raise _err(501, "5.5.4", "Bad SIZE value")
            kw["size"] = int(v)
        elif key == "BODY":
            v = _need_value(key, value).upper()
            if v not in ("7BIT", "8BITMIME"):
                raise _err(501, "5.5.4", "Unsupported BODY type")
            kw["body"] = v
        elif key == "SMTPUTF8":
            if value is not None:
                raise _err(501, "5.5.4", "SMTPUTF8 takes no value")
            kw["smtputf8"] = True
        elif key == "RET":
            v = _need_value(key, value).upper()
            if v not in ("FULL", "HDRS"):
                raise _err(501, "5.5.4", "Bad RET value")
            kw["ret"] = v
        elif key == "ENVID":
            v = _need_value(key, value)
            try:
                envid = xtext_decode(v)
            except (ValueError, UnicodeDecodeError):
                raise _err(501, "5.5.4", "Bad ENVID value") from None
            if len(v) > 100:
                raise _err(501, "5.5.4", "ENVID too long")
            kw["envid"] = envid
        elif key == "AUTH":
            v = _need_value(key, value)
            if v == "<>":
                kw["auth"] = v
            else:
                try:
                    kw["auth"] = xtext_decode(v)
                except (ValueError, UnicodeDecodeError):
                    raise _err(501, "5.5.4", "Bad AUTH value") from None
    params = MailParams(**kw)  # type: ignore[arg-type]
    _require_ascii_unless_utf8(inner, params.smtputf8, "sender")
    return MailFrom(inner, params)


def parse_rcpt(arg: str, smtputf8: bool = False, allowed: Collection[str] = RCPT_PARAMS) -> RcptTo:
    """Parse the argument of ``RCPT`` (``TO:<path> params``).

    ``smtputf8`` is whether the transaction's MAIL carried SMTPUTF8; without
    it a non-ASCII address gets ``553 5.6.7`` (RFC 6531 §3.5).
    """
    inner, tail = _split_verb_arg(arg, "TO:", "RCPT TO:<address>")
    if not _check_path(inner, allow_postmaster=True):
        raise _err(501, "5.1.3", "Bad recipient address syntax")
    raw = _parse_params(tail, allowed)
    notify: tuple[str, ...] | None = None
    orcpt: tuple[str, str] | None = None
    for key, value in raw.items():
        if key == "NOTIFY":
            items = [x.upper() for x in _need_value(key, value).split(",")]
            if items == ["NEVER"]:
                notify = ("NEVER",)
            elif not items or len(set(items)) != len(items) or set(items) - set(NOTIFY_FLAGS):
                raise _err(501, "5.5.4", "Bad NOTIFY value")
            else:
                notify = tuple(f for f in NOTIFY_FLAGS if f in items)
        elif key == "ORCPT":
            kind, semi, addr = _need_value(key, value).partition(";")
            if not semi or not _KEYWORD.fullmatch(kind) or not addr:
                raise _err(501, "5.5.4", "Bad ORCPT value")
            if kind.lower() == "rfc822":
                try:
                    addr = xtext_decode(addr)
                except (ValueError, UnicodeDecodeError):
                    raise _err(501, "5.5.4", "Bad ORCPT value") from None
            orcpt = (kind, addr)
    _require_ascii_unless_utf8(inner, smtputf8, "recipient")
    return RcptTo(inner, RcptParams(notify, orcpt))


def format_path(address: str) -> str:
    """``<address>`` for a MAIL/RCPT command (``<>`` for the null path)."""
    return f"<{address}>"


# --------------------------------------------------------------------------
# DATA


_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


class DataReader:
    """Incremental reader of a DATA body, fed whatever the socket delivers.

    The end of data is recognised **only** as ``CRLF . CRLF`` (or ``. CRLF``
    as the very first line): ``\\n.\\n``, ``\\r.\\r``, ``\\n.\\r\\n`` and
    friends are body content, never a terminator, so a message cannot smuggle
    a second one past us (SMTP smuggling, 2023). Lines are CRLF-delimited;
    a lone CR or LF inside a line is counted in ``bare_cr`` / ``bare_lf``
    and, with ``normalize=True``, stored as CRLF; NUL octets are counted in
    ``nul``. The session decides whether to reject such a message or keep the
    normalised copy.

    Dot-stuffing is undone (a leading ``.`` is dropped from every line).
    ``size`` counts the stored octets even after ``max_size`` is exceeded;
    from then on nothing is stored (``oversized``) but reading continues to
    the terminator so the session can answer 552 in step. ``long_lines``
    counts lines longer than ``max_line`` octets (CRLF included). Bytes after
    the terminator (pipelined commands) are in ``leftover``.

    Memory stays bounded for hostile input: a partial line is flushed once it
    exceeds ``flush_at`` octets. Use :meth:`take` to stream stored data to
    disk instead of keeping the whole message in :attr:`body`.
    """

    def __init__(
        self,
        max_size: int | None = None,
        max_line: int = MAX_LINE,
        normalize: bool = False,
        flush_at: int = 65536,
    ) -> None:
        self.max_size = max_size
        self.max_line = max_line
        self.normalize = normalize
        self.flush_at = max(flush_at, 8)
        self.size = 0
        self.oversized = False
        self.long_lines = 0
        self.bare_lf = 0
        self.bare_cr = 0
        self.nul = 0
        self.done = False
        self.leftover = b""
        self._buf = bytearray()
        self._bol = True  # _buf starts at the beginning of a line
        self._line_len = 0  # octets of the current line already flushed
        self._line_long = False  # the current line was already counted as long
        self._out: list[bytes] = []

    # -- public --------------------------------------------------------

    def feed(self, chunk: bytes) -> bool:
        """Consume ``chunk``; True once the terminator has been seen."""
        if self.done:
            self.leftover += chunk
            return True
        buf = self._buf
        buf += chunk
        if self._bol and buf.startswith(b".\r\n"):
            end, after = 0, 3
        else:
            i = buf.find(b"\r\n.\r\n")
            end, after = (i + 2, i + 5) if i >= 0 else (-1, -1)
        if end >= 0:
            if end:
                self._lines(bytes(buf[:end]))
            self.leftover = bytes(buf[after:])
            buf.clear()
            self.done = True
            return True
        last = buf.rfind(b"\r\n")
        if last >= 0:
            self._lines(bytes(buf[: last + 2]))
            del buf[: last + 2]
        if len(buf) > self.flush_at:
            self._flush_partial()
        return False

    @property
    def body(self) -> bytes:
        """Everything stored and not yet taken (empty once ``oversized``)."""
        return b"".join(self._out)

    def take(self) -> bytes:
        """Return and forget what has been stored so far (for streaming)."""
        data = b"".join(self._out)
        self._out.clear()
        return data

    @property
    def has_bare_newlines(self) -> bool:
        return bool(self.bare_lf or self.bare_cr)

    # -- internals -----------------------------------------------------

    def _lines(self, seg: bytes) -> None:
        """Process complete lines (``seg`` ends with CRLF, holds no terminator)."""
        parts = seg.split(b"\r\n")
        parts.pop()  # after the final CRLF
        limit = self.max_line - 2
        if len(parts[0]) + self._line_len > limit and not self._line_long:
            self.long_lines += 1
        self.long_lines += sum(1 for p in parts[1:] if len(p) > limit)
        self._line_len = 0
        self._line_long = False
        crlf = len(parts)
        lf, cr = seg.count(b"\n") - crlf, seg.count(b"\r") - crlf
        self.bare_lf += lf
        self.bare_cr += cr
        self.nul += seg.count(b"\0")
        if self._bol and seg.startswith(b"."):
            seg = seg[1:]
        seg = seg.replace(b"\r\n.", b"\r\n")
        self._bol = True
        self._emit(seg, bool(lf or cr))

    def _flush_partial(self) -> None:
        """Emit most of an unterminated long line, keeping a trailing CR."""
        buf = self._buf
        keep = 1 if buf.endswith(b"\r") else 0
        piece = bytes(buf[: len(buf) - keep])
        del buf[: len(buf) - keep]
        self._line_len += len(piece)
        if self._line_len + 2 > self.max_line and not self._line_long:
            self._line_long = True
            self.long_lines += 1
        lf, cr = piece.count(b"\n"), piece.count(b"\r")
        self.bare_lf += lf
        self.bare_cr += cr
        self.nul += piece.count(b"\0")
        if self._bol and piece.startswith(b"."):
            piece = piece[1:]
        self._bol = False
        self._emit(piece, bool(lf or cr))

    def _emit(self, data: bytes, bare: bool) -> None:
        if bare and self.normalize:
            data = _BARE.sub(b"\r\n", data)
        self.size += len(data)
        if self.oversized:
            return
        if self.max_size is not None and self.size > self.max_size:
            self.oversized = True
            self._out.clear()
            return
        self._out.append(data)


def dot_stuff(body: bytes) -> bytes:
    """Prepare a body for DATA: CRLF line ends only, leading dots doubled,
    final CRLF ensured. Append :data:`DATA_END` to finish.

    Bare CR/LF are turned into CRLF: a receiver that treats a lone LF as a
    line end must not be able to see a terminator we did not mean.
    """
    if not body:
        return b""
    crlf = body.count(b"\r\n")
    if body.count(b"\n") != crlf or body.count(b"\r") != crlf:
        body = _BARE.sub(b"\r\n", body)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    if body.startswith(b"."):
        body = b"." + body
    return body.replace(b"\r\n.", b"\r\n..")


def ehlo_keywords(reply: Reply) -> dict[str, str]:
    """EHLO reply -> ``{"SIZE": "10240000", "PIPELINING": "", ...}`` (first line skipped)."""
    out: dict[str, str] = {}
    for line in reply.lines[1:]:
        key, _, value = line.strip().partition(" ")
        if key:
            out[key.upper()] = value.strip()
    return out
