"""Sample messages shared by the MIME, IMAP FETCH/SEARCH and IMAP server tests.

Every sample is CRLF-terminated wire bytes, exactly as a server stores them;
tests cut sections out of these bytes, so none may be normalised.
"""

from __future__ import annotations


def crlf(*lines: str | bytes) -> bytes:
    """Wire lines: each line of a sample ends in CRLF, as RFC 5322 §2.1 requires."""
    return b"\r\n".join(x.encode() if isinstance(x, str) else x for x in lines)


PLAIN = crlf(
    "Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)",
    "From: Fred Foobar <foobar@Blurdybloop.COM>",
    "Subject: afternoon meeting",
    "To: mooch@owatagu.siam.edu",
    "Message-Id: <B27397-0100000@Blurdybloop.COM>",
    "MIME-Version: 1.0",
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII",
    "",
    "Hello Joe, do you think we can meet at 3:30 tomorrow?",
    "",
)

ALTERNATIVE = crlf(
    "From: a@example.com",
    "Subject: alt",
    'Content-Type: multipart/alternative; boundary="b1"',
    "",
    "This is a preamble.",
    "--b1",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: quoted-printable",
    "",
    "Gr=C3=BC=C3=9Fe",
    "--b1",
    "Content-Type: text/html; charset=utf-8",
    "",
    "<p>Grüße</p>",
    "--b1--",
    "epilogue",
    "",
)

MIXED = crlf(
    "From: a@example.com",
    "To: b@example.com",
    "Subject: report",
    "Content-Type: multipart/mixed; boundary=outer",
    "",
    "--outer",
    "Content-Type: multipart/alternative; boundary=inner",
    "",
    "--inner",
    "Content-Type: text/plain",
    "",
    "plain text",
    "--inner",
    "Content-Type: text/html",
    "",
    "<b>html</b>",
    "--inner--",
    "--outer",
    'Content-Type: application/pdf; name="report.pdf"',
    "Content-Transfer-Encoding: base64",
    'Content-Disposition: attachment; filename="report.pdf"',
    "Content-ID: <part2@example.com>",
    "Content-Description: The report",
    "Content-Language: en, de",
    "Content-Location: http://example.com/report.pdf",
    "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==",
    "",
    "JVBERi0xLjQK",
    "--outer--",
    "",
)

NESTED = crlf(
    "From: outer@example.com",
    "Subject: fwd",
    "Content-Type: multipart/mixed; boundary=X",
    "",
    "--X",
    "",
    "see attached",
    "--X",
    "Content-Type: message/rfc822",
    "",
    "From: Inner <inner@example.com>",
    "Subject: inner subject",
    "Content-Type: multipart/mixed; boundary=Y",
    "",
    "--Y",
    "Content-Type: text/plain",
    "",
    "inner one",
    "--Y",
    "Content-Type: text/plain",
    "",
    "inner two",
    "--Y--",
    "--X--",
    "",
)
