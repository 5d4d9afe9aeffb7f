"""Raw SMTP over a socket: bytes exactly as a test writes them (bare CR/LF,
smuggling sequences, pipelining), every reply line the server wrote."""

from __future__ import annotations

import re
import socket


def raw(port: int, lines: list[bytes], source: str = "127.0.0.1") -> list[str]:
    """Send raw bytes and return every reply line the server wrote.

    Each chunk is sent once the server has answered the one before it (a final
    reply line arrived), so the server sees the chunks one by one; the last
    chunk ends the session (QUIT), and the server closing it ends the reading.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=15,
                                  source_address=(source, 0)) as sock:
        data = b""
        seen = 0  # final reply lines received so far
        for chunk in [b"", *lines]:  # the greeting answers the empty first chunk
            sock.sendall(chunk)
            while final_replies(data) <= seen:
                part = sock.recv(65536)
                if not part:
                    break
                data += part
            seen = final_replies(data)
        sock.shutdown(socket.SHUT_WR)
        while True:
            try:
                part = sock.recv(65536)
            except TimeoutError:
                break
            if not part:
                break
            data += part
    return data.decode("utf-8", "replace").splitlines()[1:]


def final_replies(data: bytes) -> int:
    """Complete final reply lines (``NNN text``, not ``NNN-text``) in ``data`` (RFC 5321 §4.2.1)."""
    return len(re.findall(rb"^\d{3}(?: [^\r\n]*)?\r?\n", data, re.M))
