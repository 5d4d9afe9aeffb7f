"""Compose, reply, reply-all and forward end to end (issue 10 point 6): a
real ``waypost serve``, the form posted over HTTP as a browser does, the
mail read back over IMAP in the recipients' mailboxes and in Sent, a remote
recipient relayed to an SMTP sink, a server-wide rule applied.

One server for the module; every test uses its own subject so that tests
do not see each other's mail.
"""

from __future__ import annotations

import email
import html
import imaplib
import itertools
import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import formataddr

import httpx
import pytest
from tests.support.server import WaypostServer
from tests.support.smtp_sink import SMTPSink

from waypost.services.container import open_services
from waypost.services.mailaccess.service import MailAccess

ALICE = "alice@main.dom"
BOB = "bob@main.dom"
CAROL = "carol@main.dom"
PASSWORD = "compose-pw-1"
REAL_NAME = "Alice Ünicode"
RULE_TEXT = "Forbidden subjects are not sent from here"
RULE = f"""( ( 9, "no forbidden subjects",
    ( ("Subject", "is", "*FORBIDDEN*") ),
    ( ("Reject with", "{RULE_TEXT}"), ("Stop Processing") ) ) )"""
BINARY = bytes(range(256)) * 40 + b"\r\n.\r\n\x00end"
XSS = '<script>alert("x")</script>"'

_n = itertools.count(1)


def unique(label: str) -> str:
    return f"{label} #{next(_n)} {time.monotonic_ns()}"


@dataclass
class Env:
    server: WaypostServer
    sink: SMTPSink
    uids: dict[str, int]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url(), follow_redirects=False, timeout=30)

    def session(self, c: httpx.Client, name: str = "alice") -> str:
        """Log in as a browser does: the session URL prefix (``/Session/<id>/``)."""
        page = c.get("/")
        token = re.search(r'name="csrfToken" value="([^"]+)"', page.text)
        assert token, page.text[:300]
        r = c.post("/login", data={"Username": name, "Password": PASSWORD,
                                   "csrfToken": token.group(1)})
        assert r.status_code == 303, r.text[:300]
        return str(r.headers["location"]).rsplit("/", 1)[0] + "/"

    def imap(self, account: str) -> imaplib.IMAP4:
        c = imaplib.IMAP4("127.0.0.1", self.server.port("IMAPPort"), timeout=30)
        c.login(account, PASSWORD)
        return c


def original(subject: str, *, sender: str = "Bob Builder <bob@main.dom>",
             reply_to: str | None = None, to: str = "Alice <alice@main.dom>",
             cc: str | None = None, text: str = "First line.\nSecond line.",
             attachment: bytes | None = None) -> bytes:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = to
    if cc:
        m["Cc"] = cc
    if reply_to:
        m["Reply-To"] = reply_to
    m["Subject"] = subject
    m["Date"] = "Tue, 01 Dec 2026 10:00:00 +0000"
    m["Message-ID"] = "<orig-1@remote.example>"
    m["References"] = "<root-0@remote.example>"
    m.set_content(text)
    if attachment is not None:
        m.add_attachment(attachment, maintype="application", subtype="octet-stream",
                         filename="data.bin")
    return bytes(m)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data = tmp_path_factory.mktemp("compose") / "var"
    server = WaypostServer(data).init()
    uids: dict[str, int] = {}
    with SMTPSink(hostname="mx.remote.example") as sink:
        svc = open_services(data)
        try:
            d = svc.directory
            for name in ("alice", "bob", "carol"):
                d.create_account(name, PASSWORD)
            d.set_account_settings(ALICE, {"RealName": REAL_NAME})
            d.set_aliases(ALICE, ["ally"])
            d.set_aliases(BOB, ["team-replies"])
            svc.set_setting("LoginFailureLimit", "0")
            access = MailAccess(svc)
            for account in (ALICE, BOB, CAROL):
                access.ensure_inbox(account)
            uids["reply"] = access.append(ALICE, "INBOX", original(
                "Re: Plans", reply_to="Team <team-replies@main.dom>",
                to="Alice <alice@main.dom>, Carol <carol@main.dom>, ally@main.dom",
                cc="Dave <dave@remote.example>, bob@main.dom")).uid
            uids["forward"] = access.append(ALICE, "INBOX", original(
                "Report", attachment=BINARY)).uid
            uids["xss"] = access.append(ALICE, "INBOX", original(
                XSS, sender=formataddr((XSS, "evil@remote.example")), text=XSS)).uid
            rich = EmailMessage()
            rich["From"], rich["To"], rich["Subject"] = BOB, ALICE, "Rich"
            rich.set_content("<html><body><p>Para <b>one</b></p><script>bad()</script>"
                             "<div>Two &amp; three</div></body></html>", subtype="html")
            uids["html"] = access.append(ALICE, "INBOX", bytes(rich)).uid
            access.create(BOB, "Private")
            uids["private"] = access.append(BOB, "Private", original("bob only")).uid
            access.set_acl(BOB, "Private", ALICE, "l")
            access.create(BOB, "Shared")
            uids["shared"] = access.append(BOB, "Shared", original("shared news")).uid
            access.set_acl(BOB, "Shared", ALICE, "lr")  # may read, not flag
        finally:
            svc.close()
        server.cli("router", "set", "-",
                   input=f"remote.example = remote.example@127.0.0.1.{sink.port}._via\n")
        server.cli("rules", "set", "-", input=RULE)
        server.start()
        try:
            yield Env(server, sink, uids)
        finally:
            server.stop()


def form_of(page: str) -> dict[str, str]:
    """The text fields of the compose form as the page shows them (unescaped)."""
    fields = dict(re.findall(r'<input[^>]*name="(\w+)"[^>]*value="([^"]*)"', page))
    body = re.search(r'<textarea[^>]*name="Body"[^>]*>(.*?)</textarea>', page, re.S)
    # a browser drops the one line break right after <textarea> (HTML's parsing rules)
    fields["Body"] = body.group(1).removeprefix("\n") if body else ""
    return {k: html.unescape(v) for k, v in fields.items()}


def send(c: httpx.Client, base: str, fields: dict[str, str],
         files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
         csrf: str | None = None) -> httpx.Response:
    page = c.get(base + "Compose.wssp")
    token = csrf if csrf is not None else form_of(page.text)["csrfToken"]
    data = {"csrfToken": token, **fields} if token else dict(fields)
    return c.post(base + "Send", data=data,
                  files=files or [("Attachment", ("", b"", "application/octet-stream"))])


def fetch(env: Env, account: str, subject: str, mailbox: str = "INBOX",
          wait: bool = True) -> list[tuple[EmailMessage, bytes]]:
    """The messages with this subject text and their flags, over IMAP."""

    def look() -> list[tuple[EmailMessage, bytes]]:
        c = env.imap(account)
        try:
            status, _ = c.select(f'"{mailbox}"')
            if status != "OK":
                return []
            _, found = c.uid("SEARCH", "CHARSET", "UTF-8", "SUBJECT", subject.split()[-1])
            out = []
            for uid in found[0].split():
                _, parts = c.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")
                raw = parts[0][1]
                msg = email.message_from_bytes(raw, policy=policy.default)
                assert isinstance(msg, EmailMessage)
                out.append((msg, parts[0][0]))
            return out
        finally:
            c.logout()

    if not wait:
        return look()
    return env.server.wait_for(look, what=f"{subject!r} in {account}/{mailbox}")


def settle(env: Env, to: str) -> str:
    """Send a marker to ``to`` and wait until its first recipient has it: mail
    sent before it (had it been queued) has had its chance to arrive."""
    marker = unique("marker")
    with env.client() as c:
        assert send(c, env.session(c), {"To": to, "Subject": marker}).status_code == 303
    fetch(env, to.split(",")[0], marker)
    return marker


# -- sending -------------------------------------------------------------------------


def test_send_with_attachment_to_local_accounts_and_sent_copy(env: Env) -> None:
    subject = unique("Grüße ☃")
    with env.client() as c:
        base = env.session(c)
        page = c.get(base + "Compose.wssp", params={"To": BOB})
        assert page.status_code == 200
        assert 'enctype="multipart/form-data"' in page.text
        assert form_of(page.text)["To"] == BOB
        assert "Alice Ünicode &lt;alice@main.dom&gt;" in page.text
        r = send(c, base, {"To": f"Bob <{BOB}>", "Bcc": CAROL, "Subject": subject,
                           "Body": "Hello Bob,\r\nsee the file.\r\nÜmlaut."},
                 files=[("Attachment", ("résumé data.bin", BINARY, "application/x-test"))])
        assert r.status_code == 303, r.text[:2000]
        assert r.headers["location"] == "Mailboxes.wssp?Done=sent"
    [(got, _flags)] = fetch(env, BOB, subject)
    assert got["Subject"] == subject
    assert str(got["From"]) == f"{REAL_NAME} <{ALICE}>"
    assert got["To"].addresses[0].addr_spec == BOB
    assert "Bcc" not in got and CAROL not in got.as_string()
    assert got["Message-ID"].endswith("@main.dom>")
    assert re.search(r"with HTTPA id \w+", got["Received"])
    assert got.get_body(("plain",)).get_content().splitlines()[:3] == [
        "Hello Bob,", "see the file.", "Ümlaut."]
    [part] = list(got.iter_attachments())
    assert part.get_filename() == "résumé data.bin"
    assert part.get_content_type() == "application/x-test"
    assert part.get_content() == BINARY
    [(bcc_copy, _)] = fetch(env, CAROL, subject)
    assert "Bcc" not in bcc_copy and bcc_copy["Subject"] == subject
    [(sent, flags)] = fetch(env, ALICE, subject, "Sent")
    assert b"\\Seen" in flags
    assert "Bcc" not in sent and "Received" not in sent
    assert next(sent.iter_attachments()).get_content() == BINARY
    c2 = env.imap(ALICE)
    try:
        _, listed = c2.list('""', "Sent")
        assert b"\\Sent" in listed[0]
    finally:
        c2.logout()


def test_a_remote_recipient_is_relayed_with_the_trace_line(env: Env) -> None:
    subject = unique("to the world")
    with env.client() as c:
        base = env.session(c)
        r = send(c, base, {"To": "dave@remote.example", "Subject": subject, "Body": "Hi"})
        assert r.status_code == 303, r.text[:2000]
    got = env.server.wait_for(
        lambda: [m for m in env.sink.messages if subject.encode() in m.data],
        what="the message at the sink")[0]
    assert got.rcpts == ["dave@remote.example"] and got.mail_from == ALICE
    assert re.search(rb"Received: from \[127\.0\.0\.1\]\r\n\tby main\.dom \(Waypost\) "
                     rb"with HTTPA id \w+\r\n\tfor <dave@remote\.example>;", got.data)


def test_unknown_local_recipient_shows_the_form_again(env: Env) -> None:
    subject = unique("nobody home")
    with env.client() as c:
        base = env.session(c)
        r = send(c, base, {"To": f"{BOB}, nobody@main.dom", "Subject": subject,
                           "Body": "\n\nkept text"})
        assert r.status_code == 400
        assert 'data-error="recipientRefused"' in r.text
        assert '<span class="address">nobody@main.dom</span>' in r.text
        assert re.search(r'<span class="reason">[^<]+</span>', r.text)
        fields = form_of(r.text)
        assert fields["Subject"] == subject and fields["Body"] == "\n\nkept text"
        bad = send(c, base, {"To": "not an address", "Subject": subject})
        assert bad.status_code == 400 and 'data-error="badAddress"' in bad.text
        none = send(c, base, {"Subject": subject})
        assert none.status_code == 400 and 'data-error="noRecipients"' in none.text
    settle(env, BOB)
    assert fetch(env, BOB, subject, wait=False) == []
    assert fetch(env, ALICE, subject, "Sent", wait=False) == []


def test_header_injection_is_refused(env: Env) -> None:
    subject = unique("injected")
    with env.client() as c:
        base = env.session(c)
        for name, value in (("Subject", f"{subject}\r\nBcc: carol@main.dom"),
                            ("To", f"{BOB}\nBcc: carol@main.dom"),
                            ("Cc", f"{BOB}\r")):
            fields = {"To": BOB, "Subject": subject, name: value}
            r = send(c, base, fields)
            assert r.status_code == 400, name
            assert 'data-error="headerInjection"' in r.text
    settle(env, CAROL)
    assert fetch(env, CAROL, subject, wait=False) == []
    assert fetch(env, BOB, subject, wait=False) == []


def test_send_refuses_a_missing_or_wrong_csrf_token(env: Env) -> None:
    subject = unique("forged")
    with env.client() as c:
        base = env.session(c)
        for token in ("", "0" * 43):
            r = send(c, base, {"To": BOB, "Subject": subject}, csrf=token)
            assert r.status_code == 403
    settle(env, BOB)
    assert fetch(env, BOB, subject, wait=False) == []


def test_a_server_rule_rejects_and_nothing_is_sent_or_saved(env: Env) -> None:
    subject = unique("FORBIDDEN stuff")
    with env.client() as c:
        base = env.session(c)
        r = send(c, base, {"To": f"{BOB}, dave@remote.example", "Subject": subject,
                           "Body": "no"})
        assert r.status_code == 403
        assert 'data-error="ruleRejected"' in r.text and RULE_TEXT in r.text
        assert form_of(r.text)["Subject"] == subject
    marker = settle(env, f"{BOB}, dave@remote.example")
    env.server.wait_for(lambda: [m for m in env.sink.messages if marker.encode() in m.data])
    assert fetch(env, BOB, subject, wait=False) == []
    assert fetch(env, ALICE, subject, "Sent", wait=False) == []
    assert not [m for m in env.sink.messages if subject.encode() in m.data]
    assert "rejected by rule 'no forbidden subjects'" in env.server.logs()


# -- reply, reply-all, forward -----------------------------------------------------------


def inbox_flags(env: Env, uid: int) -> bytes:
    c = env.imap(ALICE)
    try:
        c.select("INBOX")
        _, flags = c.uid("FETCH", str(uid), "(FLAGS)")
        return bytes(flags[0])
    finally:
        c.logout()


def compose(c: httpx.Client, base: str, key: str, mode: str, env: Env) -> httpx.Response:
    return c.get(base + "Compose.wssp", params={"Mailbox": "INBOX", "UID": env.uids[key],
                                               "Mode": mode})


def test_reply_and_reply_all_prefill(env: Env) -> None:
    with env.client() as c:
        base = env.session(c)
        reply = form_of(compose(c, base, "reply", "reply", env).text)
        assert reply["To"] == "Team <team-replies@main.dom>"
        assert reply["Subject"] == "Re: Plans"
        assert reply["Mode"] == "reply" and reply["Mailbox"] == "INBOX"
        assert "Bob Builder <bob@main.dom> wrote:\n> First line.\n> Second line." \
            in reply["Body"]
        assert reply.get("Cc", "") == ""
        everyone = form_of(compose(c, base, "reply", "replyall", env).text)
        assert everyone["To"] == "Team <team-replies@main.dom>"
        assert everyone["Cc"] == ("Carol <carol@main.dom>, Dave <dave@remote.example>, "
                                  "bob@main.dom")
        rich = form_of(compose(c, base, "html", "reply", env).text)
        assert "wrote:\n> Para one\n>\n> Two & three" in rich["Body"]
        assert "bad()" not in rich["Body"] and "<" not in rich["Body"].split("wrote:")[1]
        forward = form_of(compose(c, base, "forward", "forward", env).text)
        assert forward["Subject"] == "Fwd: Report" and forward["To"] == ""
        assert "Forwarded message" in forward["Body"] and "First line." in forward["Body"]


def test_reply_is_threaded_and_marks_the_original_answered(env: Env) -> None:
    subject = unique("Re: Plans")
    with env.client() as c:
        base = env.session(c)
        fields = form_of(compose(c, base, "reply", "reply", env).text)
        fields["Subject"] = subject
        fields.pop("csrfToken")
        r = send(c, base, fields)
        assert r.status_code == 303, r.text[:2000]
        assert r.headers["location"] == "Mailbox.wssp?Mailbox=INBOX&Done=sent"
    [(got, _)] = fetch(env, BOB, subject)  # team-replies is bob's alias
    assert got["In-Reply-To"] == "<orig-1@remote.example>"
    assert got["References"] == "<root-0@remote.example> <orig-1@remote.example>"
    assert "> First line." in got.get_body(("plain",)).get_content()
    assert b"\\Answered" in inbox_flags(env, env.uids["reply"])


def test_forward_attaches_the_original_attachment(env: Env) -> None:
    subject = unique("Fwd: Report")
    with env.client() as c:
        base = env.session(c)
        page = compose(c, base, "forward", "forward", env)
        assert re.search(r'<input type="checkbox" name="Forward" value="2" checked>', page.text)
        assert "data.bin" in page.text
        fields = form_of(page.text)
        fields.pop("csrfToken")
        fields.update({"To": CAROL, "Subject": subject, "Forward": "2"})
        r = send(c, base, fields,
                 files=[("Attachment", ("extra.txt", b"extra file\n", "text/plain"))])
        assert r.status_code == 303, r.text[:2000]
    [(got, _)] = fetch(env, CAROL, subject)
    names = {p.get_filename(): p.get_content() for p in got.iter_attachments()}
    assert names["data.bin"] == BINARY
    assert names["extra.txt"] == "extra file\n"
    assert "In-Reply-To" not in got
    assert b"$Forwarded" in inbox_flags(env, env.uids["forward"])


def test_prefilled_fields_are_escaped(env: Env) -> None:
    with env.client() as c:
        base = env.session(c)
        for mode in ("reply", "replyall", "forward"):
            page = compose(c, base, "xss", mode, env)
            assert page.status_code == 200
            assert "<script>" not in page.text, mode
            assert "&lt;script&gt;" in page.text
            assert 'value="Re: &lt;script&gt;' in page.text or mode == "forward"
        fields = form_of(compose(c, base, "xss", "reply", env).text)
        assert fields["Subject"] == f"Re: {XSS}"
        assert fields["To"] == f'"{XSS.replace(chr(34), chr(92) + chr(34))}" <evil@remote.example>'
        typed = send(c, base, {"To": f'{BOB}, <script>"x"</script>@x', "Subject": XSS})
        assert typed.status_code == 400 and "<script>" not in typed.text


def test_replying_needs_the_read_right(env: Env) -> None:
    with env.client() as c:
        base = env.session(c)
        r = c.get(base + "Compose.wssp", params={"Mailbox": "~bob/Private",
                                                 "UID": env.uids["private"], "Mode": "reply"})
        assert r.status_code == 403
        assert "bob only" not in r.text
        bad = c.get(base + "Compose.wssp", params={"Mailbox": "INBOX", "UID": "1",
                                                   "Mode": "bounce"})
        assert bad.status_code == 400
        quoted = urllib.parse.quote("~bob/Private", safe="")
        sent = send(c, base, {"To": BOB, "Subject": "steal", "Mailbox": "~bob/Private",
                              "UID": str(env.uids["private"]), "Mode": "forward",
                              "Forward": "1"})
        assert sent.status_code == 403 and quoted not in sent.headers.get("location", "")


def test_a_reply_from_a_read_only_mailbox_is_sent_without_flagging(env: Env) -> None:
    subject = unique("Re: shared news")
    with env.client() as c:
        base = env.session(c)
        page = c.get(base + "Compose.wssp", params={"Mailbox": "~bob/Shared",
                                                    "UID": env.uids["shared"], "Mode": "reply"})
        assert page.status_code == 200
        fields = form_of(page.text)
        fields.pop("csrfToken")
        fields["Subject"] = subject
        r = send(c, base, fields)
        assert r.status_code == 303, r.text[:2000]
        assert r.headers["location"] == "Mailbox.wssp?Mailbox=~bob%2FShared&Done=sent"
    [(got, _)] = fetch(env, BOB, subject)
    assert got["In-Reply-To"] == "<orig-1@remote.example>"
    c2 = env.imap(BOB)
    try:
        c2.select("Shared")
        _, flags = c2.uid("FETCH", str(env.uids["shared"]), "(FLAGS)")
        assert b"\\Answered" not in flags[0]
    finally:
        c2.logout()
