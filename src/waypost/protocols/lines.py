"""Splitting a byte stream into protocol lines with bounded memory.

Shared by the line-oriented protocols (SMTP, POP3). An over-long line is
swallowed up to its end and reported once (as :data:`LineBuffer.TOO_LONG`),
so the command stream stays in step and the session can answer an error and
go on; memory never grows past the limit.
"""

from __future__ import annotations


class LineBuffer:
    TOO_LONG = object()

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_line(self, limit: int | None = None) -> bytes | object | None:
        """The next complete line (LF included), :data:`TOO_LONG` for a line
        over ``limit`` once it has ended, or None if no line is complete."""
        limit = self.limit if limit is None else limit
        buf = self._buf
        i = buf.find(b"\n")
        if self._discarding:
            if i < 0:
                buf.clear()
                return None
            del buf[: i + 1]
            self._discarding = False
            return self.TOO_LONG
        if i < 0:
            if len(buf) > limit:
                buf.clear()
                self._discarding = True
            return None
        line = bytes(buf[: i + 1])
        del buf[: i + 1]
        return self.TOO_LONG if len(line) > limit else line

    def take_rest(self) -> bytes:
        """Hand over what is buffered (e.g. the start of a DATA body)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    def clear(self) -> None:
        self._buf.clear()
        self._discarding = False

    def __len__(self) -> int:
        return len(self._buf)
