"""SMTP wire format on bytes: commands, paths, parameters, replies, DATA, smuggling."""

from __future__ import annotations

import random

import pytest

from waypost.protocols.smtp.wire import (
    DATA_END,
    MAX_LINE,
    CommandError,
    DataReader,
    LineBuffer,
    MailParams,
    RcptParams,
    Reply,
    ReplySyntaxError,
    allowed_params,
    dot_stuff,
    ehlo_keywords,
    parse_command,
    parse_mail,
    parse_rcpt,
    parse_reply,
    parse_reply_line,
    xtext_decode,
    xtext_encode,
)


def refused(fn, *args, **kw) -> Reply:
    with pytest.raises(CommandError) as info:
        fn(*args, **kw)
    return info.value.reply


# --------------------------------------------------------------------- commands


def test_command_verb_and_argument():
    cmd = parse_command(b"mail FROM:<a@b.c> SIZE=10\r\n")
    assert (cmd.verb, cmd.arg) == ("MAIL", "FROM:<a@b.c> SIZE=10")
    assert parse_command(b"QUIT\r\n").arg == ""
    assert parse_command(b"NOOP   \r\n").arg == ""
    assert parse_command(b"EHLO host\n").arg == "host"  # bare LF ending tolerated


def test_command_line_limit_counts_crlf():
    ok = b"NOOP " + b"x" * (MAX_LINE - 7) + b"\r\n"
    assert len(ok) == MAX_LINE
    parse_command(ok)
    reply = refused(parse_command, b"NOOP " + b"x" * (MAX_LINE - 6) + b"\r\n")
    assert reply.to_bytes() == b"500 5.5.2 Line too long\r\n"


@pytest.mark.parametrize(
    "line",
    [b"\r\n", b" MAIL\r\n", b"MA:L x\r\n", b"NOOP a\rb\r\n", b"NOOP \x00\r\n", b"NOOP \xff\r\n"],
)
def test_command_garbage(line):
    assert refused(parse_command, line).code == 500


def test_line_buffer_pipelining_and_overlong_line():
    buf = LineBuffer()
    buf.feed(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDA")
    assert buf.next_line() == b"MAIL FROM:<a@b>\r\n"
    assert buf.next_line() == b"RCPT TO:<c@d>\r\n"
    assert buf.next_line() is None
    buf.feed(b"TA\r\n")
    assert buf.next_line() == b"DATA\r\n"
    # an over-long line is swallowed in bounded memory, then reported once
    for _ in range(5):
        buf.feed(b"x" * 700)
        assert buf.next_line() is None
        assert len(buf) <= MAX_LINE + 700
    buf.feed(b"yyy\r\nNOOP\r\n")
    with pytest.raises(CommandError) as info:
        buf.next_line()
    assert info.value.reply.code == 500
    assert buf.next_line() == b"NOOP\r\n"
    buf.feed(b"x" * 1001 + b"\n")
    with pytest.raises(CommandError):
        buf.next_line()
    buf.feed(b"Subject: hi\r\n")
    assert buf.take_rest() == b"Subject: hi\r\n"
    assert buf.next_line() is None


# ------------------------------------------------------------------------ paths


@pytest.mark.parametrize(
    "arg, address",
    [
        ("FROM:<>", ""),
        ("FROM:<user@example.com>", "user@example.com"),
        ("from:<User@Example.COM>", "User@Example.COM"),
        ("FROM: <user@example.com>", "user@example.com"),
        ('FROM:<"john doe"@example.com>', '"john doe"@example.com'),
        ('FROM:<"a>b\\"c"@example.com>', '"a>b\\"c"@example.com'),
        ("FROM:<x@[127.0.0.1]>", "x@[127.0.0.1]"),
        ("FROM:<x@[IPv6:::1]>", "x@[IPv6:::1]"),
        ("FROM:<@relay.one,@relay.two:user@dom.com>", "@relay.one,@relay.two:user@dom.com"),
        ("FROM:<a%b@host._via>", "a%b@host._via"),
        ("FROM:<first.last+tag@sub-1.example.org>", "first.last+tag@sub-1.example.org"),
    ],
)
def test_mail_paths(arg, address):
    assert parse_mail(arg).address == address


@pytest.mark.parametrize(
    "arg",
    [
        "FROM:<a@b> SIZE=1",  # fine, used as control below
    ],
)
def test_mail_path_with_params_ok(arg):
    assert parse_mail(arg).params.size == 1


@pytest.mark.parametrize(
    "arg, code, enhanced",
    [
        ("FROM:user@example.com", 501, "5.5.4"),  # no angle brackets
        ("FROM <a@b>", 501, "5.5.4"),
        ("TO:<a@b>", 501, "5.5.4"),
        ("FROM:<a@b", 501, "5.5.4"),
        ("FROM:<a@b>SIZE=1", 501, "5.5.4"),
        ("FROM:<Postmaster>", 501, "5.1.7"),
        ("FROM:<user>", 501, "5.1.7"),
        ("FROM:<user@>", 501, "5.1.7"),
        ("FROM:<@example.com>", 501, "5.1.7"),
        ("FROM:<a b@example.com>", 501, "5.1.7"),
        ("FROM:<a@exa mple.com>", 501, "5.1.7"),
        ("FROM:<a@[1.2.3.999]>", 501, "5.1.7"),
        ("FROM:<a@[IPv6:zz]>", 501, "5.1.7"),
        ("FROM:<@[999.1.1.1]:a@b.c>", 501, "5.1.7"),
        ("FROM:<a@b..c>", 501, "5.1.7"),
        ('FROM:<"unterminated@b.c>', 501, "5.5.4"),
    ],
)
def test_mail_path_errors(arg, code, enhanced):
    reply = refused(parse_mail, arg)
    assert (reply.code, reply.enhanced) == (code, enhanced)


def test_rcpt_paths():
    assert parse_rcpt("TO:<bob@friend.com>").address == "bob@friend.com"
    assert parse_rcpt("TO: <bob@friend.com>").address == "bob@friend.com"
    assert parse_rcpt("TO:<Postmaster>").address == "Postmaster"
    assert parse_rcpt("to:<postmaster>").address == "postmaster"
    assert parse_rcpt("TO:<@a,@b:user@dom>").address == "@a,@b:user@dom"
    assert parse_rcpt('TO:<"x y"@dom>').address == '"x y"@dom'
    # a local part alone is a Main Domain address for the Router (CGP accepts it)
    assert parse_rcpt("TO:<bob>").address == "bob"
    assert parse_rcpt("TO:<evil.example!bob>").address == "evil.example!bob"
    assert parse_rcpt("TO:<bob@friend.com.>").address == "bob@friend.com."
    for bad in ("TO:<>", "TO:bob@friend.com", "TO:<@a:bob>", "TO:<a b>", "TO:<bob@x@y>"):
        reply = refused(parse_rcpt, bad)
        assert reply.code == 501, bad


def test_smtputf8_addresses():
    mail = parse_mail("FROM:<jörg@bücher.example> SMTPUTF8")
    assert mail.address == "jörg@bücher.example"
    assert mail.params.smtputf8
    reply = refused(parse_mail, "FROM:<jörg@bücher.example>")
    assert (reply.code, reply.enhanced) == (553, "5.6.7")
    assert parse_rcpt("TO:<用户@例子.广告>", smtputf8=True).address == "用户@例子.广告"
    assert refused(parse_rcpt, "TO:<用户@例子.广告>").code == 553


# ------------------------------------------------------------------- parameters


def test_mail_params_all():
    mail = parse_mail(
        "FROM:<a@b.c> SIZE=12345 BODY=8bitmime SMTPUTF8 RET=hdrs ENVID=QQ+2B314 AUTH=e+3Dmc2@x.y"
    )
    assert mail.params == MailParams(
        size=12345, body="8BITMIME", smtputf8=True, ret="HDRS", envid="QQ+314", auth="e=mc2@x.y"
    )
    assert parse_mail("FROM:<> AUTH=<>").params.auth == "<>"
    assert parse_mail("FROM:<a@b.c>   BODY=7BIT  ").params.body == "7BIT"


@pytest.mark.parametrize(
    "tail, code",
    [
        ("SIZE=abc", 501),
        ("SIZE", 501),
        ("SIZE=-1", 501),
        ("SIZE=1 SIZE=2", 501),
        ("BODY=BINARYMIME", 501),
        ("SMTPUTF8=yes", 501),
        ("RET=ALL", 501),
        ("ENVID=a+zz", 501),
        ("ENVID=" + "a" * 101, 501),
        ("AUTH=a+", 501),
        ("=x", 501),
        ("SIZE==1", 501),
        ("XFOO=1", 555),
        ("NOTIFY=NEVER", 555),
    ],
)
def test_mail_param_errors(tail, code):
    reply = refused(parse_mail, f"FROM:<a@b.c> {tail}")
    assert (reply.code, reply.enhanced) == (code, "5.5.4")


def test_mail_params_limited_to_advertised():
    reply = refused(parse_mail, "FROM:<a@b.c> SMTPUTF8", allowed={"SIZE"})
    assert reply.to_bytes() == b"555 5.5.4 Unsupported parameter SMTPUTF8\r\n"


def test_rcpt_params():
    rcpt = parse_rcpt("TO:<a@b.c> NOTIFY=delay,SUCCESS ORCPT=rfc822;a+2Bx@b.c")
    assert rcpt.params == RcptParams(notify=("SUCCESS", "DELAY"), orcpt=("rfc822", "a+x@b.c"))
    assert parse_rcpt("TO:<a@b.c> NOTIFY=NEVER").params.notify == ("NEVER",)
    assert parse_rcpt("TO:<a@b.c> ORCPT=utf-8;x\\x{00E9}@b.c").params.orcpt == (
        "utf-8",
        "x\\x{00E9}@b.c",
    )
    for tail, code in [
        ("NOTIFY=NEVER,SUCCESS", 501),
        ("NOTIFY=SUCCESS,SUCCESS", 501),
        ("NOTIFY=SOMETIMES", 501),
        ("NOTIFY=", 501),
        ("ORCPT=a@b.c", 501),
        ("ORCPT=rfc822;a+q", 501),
        ("SIZE=10", 555),
    ]:
        reply = refused(parse_rcpt, f"TO:<a@b.c> {tail}")
        assert (reply.code, reply.enhanced) == (code, "5.5.4"), tail


def test_params_to_args_only_what_the_server_offers():
    params = MailParams(body="8BITMIME", smtputf8=True, ret="FULL", envid="id 1", auth="<>")
    everything = {"SIZE", "8BITMIME", "SMTPUTF8", "DSN", "AUTH"}
    assert params.to_args(everything, size=99) == [
        "SIZE=99",
        "BODY=8BITMIME",
        "SMTPUTF8",
        "RET=FULL",
        "ENVID=id+201",
        "AUTH=<>",
    ]
    assert params.to_args(set(), size=99) == []
    rp = RcptParams(notify=("FAILURE",), orcpt=("rfc822", "a=b@c"))
    assert rp.to_args({"DSN"}) == ["NOTIFY=FAILURE", "ORCPT=rfc822;a+3Db@c"]
    assert rp.to_args({"SIZE"}) == []


def test_xtext():
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext_encode("é") == "+C3+A9"
    for value in ["", "plain", "x+y=z", "tab\there", "ünïcode", "<>"]:
        assert xtext_decode(xtext_encode(value)) == value
    assert xtext_decode("a+2bb") == "a+b"  # lower-case hex tolerated
    for bad in ["a+", "a+2", "a+GG", "a b", "a=b", "é"]:
        with pytest.raises(ValueError):
            xtext_decode(bad)


# ---------------------------------------------------------------------- replies


def test_reply_formatting():
    assert Reply(250, "2.1.0", "Sender OK").to_bytes() == b"250 2.1.0 Sender OK\r\n"
    assert bytes(Reply(354, "", "End data with <CR><LF>.<CR><LF>")).startswith(b"354 End")
    assert Reply(221).to_bytes() == b"221\r\n"
    ehlo = Reply(250, "", "mail.example greets you\nPIPELINING\nSIZE 1000\n8BITMIME")
    assert ehlo.to_bytes() == (
        b"250-mail.example greets you\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"
    )
    multi = Reply(550, "5.7.1", "Relaying\nprohibited")
    assert multi.to_bytes() == b"550-5.7.1 Relaying\r\n550 5.7.1 prohibited\r\n"
    assert multi.permanent and not multi.transient
    with pytest.raises(ValueError):
        Reply(600)
    with pytest.raises(ValueError):
        Reply(250, "2.0")


def test_reply_parsing_roundtrip():
    for reply in [
        Reply(250, "2.0.0", "OK"),
        Reply(250, "", "host\nPIPELINING\nSTARTTLS"),
        Reply(451, "4.3.0", "try\nagain later"),
        Reply(220, "", "ready"),
    ]:
        lines = reply.to_bytes().splitlines(keepends=True)
        assert parse_reply(lines) == reply
    assert parse_reply_line(b"250-SIZE 10\r\n") == (250, False, "SIZE 10")
    assert parse_reply_line(b"250\r\n") == (250, True, "")
    # a 2.x.x code under a 5xx reply is not an enhanced code of that reply
    assert parse_reply([b"550 2.0.0 odd\r\n"]).enhanced == ""
    for bad in [b"25\r\n", b"abc ok\r\n", b"250_ok\r\n", b"999 x\r\n"]:
        with pytest.raises(ReplySyntaxError):
            parse_reply_line(bad)
    with pytest.raises(ReplySyntaxError):
        parse_reply([b"250-a\r\n", b"251 b\r\n"])


def test_ehlo_keywords():
    reply = parse_reply(
        [b"250-sink\r\n", b"250-PIPELINING\r\n", b"250-SIZE 10240000\r\n", b"250 starttls\r\n"]
    )
    assert ehlo_keywords(reply) == {"PIPELINING": "", "SIZE": "10240000", "STARTTLS": ""}


# ------------------------------------------------------------------------- DATA


def read_all(stream: bytes, cuts: list[int] | None = None, **kw) -> DataReader:
    reader = DataReader(**kw)
    pieces = (
        [stream]
        if cuts is None
        else [stream[a:b] for a, b in zip([0, *cuts], [*cuts, None], strict=True)]
    )
    for piece in pieces:
        reader.feed(piece)
    return reader


def test_data_simple_and_unstuffing():
    r = read_all(b"Subject: x\r\n\r\n..leading dot\r\n.\r\n")
    assert r.done and r.body == b"Subject: x\r\n\r\n.leading dot\r\n"
    assert r.size == len(r.body) and r.leftover == b""
    r = read_all(b"..\r\n...\r\n.x\r\n.\r\n")
    assert r.body == b".\r\n..\r\nx\r\n"
    r = read_all(b".\r\n")
    assert r.done and r.body == b""
    r = read_all(b".\r\nQUIT\r\n")
    assert r.done and r.body == b"" and r.leftover == b"QUIT\r\n"


def test_data_leftover_is_pipelined_commands():
    r = read_all(b"body\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")
    assert r.body == b"body\r\n"
    assert r.leftover == b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
    assert r.feed(b"DATA\r\n") and r.leftover.endswith(b"DATA\r\n")


def test_data_not_done_without_terminator():
    reader = DataReader()
    assert not reader.feed(b"line\r\n")
    assert not reader.feed(b".")
    assert not reader.feed(b"\r")
    assert reader.feed(b"\n")
    assert reader.body == b"line\r\n"


SMUGGLING = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\r.\r\n",
    b"\n.\r",
    b"\r\n.\r\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n .\r\n",
]


@pytest.mark.parametrize("variant", SMUGGLING, ids=repr)
def test_smuggling_variants_do_not_end_data(variant):
    smuggled = b"MAIL FROM:<evil@attacker>\r\nRCPT TO:<victim@here>\r\nDATA\r\nSpoofed\r\n"
    stream = b"Subject: one\r\n\r\nfirst" + variant + smuggled + b".\r\nQUIT\r\n"
    expected = read_all(stream)
    assert expected.done
    assert expected.leftover == b"QUIT\r\n", "terminator found too early"
    assert b"evil@attacker" in expected.body
    # the same at every chunk boundary, and byte by byte
    for cut in range(1, len(stream)):
        r = read_all(stream, [cut])
        assert (r.body, r.leftover, r.bare_lf, r.bare_cr) == (
            expected.body,
            expected.leftover,
            expected.bare_lf,
            expected.bare_cr,
        ), cut
    for a in range(1, len(stream), 7):
        for b in range(a + 1, len(stream), 5):
            r = read_all(stream, [a, b])
            assert (r.body, r.leftover) == (expected.body, expected.leftover), (a, b)
    r = read_all(stream, list(range(1, len(stream))))
    assert (r.body, r.leftover) == (expected.body, expected.leftover)
    assert expected.has_bare_newlines or variant in (b"\r\n\x00.\r\n", b"\r\n .\r\n")


def test_terminator_at_every_chunk_boundary():
    stream = b"A: b\r\n\r\n..x\r\n\r\n.\r\nNOOP\r\n"
    for cut in range(0, len(stream) + 1):
        r = read_all(stream, [cut])
        assert r.done and r.body == b"A: b\r\n\r\n.x\r\n\r\n" and r.leftover == b"NOOP\r\n", cut
        r = read_all(stream, [cut, min(cut + 1, len(stream))])
        assert r.done and r.leftover == b"NOOP\r\n", cut


def test_bare_newlines_counted_and_normalised():
    stream = b"a\nb\rc\r\r\nd\r\n.\r\n"
    r = read_all(stream)
    assert (r.bare_lf, r.bare_cr) == (1, 2)
    assert r.body == b"a\nb\rc\r\r\nd\r\n"
    n = read_all(stream, normalize=True)
    assert n.body == b"a\r\nb\r\nc\r\n\r\nd\r\n"
    assert (n.bare_lf, n.bare_cr) == (1, 2)
    assert n.size == len(n.body)
    for cut in range(1, len(stream)):
        assert read_all(stream, [cut], normalize=True).body == n.body, cut


def test_size_limit_stops_storing_but_reads_to_end():
    body = b"x" * 50 + b"\r\n"
    r = read_all(body * 10 + b".\r\nQUIT\r\n", [100, 200], max_size=200)
    assert r.done and r.oversized
    assert r.size == len(body) * 10
    assert r.body == b""
    assert r.leftover == b"QUIT\r\n"
    ok = read_all(body * 4 + b".\r\n", max_size=len(body) * 4)
    assert not ok.oversized and ok.body == body * 4


def test_long_lines_flagged_once_each():
    line999 = b"y" * 998 + b"\r\n"
    line1001 = b"z" * 999 + b"\r\n"
    stream = line999 + line1001 + b"short\r\n" + line1001 + b".\r\n"
    assert read_all(stream).long_lines == 2
    for cut in (500, 1100, 1500, 2000):
        assert read_all(stream, [cut]).long_lines == 2
    # a giant unterminated line is flushed in pieces, counted once, memory bounded
    reader = DataReader(flush_at=4096)
    for _ in range(100):
        reader.feed(b"." + b"q" * 9999)
        assert len(reader._buf) <= 4096 + 10000
    reader.feed(b"\r\n.\r\n")
    assert reader.done and reader.long_lines == 1
    assert reader.size == 100 * 10000 - 1 + 2  # only the very first dot was stuffing


def test_take_streams_out_the_body():
    reader = DataReader()
    reader.feed(b"one\r\ntwo\r\n")
    first = reader.take()
    reader.feed(b"three\r\n.\r\n")
    assert first + reader.take() == b"one\r\ntwo\r\nthree\r\n"
    assert reader.body == b""


def test_dot_stuff():
    assert dot_stuff(b"") == b""
    assert dot_stuff(b"a") == b"a\r\n"
    assert dot_stuff(b".a\r\n.\r\nb\r\n") == b"..a\r\n..\r\nb\r\n"
    # bare newlines become CRLF so no peer can read a terminator we did not send
    assert dot_stuff(b"x\n.\ny") == b"x\r\n..\r\ny\r\n"
    assert dot_stuff(b"x\r.\rz") == b"x\r\n..\r\nz\r\n"


def test_dot_stuff_roundtrip_random():
    rng = random.Random(5321)
    alphabet = [b".", b"\r\n", b"a", b"..", b"\r\n.", b" ", b"\r\n.\r\n"]
    for _ in range(300):
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        if body and not body.endswith(b"\r\n"):
            body += b"\r\n"
        wire = dot_stuff(body) + DATA_END
        cuts = sorted(rng.sample(range(1, len(wire)), min(3, len(wire) - 1)))
        reader = read_all(wire + b"NEXT", cuts)
        assert reader.done and reader.body == body and reader.leftover == b"NEXT"


def test_allowed_params_follow_extensions():
    mail, rcpt = allowed_params(["PIPELINING", "SIZE 1000", "8BITMIME", "DSN", "SMTPUTF8"])
    assert mail == {"SIZE", "BODY", "RET", "ENVID", "SMTPUTF8"}
    assert rcpt == {"NOTIFY", "ORCPT"}
    assert allowed_params(["PIPELINING"]) == (frozenset(), frozenset())
