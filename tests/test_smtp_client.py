"""The outbound SMTP client against real receivers on loopback.

Postfix's ``smtp-sink`` when installed (Debian package ``postfix``), and the
Python sink in ``tests/support/smtp_sink.py``, which can also refuse
recipients, drop connections and speak STARTTLS, for the error paths.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.smtp_sink import DEFAULT_EXTENSIONS, SMTPSink

from waypost.protocols.smtp.client import (
    SendResult,
    SMTPClient,
    SMTPConnectError,
    SMTPProtocolError,
    SMTPReplyError,
    SMTPTimeoutError,
    SMTPTLSError,
)
from waypost.protocols.smtp.wire import MailParams, RcptParams, Reply
from waypost.tls import ensure_certificate, server_context

BODY = b"From: a@here.test\r\nSubject: test\r\n\r\n.leading dot\r\n..two\r\nend\r\n"


def run(coro):
    """Run a coroutine with an overall bound, so a hang fails instead of stalling."""

    async def bounded():
        return await asyncio.wait_for(coro, 20)

    return asyncio.run(bounded())


async def deliver(port: int, *messages, **connect_kw) -> list[SendResult]:
    client = await SMTPClient.connect("127.0.0.1", port, "client.test", timeout=5, **connect_kw)
    async with client:
        return [await client.send(*m) for m in messages]


def verbs(sink: SMTPSink, session: int = 1) -> list[str]:
    return [line.split(" ")[0].upper() for s, _, line in sink.commands if s == session]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    return ensure_certificate(tmp_path_factory.mktemp("tls"), "sink.test")


# -------------------------------------------------------------- happy paths


def test_send_pipelined(smtp_sink):
    (result,) = run(
        deliver(smtp_sink.port, ("a@here.test", ["b@there.test", "c@there.test"], BODY))
    )
    assert result.mail.code == 250 and [r.code for r in result.rcpts] == [250, 250]
    assert result.data is not None and result.data.code == 250 and result.delivered
    assert [r.enhanced for r in result.finals] == ["2.0.0", "2.0.0"]
    (msg,) = smtp_sink.messages
    assert (msg.helo, msg.mail_from, msg.rcpts) == (
        "client.test",
        "a@here.test",
        ["b@there.test", "c@there.test"],
    )
    assert msg.data == BODY  # dot-stuffing undone by the peer gives back the same bytes
    assert verbs(smtp_sink) == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]
    reads = {line.split(" ")[0]: n for _, n, line in smtp_sink.commands}
    assert reads["MAIL"] == reads["RCPT"] == reads["DATA"], "MAIL/RCPT/DATA were not pipelined"


def test_several_messages_on_one_connection(smtp_sink):
    msgs = [(f"s{i}@here.test", [f"r{i}@there.test"], BODY + b"n%d\r\n" % i) for i in range(3)]
    results = run(deliver(smtp_sink.port, *msgs))
    assert all(r.delivered for r in results)
    assert smtp_sink.sessions == 1
    assert [m.mail_from for m in smtp_sink.messages] == [
        "s0@here.test",
        "s1@here.test",
        "s2@here.test",
    ]
    assert verbs(smtp_sink).count("RSET") == 2
    assert smtp_sink.messages[2].data.endswith(b"n2\r\n")


def test_without_pipelining_commands_wait_for_replies():
    extensions = [e for e in DEFAULT_EXTENSIONS if e != "PIPELINING"]
    with SMTPSink(
        extensions=extensions, rcpt_replies={"no@x.test": Reply(550, "5.1.1", "No")}
    ) as sink:
        results = run(
            deliver(
                sink.port,
                ("a@here.test", ["no@x.test"], BODY),  # refused: no DATA, transaction left open
                ("a@here.test", ["b@x.test", "no@x.test"], BODY),
                ("a@here.test", ["b@x.test"], BODY),
            )
        )
        assert results[0].data is None and results[0].finals[0].code == 550
        assert results[1].delivered and [r.code for r in results[1].finals] == [250, 550]
        assert results[2].delivered
        assert verbs(sink) == [
            "EHLO", "MAIL", "RCPT",
            "RSET", "MAIL", "RCPT", "RCPT", "DATA",
            "MAIL", "RCPT", "DATA", "QUIT",
        ]  # fmt: skip
        reads = [n for _, n, _ in sink.commands]
        assert len(set(reads)) == len(reads), "a command was sent before the previous reply"


def test_helo_fallback_and_no_extension_params():
    with SMTPSink(esmtp=False) as sink:

        async def go():
            client = await SMTPClient.connect("127.0.0.1", sink.port, "client.test", timeout=5)
            async with client:
                assert not client.esmtp and client.extensions == {}
                params = MailParams(body="8BITMIME", ret="FULL", envid="e1")
                ok = await client.send(
                    "a@here.test", ["b@x.test"], BODY, params, [RcptParams(("FAILURE",))]
                )
                utf8 = await client.send("jörg@here.test", ["b@x.test"], BODY)
                return ok, utf8

        ok, utf8 = run(go())
        assert ok.delivered
        assert sink.messages[0].mail_args == "" and sink.messages[0].rcpt_args == [""]
        assert verbs(sink)[:2] == ["EHLO", "HELO"]
        assert utf8.mail.code == 553 and utf8.finals[0].enhanced == "5.6.7" and utf8.data is None


def test_extension_params_passed_when_offered(smtp_sink):
    params = MailParams(ret="HDRS", envid="id 1", auth="<>")
    body = BODY + "Grüße\r\n".encode()
    rp = [RcptParams(("SUCCESS", "FAILURE"), ("rfc822", "orig+x@there.test")), None]
    run(deliver(smtp_sink.port, ("a@here.test", ["b@x.test", "c@x.test"], body, params, rp)))
    msg = smtp_sink.messages[0]
    assert msg.mail_args.split() == [
        f"SIZE={len(body)}",
        "BODY=8BITMIME",
        "RET=HDRS",
        "ENVID=id+201",
    ]
    assert msg.rcpt_args == ["NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig+2Bx@there.test", ""]


def test_dsn_params_dropped_when_not_offered():
    with SMTPSink(extensions=["PIPELINING", "SIZE 1000000"]) as sink:
        params = MailParams(ret="HDRS", envid="x")
        run(
            deliver(
                sink.port, ("a@here.test", ["b@x.test"], BODY, params, [RcptParams(("NEVER",))])
            )
        )
        assert sink.messages[0].mail_args == f"SIZE={len(BODY)}"
        assert sink.messages[0].rcpt_args == [""]


def test_smtputf8(smtp_sink):
    (result,) = run(deliver(smtp_sink.port, ("jörg@bücher.test", ["用户@例子.test"], BODY)))
    assert result.delivered
    msg = smtp_sink.messages[0]
    assert (msg.mail_from, msg.rcpts) == ("jörg@bücher.test", ["用户@例子.test"])
    assert "SMTPUTF8" in msg.mail_args.split()
    with SMTPSink(extensions=["PIPELINING"]) as plain:
        (refused,) = run(deliver(plain.port, ("a@here.test", ["用户@例子.test"], BODY)))
        assert (refused.mail.code, refused.mail.enhanced) == (553, "5.6.7")
        assert "MAIL" not in verbs(plain)


def test_size_limit_checked_before_sending():
    with SMTPSink(extensions=["PIPELINING", "SIZE 100"]) as sink:
        (result,) = run(deliver(sink.port, ("a@here.test", ["b@x.test"], b"x" * 200 + b"\r\n")))
        assert (result.mail.code, result.mail.enhanced) == (552, "5.3.4")
        assert result.finals[0].permanent and "MAIL" not in verbs(sink)


def test_large_body_with_dots_and_bare_newlines(smtp_sink):
    body = b"".join(b".line %d\r\n" % i for i in range(40000)) + b"bare\nlf\r\n"
    (result,) = run(deliver(smtp_sink.port, ("a@here.test", ["b@x.test"], body)))
    assert result.delivered
    assert smtp_sink.messages[0].data == body.replace(b"bare\nlf", b"bare\r\nlf")


def test_from_streams_for_a_turned_around_connection(smtp_sink):
    async def go():
        reader, writer = await asyncio.open_connection("127.0.0.1", smtp_sink.port)
        client = await SMTPClient.from_streams(reader, writer, "turned.test", timeout=5)
        async with client:
            assert client.greeting is not None and client.greeting.code == 220
            return await client.send("a@here.test", ["b@x.test"], BODY)

    assert run(go()).delivered
    assert smtp_sink.messages[0].helo == "turned.test"


# ------------------------------------------------------------------ STARTTLS


def test_opportunistic_starttls(tls_files):
    with SMTPSink(tls_context=server_context(*tls_files)) as sink:

        async def go():
            client = await SMTPClient.connect("127.0.0.1", sink.port, "client.test", timeout=5)
            async with client:
                assert client.tls and "STARTTLS" not in client.extensions
                assert "PIPELINING" in client.extensions
                return await client.send("a@here.test", ["b@x.test"], BODY)

        assert run(go()).delivered
        assert sink.messages[0].tls
        assert verbs(sink)[:3] == ["EHLO", "STARTTLS", "EHLO"]
        run(deliver(sink.port, ("a@here.test", ["b@x.test"], BODY), starttls=False))
        assert not sink.messages[1].tls


def test_failed_tls_handshake(tls_files):
    server = server_context(*tls_files)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with SMTPSink(tls_context=server) as sink, pytest.raises(SMTPTLSError):
        run(deliver(sink.port, tls_context=client_ctx))


# ---------------------------------------------------------------- refusals


def test_recipient_refusals_are_per_recipient():
    refusals = {
        "temp@x.test": Reply(451, "4.3.0", "Try later"),
        "perm@x.test": Reply(550, "5.1.1", "No such user"),
    }
    with SMTPSink(rcpt_replies=refusals) as sink:
        (result,) = run(
            deliver(sink.port, ("a@here.test", ["temp@x.test", "ok@x.test", "perm@x.test"], BODY))
        )
        assert [(r.code, r.enhanced) for r in result.finals] == [
            (451, "4.3.0"),
            (250, "2.0.0"),
            (550, "5.1.1"),
        ]
        assert result.finals[0].transient and result.finals[2].permanent
        assert sink.messages[0].rcpts == ["ok@x.test"]


def test_all_recipients_refused_then_next_message(smtp_sink):
    smtp_sink.rcpt_replies["no@x.test"] = Reply(550, "5.1.1", "No")
    first, second = run(
        deliver(
            smtp_sink.port,
            ("a@here.test", ["no@x.test"], BODY),
            ("a@here.test", ["yes@x.test"], BODY),
        )
    )
    assert first.data is None and first.finals[0].code == 550 and not first.delivered
    assert second.delivered and len(smtp_sink.messages) == 1


def test_mail_refused():
    with SMTPSink(mail_reply=Reply(550, "5.7.1", "Sender rejected")) as sink:
        (result,) = run(deliver(sink.port, ("a@here.test", ["b@x.test", "c@x.test"], BODY)))
        assert [r.code for r in result.finals] == [550, 550]
        assert result.data is None and sink.messages == []


def test_data_refused_after_body():
    with SMTPSink(data_reply=Reply(554, "5.6.0", "Content rejected")) as sink:
        (result,) = run(deliver(sink.port, ("a@here.test", ["b@x.test"], BODY)))
        assert result.rcpts[0].code == 250
        assert (result.finals[0].code, result.finals[0].enhanced) == (554, "5.6.0")


def test_421_ends_the_session():
    with SMTPSink(rcpt_replies={"b@x.test": Reply(421, "4.7.0", "Closing")}) as sink:

        async def go():
            client = await SMTPClient.connect("127.0.0.1", sink.port, "client.test", timeout=5)
            result = await client.send("a@here.test", ["b@x.test", "c@x.test"], BODY)
            assert client.closed
            with pytest.raises(SMTPProtocolError):
                await client.send("a@here.test", ["c@x.test"], BODY)
            await client.quit()
            return result

        result = run(go())
        assert [r.code for r in result.finals] == [421, 421] and result.data is None


def test_greeting_refused():
    with SMTPSink(greeting=Reply(554, "5.7.1", "Go away")) as sink:
        with pytest.raises(SMTPReplyError) as info:
            run(deliver(sink.port))
        assert info.value.stage == "greeting" and info.value.reply.code == 554


# --------------------------------------------------------- broken connections


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused():
    with pytest.raises(SMTPConnectError):
        run(deliver(free_port()))


async def raw_server(script: bytes | None):
    """A server that sends ``script`` and then listens; ``b""``: hangs up at once."""

    async def handle(reader, writer):
        if script:
            writer.write(script)
        if script != b"":
            await reader.read()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize(
    "script, error",
    [
        (None, SMTPConnectError),  # no greeting: timeout
        (b"", SMTPConnectError),  # hung up before greeting
        (b"hello there\r\n", SMTPProtocolError),
        (b"220-a\r\n250 b\r\n", SMTPProtocolError),
        (b"220 " + b"x" * 70000 + b"\r\n", SMTPProtocolError),
        (b"220 ok\r\n", SMTPTimeoutError),  # no answer to EHLO
    ],
)
def test_broken_peers(script, error):
    async def go():
        server = await raw_server(script)
        port = server.sockets[0].getsockname()[1]
        try:
            return await SMTPClient.connect("127.0.0.1", port, "c", timeout=0.5)
        finally:
            server.close()

    with pytest.raises(error):
        run(go())


def test_peer_hangs_up_mid_transaction():
    with SMTPSink(drop_on={"DATA"}) as sink, pytest.raises(SMTPProtocolError):
        run(deliver(sink.port, ("a@here.test", ["b@x.test"], BODY)))


def test_reply_timeout():
    with SMTPSink(reply_delay={"MAIL": 3}) as sink:

        async def go():
            client = await SMTPClient.connect("127.0.0.1", sink.port, "c", timeout=5)
            client.timeout = 0.3
            try:
                await client.send("a@here.test", ["b@x.test"], BODY)
            finally:
                await client.close()

        with pytest.raises(SMTPTimeoutError):
            run(go())


def test_no_command_injection_through_addresses(smtp_sink):
    with pytest.raises(ValueError):
        run(deliver(smtp_sink.port, ("a@here.test>\r\nRSET\r\nMAIL FROM:<x@y", ["b@x.test"], BODY)))
    assert smtp_sink.messages == []


# ------------------------------------------------------------ Postfix smtp-sink

SMTP_SINK = shutil.which("smtp-sink") or (
    "/usr/sbin/smtp-sink" if os.access("/usr/sbin/smtp-sink", os.X_OK) else None
)
needs_postfix = pytest.mark.skipif(
    SMTP_SINK is None, reason="needs smtp-sink from Debian package postfix"
)


@pytest.fixture
def postfix_sink(request) -> Iterator[tuple[int, Path]]:
    """``smtp-sink`` on a free loopback port, dumping messages into a directory."""
    extra: list[str] = getattr(request, "param", [])
    spool = Path(tempfile.mkdtemp(prefix="waypost-smtp-sink-"))
    cmd = [SMTP_SINK or "smtp-sink"]
    if os.geteuid() == 0:  # smtp-sink insists on dropping privileges
        user = "postfix" if _user_exists("postfix") else "nobody"
        cmd += ["-u", user]
        os.chown(spool, pwd.getpwnam(user).pw_uid, -1)
    port = free_port()
    cmd += ["-d", f"{spool}/%M.", *extra, f"127.0.0.1:{port}", "10"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"smtp-sink did not start: {proc.stderr.read()!r}") from None
                time.sleep(0.05)
        yield port, spool
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(spool, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _dumps(spool: Path, count: int) -> list[bytes]:
    deadline = time.monotonic() + 5
    while True:
        files = sorted(p for p in spool.iterdir() if p.is_file())
        if len(files) >= count or time.monotonic() > deadline:
            return [p.read_bytes() for p in files]
        time.sleep(0.05)


@pytest.mark.peer
@needs_postfix
def test_postfix_smtp_sink_receives_pipelined_messages(postfix_sink):
    port, spool = postfix_sink

    async def go():
        client = await SMTPClient.connect("127.0.0.1", port, "client.test", timeout=5)
        async with client:
            assert client.pipelining
            first = await client.send("a@here.test", ["b@x.test", "c@x.test"], BODY)
            second = await client.send(
                "", ["d@x.test"], b"Subject: bounce\r\n\r\nbody\r\n", MailParams(ret="HDRS")
            )
            return first, second

    first, second = run(go())
    assert first.delivered and second.delivered
    dumps = _dumps(spool, 2)
    assert len(dumps) == 2
    joined = b"\n".join(dumps)
    assert b"X-Helo-Args: client.test" in joined
    assert b"X-Mail-Args: <a@here.test>\n" in joined  # smtp-sink offers no SIZE: none sent
    assert b"X-Rcpt-Args: <b@x.test>\nX-Rcpt-Args: <c@x.test>\n" in joined
    assert b"X-Mail-Args: <> RET=HDRS\n" in joined  # DSN is offered
    # the body arrives un-stuffed, exactly as given (smtp-sink writes LF line ends)
    assert BODY.replace(b"\r\n", b"\n") in joined and b"...two" not in joined


@pytest.mark.peer
@needs_postfix
@pytest.mark.parametrize("postfix_sink", [["-f", "RCPT"]], indirect=True)
def test_postfix_smtp_sink_hard_rejects_recipients(postfix_sink):
    port, _ = postfix_sink

    async def go():
        client = await SMTPClient.connect("127.0.0.1", port, "client.test", timeout=5)
        async with client:
            assert not client.pipelining  # -f implies -p
            return await client.send("a@here.test", ["b@x.test", "c@x.test"], BODY)

    result = run(go())
    assert [r.code // 100 for r in result.finals] == [5, 5]
    assert result.data is None
