"""What rule actions do to bytes: header edits, new messages, programs.

Pure functions except :func:`run_execute` (runs a program; call it from a
worker thread). Used by ``enqueue.py`` (server-wide rules) and
``local.py`` (domain and account rules).

* ``Add Header`` lines go on top of the message; non-ASCII values are
  written as RFC 2047 encoded words.
* ``Tag Subject`` prepends the tag to the Subject field as it is, so an
  encoded subject stays encoded (``Subject: [SPAM] =?UTF-8?B?...?=``); a
  message without Subject gets one.
* ``Redirect to``: the message unchanged but for one ``X-Waypost-Loop``
  line on top, same envelope sender. ``Mirror to``: the exact bytes, same
  envelope sender. ``Forward to``: a new message from the rule's owner with
  the original attached as ``message/rfc822``. ``Reply with`` / ``Reply to
  All with``: a text reply (RFC 3834: null envelope sender, ``Auto-Submitted:
  auto-replied``), never to a null, list or automatic sender.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid

from waypost import mime
from waypost.services.mailstore import field_ranges
from waypost.services.rules.engine import LOOP_HEADER, MessageView
from waypost.services.rules.model import execute_command

log = logging.getLogger("waypost.rules")

EXECUTE_TIMEOUT = 60.0


def _encoded(value: str) -> str:
    if value.isascii():
        return value
    return Header(value, "utf-8").encode()


def header_bytes(lines: Sequence[str]) -> bytes:
    out = []
    for line in lines:
        name, _, value = line.partition(":")
        out.append(f"{name.strip()}: {_encoded(value.strip())}\r\n")
    return "".join(out).encode("ascii", "replace")


def _tag_prefix(tags: Sequence[str]) -> bytes:
    """Tags in the order applied: the last one ends up first."""
    return b"".join(_encoded(t).encode("ascii", "replace") + b" " for t in reversed(tags))


def subject_edit(body: bytes, tags: Sequence[str]) -> tuple[tuple[int, int] | None, bytes]:
    """The Subject field's byte range (None: there is none) and its new line."""
    ranges = field_ranges(body, ["Subject"])
    prefix = _tag_prefix(tags)
    if not ranges:
        return None, b"Subject: " + prefix.rstrip() + b"\r\n"
    start, end = ranges[0]
    raw = body[start:end]
    value = raw[raw.index(b":") + 1 :].lstrip(b" \t")
    if not value.strip():
        return (start, end), b"Subject: " + prefix.rstrip() + b"\r\n"
    return (start, end), b"Subject: " + prefix + value


def rewrite(body: bytes, headers: Sequence[str], tags: Sequence[str]) -> bytes:
    """The message with added header lines on top and the subject tagged."""
    out = body
    if tags:
        where, line = subject_edit(out, tags)
        if where is None:
            out = line + out
        else:
            out = out[: where[0]] + line + out[where[1] :]
    if headers:
        out = header_bytes(headers) + out
    return out


def delivery_edit(
    body: bytes, headers: Sequence[str], tags: Sequence[str]
) -> tuple[bytes, tuple[tuple[int, int], ...]]:
    """The same as ``prefix`` and ``omit`` for a stored copy (the blob is shared)."""
    prefix = header_bytes(headers)
    omit: tuple[tuple[int, int], ...] = ()
    if tags:
        where, line = subject_edit(body, tags)
        prefix += line
        if where is not None:
            omit = (where,)
    return prefix, omit


# -- new messages -------------------------------------------------------------------


def may_auto_reply(view: MessageView) -> str | None:
    """None when an automatic reply may go to the sender, else the reason not."""
    sender = view.mail_from.lower()
    if not sender:
        return "the sender is null"
    local = sender.partition("@")[0]
    if (
        local in ("mailer-daemon", "postmaster")
        or local.startswith("owner-")
        or local.endswith(("-request", "-owner", "-bounces"))
    ):
        return f"the sender <{view.mail_from}> is a list or system address"
    if not view.human_generated:
        return "the message is a bounce, a list message or an automatic one"
    return None


def loop_line(owner: str) -> bytes:
    return f"{LOOP_HEADER}: {owner}\r\n".encode("ascii", "replace")


def redirect_body(original: bytes, owner: str) -> bytes:
    return loop_line(owner) + original


def _base(
    owner_address: str, hostname: str, to: Sequence[str], subject: str, owner: str
) -> EmailMessage:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = owner_address
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=hostname or None)
    msg[LOOP_HEADER] = owner
    return msg


def _subject(view: MessageView, prefix: str) -> str:
    subject = view.subject or ""
    if subject.lower().startswith(prefix.lower()):
        return subject
    return f"{prefix} {subject}".strip()


def forward_body(
    original: bytes,
    view: MessageView,
    *,
    owner_address: str,
    hostname: str,
    to: Sequence[str],
    owner: str,
    note: str = "",
) -> bytes:
    msg = _base(owner_address, hostname, to, _subject(view, "Fwd:"), owner)
    data = msg.as_bytes()
    head = data[: mime.header_stop(data, 0, len(data))]
    boundary = "=_waypost_" + os.urandom(12).hex()
    text = note or f"Forwarded message from {view.address('From') or view.mail_from or '?'}"
    parts = [
        head,
        b"MIME-Version: 1.0\r\n",
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode(),
        f"--{boundary}\r\n".encode(),
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        text.encode("utf-8") + b"\r\n",
        f"--{boundary}\r\n".encode(),
        b"Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n",
        original if original.endswith(b"\n") else original + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts)


def reply_body(
    view: MessageView,
    text: str,
    *,
    owner_address: str,
    hostname: str,
    to: Sequence[str],
    owner: str,
) -> bytes:
    msg = _base(owner_address, hostname, to, _subject(view, "Re:"), owner)
    message_id = view.first("Message-ID")
    if message_id:
        msg["In-Reply-To"] = message_id.strip()
        msg["References"] = message_id.strip()
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(text.replace("\r\n", "\n"))
    return msg.as_bytes()


def reply_targets(view: MessageView, everyone: bool, owner_address: str) -> list[str]:
    targets = [view.mail_from]
    if everyone:
        targets += list(view.addresses("To")) + list(view.addresses("Cc"))
    seen: set[str] = set()
    out = []
    for t in targets:
        key = t.lower()
        if t and key not in seen and key != owner_address.lower():
            seen.add(key)
            out.append(t)
    return out


# -- Execute --------------------------------------------------------------------------


def run_execute(
    command: str,
    body: bytes,
    mail_from: str,
    recipients: Sequence[str],
    *,
    rule: str,
    timeout: float = EXECUTE_TIMEOUT,
) -> int | None:
    """Run ``Execute``'s program with the message (rules.md §5 [waypost]):
    ``[FILE]`` passes a file path as the last argument instead of stdin,
    ``[RETPATH]`` prepends ``Return-Path:``, ``[RCPT]`` one ``Envelope-To:``
    per recipient, ``[STDERR]`` logs what the program wrote to stderr.
    Returns the exit status (None: it could not run or timed out)."""
    flags, line = execute_command(command)
    data = body
    if "RCPT" in flags:
        data = b"".join(f"Envelope-To: {r}\r\n".encode() for r in recipients) + data
    if "RETPATH" in flags:
        data = f"Return-Path: <{mail_from}>\r\n".encode() + data
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        log.error("rule %r: Execute %r: %s", rule, line, exc)
        return None
    path = None
    try:
        if "FILE" in flags:
            fd, path = tempfile.mkstemp(prefix="waypost-rule-", suffix=".eml")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            argv.append(path)
            stdin = b""
        else:
            stdin = data
        proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.error("rule %r: Execute %r failed: %s", rule, line, exc)
        return None
    finally:
        if path is not None:
            try:
                os.unlink(path)
            except OSError:
                pass
    if "STDERR" in flags and proc.stderr:
        log.warning(
            "rule %r: Execute %r: %s", rule, line, proc.stderr.decode("utf-8", "replace").strip()
        )
    log.info("rule %r: Execute %r exited with %d", rule, line, proc.returncode)
    return proc.returncode
