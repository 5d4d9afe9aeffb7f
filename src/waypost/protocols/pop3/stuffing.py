"""Multi-line response bodies as streams, pure: dot-stuffing and TOP's cut.

A stored message reaches the client in chunks cut wherever the reader cut
them (a blob read, not a line), so both transformations here keep a little
state from one chunk to the next instead of looking at lines:

* :class:`DotStuffer` (RFC 1939 §3): a line that starts with ``.`` gets a
  second one, line ends become CRLF (a bare LF, which a message stored from
  a careless client may hold, becomes CRLF; a bare CR is left alone), and
  :meth:`DotStuffer.end` adds the CRLF a message without a final line end
  lacks before the terminating ``.`` line. The work per chunk is a couple
  of ``bytes.count``/``bytes.replace`` calls in C, not a Python loop per
  line; only a chunk that holds a bare LF takes a regular expression.
* :class:`TopCutter` (RFC 1939 §7, TOP): the header, the blank line after
  it and the first *n* body lines, then nothing more, so a TOP of a large
  message reads only as much of it as it sends.

The state carried between chunks is one byte (the last one seen: was the
chunk cut inside a CRLF, or right after a line end?) and, for TOP, the
length and first byte of the line in progress; memory does not grow with
the message.
"""

from __future__ import annotations

import re

CRLF = b"\r\n"
END = b".\r\n"
_BARE_LF = re.compile(rb"(?<!\r)\n")
_DOT_LINE = re.compile(rb"\n\.")  # sre skips to each LF with memchr: ~3x faster than ``in``


class DotStuffer:
    """Turns a message, fed in chunks of any size, into the body of a
    multi-line response (without the final ``.`` line until :meth:`end`)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = b"\n"  # the message starts at the start of a line

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        prefix = b""
        if chunk[:1] == b"\n" and self._last == b"\r":
            # The CRLF was cut in two: this LF is not bare, and a line starts after it.
            prefix, chunk, self._last = b"\n", chunk[1:], b"\n"
            if not chunk:
                return prefix
        at_line_start = self._last == b"\n"
        self._last = chunk[-1:]
        if chunk.count(b"\n") != chunk.count(CRLF):
            chunk = _BARE_LF.sub(CRLF, chunk)
        if _DOT_LINE.search(chunk) is not None:
            chunk = chunk.replace(b"\n.", b"\n..")
        if at_line_start and chunk[:1] == b".":
            return prefix + b"." + chunk
        return prefix + chunk

    def end(self) -> bytes:
        """The CRLF a message without a final line end needs, and the ``.`` line."""
        return END if self._last == b"\n" else CRLF + END


def stuff(data: bytes) -> bytes:
    """A whole message as the body of a multi-line response, ``.`` line included."""
    stuffer = DotStuffer()
    return stuffer.feed(data) + stuffer.end()


class TopCutter:
    """The part of a message TOP sends (RFC 1939 §7): everything up to and
    including the first empty line, then ``lines`` more lines.

    A message without an empty line is all header; one that starts with an
    empty line has an empty header. LF and CRLF both end a line (an empty
    line is ``\\n`` or ``\\r\\n``). Feed chunks of any size; :attr:`done`
    is true once nothing more will be taken."""

    __slots__ = ("_first", "_header", "_left", "_pending", "done", "lines")

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self._header = True
        self._left = lines
        self._pending = 0  # octets of the current line seen in earlier chunks
        self._first = b""  # its first octet
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """What of ``chunk`` belongs to the answer."""
        pos, end = 0, len(chunk)
        if self._header and not self._pending:  # at a line start: skip the header in C
            found = _empty_line_end(chunk)
            if found is not None:
                pos, self._header = found, False
        while pos < end:
            if not self._header and self._left <= 0:
                self.done = True
                return chunk[:pos]
            nl = chunk.find(b"\n", pos)
            if nl < 0:  # the line goes on in the next chunk
                if not self._pending:
                    self._first = chunk[pos : pos + 1]
                self._pending += end - pos
                return chunk
            if self._pending:
                first, length = self._first, self._pending + nl - pos
            else:
                first, length = chunk[pos : pos + 1], nl - pos
            self._pending = 0
            pos = nl + 1
            if self._header:
                self._header = length > 1 or (length == 1 and first != b"\r")
            else:
                self._left -= 1
        if not self._header and self._left <= 0:
            self.done = True
        return chunk


def top_of_plain(data: bytes, lines: int) -> bytes:
    """What :class:`TopCutter` takes of a whole message of CRLF lines only
    (``maildrop.is_plain``): there every ``\\n`` ends a line and follows a
    ``\\r``, so the header ends at the first ``\\r\\n\\r\\n`` and each
    body line at the next ``\\n``: one ``find`` per line, no state."""
    if data[:2] == CRLF:
        pos = 2
    else:
        pos = data.find(b"\r\n\r\n")
        if pos < 0:  # no empty line: all header
            return data
        pos += 4
    for _ in range(lines):
        nl = data.find(b"\n", pos)
        if nl < 0:
            return data
        pos = nl + 1
    return data[:pos]


def _empty_line_end(chunk: bytes) -> int | None:
    """Where the first empty line of ``chunk`` (which starts at a line start)
    ends, found with a few ``find`` calls; None when there is none."""
    if chunk[:1] == b"\n":
        return 1
    if chunk[:2] == b"\r\n":
        return 2
    crlf = chunk.find(b"\r\n\r\n")
    stop = len(chunk) if crlf < 0 else crlf + 4
    lf = chunk.find(b"\n\n", 0, stop)  # an LF-only empty line
    mixed = chunk.find(b"\n\r\n", 0, stop)  # a CRLF empty line (also the one at crlf + 1)
    ends = ([lf + 2] if lf >= 0 else []) + ([mixed + 3] if mixed >= 0 else [])
    return min(ends) if ends else None
