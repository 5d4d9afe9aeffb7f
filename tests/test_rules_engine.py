"""Rule evaluation (rules.md §2-§5): every condition, every action, pictures,
missing values, Any/Each, encoded words, priorities and Stop Processing --
on the pure engine, plus what the actions do to bytes."""

from __future__ import annotations

import datetime as dt
import email
import sys
from email import policy
from pathlib import Path

import pytest

from waypost.services.rules import actions
from waypost.services.rules.engine import (
    LOOP_HEADER,
    Decision,
    MessageView,
    compile_rules,
    evaluate,
    picture_matches,
)
from waypost.services.rules.enqueue import loop_reason, sources
from waypost.services.rules.model import Level, Rule
from waypost.services.rules.text import parse_rules

MONDAY_NOON = dt.datetime(2024, 1, 15, 12, 30, 0)  # a Monday

MESSAGE = (
    b"Received: from client ([192.0.2.1])\r\n\tby main.dom (Waypost); now\r\n"
    b"From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.com>\r\n"
    b"Sender: secretary@example.com\r\n"
    b"Reply-To: replies@example.com\r\n"
    b"To: Alice <alice@main.dom>, bob@other.dom\r\n"
    b"Cc: carol@main.dom\r\n"
    b"Subject: =?UTF-8?B?0J/RgNC40LLQtdGCLCDQvNC40YAh?=\r\n"
    b"Message-ID: <abc.123@example.com>\r\n"
    b"X-Spam-Flag: YES\r\n"
    b"X-Long: first part\r\n\tsecond part\r\n"
    b"\r\n"
    b"Body text.\r\n"
)


def view(body: bytes = MESSAGE, **kw: object) -> MessageView:
    kw.setdefault("mail_from", "juergen@example.com")
    kw.setdefault("recipients", ["alice@main.dom", "bob@other.dom"])
    kw.setdefault("routes", ["LOCAL(alice@main.dom)", "SMTP(other.dom)bob@other.dom"])
    kw.setdefault("sources", {"smtp", "client", "trusted"})
    kw.setdefault("submit_address", "192.168.1.20")
    kw.setdefault("now", MONDAY_NOON)
    return MessageView.of_message(body, **kw)


def rules_of(text: str, level: Level = Level.SERVER):
    return compile_rules((level, r) for r in parse_rules(text, level))


def run(text: str, v: MessageView | None = None, level: Level = Level.SERVER) -> Decision:
    return evaluate(rules_of(text, level), v or view())


def met(
    data: str, op: str, param: str, v: MessageView | None = None, level: Level = Level.SERVER
) -> bool:
    text = f'(5, "t", (("{data}", "{op}", "{param}")), (("Write To Log", "hit")))'
    return run(text, v, level).matched == ["t"]


# -- pictures ----------------------------------------------------------------------


def test_pictures_star_any_run_rest_literal_case_insensitive() -> None:
    assert picture_matches("*@example.com", "Juergen@EXAMPLE.com")
    assert picture_matches("*text*", "some text here")
    assert picture_matches("*", "")
    assert not picture_matches("*@example.com", "x@example.com.evil")
    assert picture_matches("a.b", "A.B") and not picture_matches("a.b", "aXb")  # '.' is literal
    assert picture_matches("[x]*", "[X] y")  # brackets are literal too


def test_in_lists_ignore_spaces_around_commas() -> None:
    assert met("Return-Path", "in", "nobody@x,  *@EXAMPLE.COM ,other@y")
    assert not met("Return-Path", "not in", "nobody@x , *@example.com")


# -- every condition --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "op", "param", "expected"),
    [
        ("From", "is", "juergen@example.com", True),
        ("From", "is", "*@other.com", False),
        ("From", "is not", "*@other.com", True),
        ("Sender", "is", "secretary@*", True),
        ("Return-Path", "is", "*@example.com", True),
        ("To", "is", "bob@other.dom", True),
        ("To", "in", "x@y,alice@main.dom", True),
        ("To", "is not", "carol@main.dom", True),
        ("To", "is not", "alice@main.dom", False),  # negation: none of them may match
        ("Cc", "is", "carol@*", True),
        ("Cc", "is", "alice@*", False),
        ("Any To or Cc", "is", "carol@main.dom", True),
        ("Any To or Cc", "is not", "*@main.dom", True),  # bob@other.dom is not
        ("Each To or Cc", "is", "*.dom", True),
        ("Each To or Cc", "is", "*@main.dom", False),
        ("Reply-To", "is", "replies@example.com", True),
        ("'From' Name", "is", "Jürgen Müller", True),
        ("'From' Name", "is", "*MÜLLER", True),
        ("Subject", "is", "Привет, мир!", True),
        ("Subject", "is", "*мир*", True),
        ("Message-ID", "is", "<*@example.com>", True),
        ("Message Size", "greater than", "100", True),
        ("Message Size", "less than", "1K", True),
        ("Message Size", "greater than", "1M", False),
        ("Header Field", "is", "X-Spam-Flag: YES", True),
        ("Header Field", "is", "x-spam-flag: *", True),
        ("Header Field", "is not", "X-Spam-Status*", True),
        ("Header Field", "is not", "X-Spam-Flag*", False),
        ("Header Field", "is", "X-Long: first part second part", True),  # unfolded
        ("Header Field", "is", "Subject: Привет*", True),  # decoded
        ("Any Recipient", "is", "bob@other.dom", True),
        ("Any Recipient", "not in", "*@main.dom", True),
        ("Each Recipient", "in", "*@main.dom,*@other.dom", True),
        ("Each Recipient", "is", "*@main.dom", False),
        ("Human Generated", "is", "true", True),
        ("Human Generated", "is", "false", False),
        ("Time Of Day", "greater than", "12:00", True),
        ("Time Of Day", "less than", "12:00", False),
        ("Time Of Day", "less than", "1:00 pm", True),
        ("Time Of Day", "is", "12:30:*", True),
        ("Current Date", "greater than", "2024-01-01", True),
        ("Current Date", "less than", "15 Jan 2024", False),
        ("Current Date", "is", "2024-01-15", True),
        ("Current Day", "is", "Mon", True),
        ("Current Day", "is", "Mon,Tue", True),  # rules.md's example
        ("Current Day", "in", "Sat,Sun", False),
        ("Current Day", "not in", "Sat,Sun", True),
        ("FreeBusy", "is", "busy", False),  # out of scope: always missing
        ("FreeBusy", "is not", "busy", True),
        ("Security", "is", "signed", False),
        ("Source", "in", "trusted,authenticated", True),
        ("Source", "is", "client", True),
        ("Source", "is", "authenticated", False),
        ("Source", "is not", "local", True),
        ("Submit Address", "in", "192.168.0.0-192.168.255.255", True),
        ("Submit Address", "in", "10.0.0.0/8, 192.168.1.0/24", True),
        ("Submit Address", "in", "10.0.0.0/8", False),
        ("Submit Address", "is", "192.168.1.*", True),
        ("Submit Address", "not in", "192.168.1.20", False),
        ("Any Route", "is", "SMTP*", True),
        ("Each Route", "is", "LOCAL*", False),
        ("Any Route", "is", "LOCAL(alice@main.dom)", True),
    ],
)
def test_every_condition(data: str, op: str, param: str, expected: bool) -> None:
    assert met(data, op, param) is expected


def test_each_route_local_when_every_recipient_stays() -> None:
    v = view(routes=["LOCAL(alice@main.dom)", "LOCAL(carol@main.dom)"])
    assert met("Each Route", "is", "LOCAL*", v)
    assert not met("Any Route", "is", "SMTP*", v)


def test_security_signed_and_encrypted() -> None:
    signed = b'Content-Type: multipart/signed; protocol="application/pgp-signature"\r\n\r\nx'
    assert met("Security", "is", "signed", view(signed))
    encrypted = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nx"
    assert met("Security", "is", "encrypted", view(encrypted))


def test_human_generated_heuristic() -> None:
    assert met("Human Generated", "is", "false", view(mail_from=""))
    assert met("Human Generated", "is", "false", view(b"Precedence: bulk\r\nSubject: x\r\n\r\n"))
    assert met("Human Generated", "is", "false", view(b"Auto-Submitted: auto-replied\r\n\r\n"))
    assert met("Human Generated", "is", "true", view(b"Auto-Submitted: no\r\n\r\n"))
    assert met("Human Generated", "is", "false", view(b"List-Id: <l.x>\r\n\r\n"))


def test_preference_and_existing_mailbox_at_account_level() -> None:
    v = view(
        preferences={"Language": "german", "RulesAllowed": "Filter Only"},
        mailbox_exists=lambda name: name in ("Junk", "INBOX"),
    )
    assert met("Preference", "is", "language=Ger*", v, Level.ACCOUNT)
    assert met("Preference", "in", "Language=french, german", v, Level.ACCOUNT)
    assert not met("Preference", "is", "Missing=*", v, Level.ACCOUNT)
    assert met("Preference", "is not", "Missing=*", v, Level.ACCOUNT)  # missing value
    assert met("Existing Mailbox", "is", "Junk", v, Level.ACCOUNT)
    assert not met("Existing Mailbox", "is", "Spam", v, Level.ACCOUNT)
    assert met("Existing Mailbox", "is not", "Spam", v, Level.ACCOUNT)
    assert met("Existing Mailbox", "in", "Spam, Junk", v, Level.ACCOUNT)


@pytest.mark.parametrize(
    "data", ["From", "Sender", "Reply-To", "'From' Name", "Subject", "Message-ID"]
)
def test_a_missing_value_meets_only_is_not_and_not_in(data: str) -> None:
    bare = view(b"X-Other: 1\r\n\r\nbody\r\n")
    assert not met(data, "is", "*", bare)
    assert not met(data, "in", "*", bare)
    assert met(data, "is not", "*", bare)
    assert met(data, "not in", "a,b", bare)


def test_missing_multi_values() -> None:
    bare = view(b"X-Other: 1\r\n\r\nbody\r\n")
    assert not met("To", "is", "*", bare) and met("To", "is not", "*", bare)
    assert not met("Any To or Cc", "is", "*", bare) and met("Any To or Cc", "not in", "x", bare)
    assert not met("Each To or Cc", "is", "*", bare)
    assert not met("Each To or Cc", "is not", "x", bare)  # Each needs one element
    assert met("Submit Address", "is not", "*", view(submit_address=None))


def test_encoded_words_and_raw_utf8_headers() -> None:
    raw = 'Subject: Grüße aus Köln\r\nFrom: "Renée" <renee@example.fr>\r\n\r\nx'.encode()
    v = view(raw)
    assert met("Subject", "is", "*grüße*", v)
    assert met("'From' Name", "is", "Renée", v)
    split = b"Subject: =?ISO-8859-1?Q?Gr=FC=DFe?= =?UTF-8?B?INCc0LjRgA==?=\r\n\r\nx"
    assert met("Subject", "is", "Grüße Мир", view(split))
    broken = b"Subject: =?UTF-8?B?not base64!?=\r\n\r\nx"  # never raises
    assert met("Subject", "is", "*not base64*", view(broken))
    latin1 = b"Subject: caf\xe9\r\n\r\nx"  # invalid UTF-8 survives as a replacement char
    assert met("Subject", "is", "caf*", view(latin1))


def test_routes_and_sources_values() -> None:
    assert sources("ESMTPA", True, "ann@dept1", False) == {"smtp", "authenticated", "trusted"}
    assert sources("ESMTP", True, None, True) == {"smtp", "client", "trusted"}
    assert sources("ESMTP", False, None, False) == {"smtp"}
    assert sources("LOCAL", True, None, False) == {"local", "trusted"}
    assert sources("RULES", True, None, False) == {"local", "trusted", "rules"}


# -- every action --------------------------------------------------------------------------


def test_store_in_mark_discard() -> None:
    d = run(
        '(5, a, (), (("Store in", "Junk"), ("Mark", "Seen, Flagged, Junk, Label2, Custom"),'
        ' ("Discard")))',
        level=Level.ACCOUNT,
    )
    assert [s.mailbox for s in d.store] == ["Junk"]
    assert d.store[0].level is Level.ACCOUNT
    assert d.flags == ["\\Seen", "\\Flagged", "$Junk", "$Label2", "Custom"]
    assert d.discard and not d.stopped and d.reject is None


def test_add_header_is_seen_by_later_rules() -> None:
    d = run(
        '((9, first, (), (("Add Header", "X-Checked: yes\\eX-Second: ü"))),'
        ' (5, second, (("Header Field", "is", "X-Checked: yes")), (("Mark", "Flagged"))))'
    )
    assert d.headers == ["X-Checked: yes", "X-Second: ü"]
    assert d.matched == ["first", "second"] and d.flags == ["\\Flagged"]


def test_tag_subject_once_and_seen_by_later_rules() -> None:
    d = run(
        '((9, a, (), (("Tag Subject", "[SPAM]"))), (8, b, (), (("Tag Subject", "[spam]"))),'
        ' (7, c, (("Subject", "is", "[SPAM] Привет*")), (("Mark", "Junk"))))'
    )
    assert d.tags == ["[SPAM]"]  # not twice: already present (case-insensitive)
    assert d.flags == ["$Junk"]


def test_sending_actions_are_decided_not_done() -> None:
    d = run(
        '(5, a, (), (("Redirect to", "x@y.com, z@w.com"), ("Forward to", "<f@g.com>"),'
        ' ("Mirror to", "archive@main.dom"), ("Reply with", "Away\\eBack Monday"),'
        ' ("Reply to All with", "Thanks")))'
    )
    assert [(g.kind, g.targets) for g in d.generate] == [
        ("redirect", ("x@y.com", "z@w.com")),
        ("forward", ("f@g.com",)),
        ("mirror", ("archive@main.dom",)),
        ("reply", ()),
        ("reply-all", ()),
    ]
    assert d.generate[3].text == "Away\nBack Monday"


def test_reject_execute_write_to_log_and_unsupported_actions() -> None:
    d = run(
        '(5, a, (), (("Reject with", "Go away"), ("Execute", "[FILE] /bin/true"),'
        ' ("Write To Log", "seen it"), ("FingerNotify", "host"), ("SendIM", "x"),'
        ' ("React with", "r"), ("Remember \'From\' in", "book"), ("Reject with", "2nd")))'
    )
    assert d.reject == "Go away" and d.reject_rule == "a"  # the first one counts
    assert [e.command for e in d.execute] == ["[FILE] /bin/true"]
    assert d.log[0] == "rule 'a': seen it"
    assert all("not supported" in line for line in d.log[1:]) and len(d.log) == 5


# -- several rules: priority, order, Stop Processing -----------------------------------------


def test_priority_order_and_stop_processing() -> None:
    text = """(
      (1, "low", (), (("Mark", "Label1"))),
      (Highest, "top", (), (("Mark", "Label2"))),
      (5, "five-a", (("Subject", "is", "*мир*")), (("Mark", "Label3"))),
      (5, "five-b", (), (("Mark", "Label4"), ("Stop Processing"))),
      (9, "nine", (("From", "is", "nobody@*")), (("Mark", "Label5"))),
      (0, "inactive", (), (("Reject with", "never"))) )"""
    d = run(text)
    assert d.matched == ["top", "five-a", "five-b"]  # nine not met; low after the stop
    assert d.flags == ["$Label2", "$Label3", "$Label4"]
    assert d.stopped and d.reject is None


def test_discard_does_not_stop_but_stop_processing_does() -> None:
    d = run(
        '((9, a, (), (("Discard"))), (8, b, (), (("Store in", "~x/y"))),'
        ' (7, c, (), (("Stop Processing"))), (6, d, (), (("Store in", "~x/z"))))'
    )
    assert d.discard and [s.mailbox for s in d.store] == ["~x/y"]
    assert d.matched == ["a", "b", "c"]


def test_domain_rules_before_account_rules_at_equal_priority() -> None:
    dom = parse_rules('(5, "dom", (), (("Mark", "Label1")))', Level.DOMAIN)
    acc = parse_rules(
        '((5, "acc", (), (("Mark", "Label2"))), (7, "acc7", (), (("Mark", "Seen"))))', Level.ACCOUNT
    )
    compiled = compile_rules([(Level.DOMAIN, r) for r in dom] + [(Level.ACCOUNT, r) for r in acc])
    d = evaluate(compiled, view())
    assert d.matched == ["acc7", "dom", "acc"]


def test_all_conditions_must_be_met() -> None:
    text = '(5, a, (("From", "is", "*@example.com"), ("Subject", "is", "nope")), (("Discard")))'
    assert not run(text).matched
    assert run('(5, a, (), (("Discard")))').matched == ["a"]  # no conditions: always


# -- what actions do to bytes ------------------------------------------------------------------


def test_rewrite_adds_headers_and_tags_the_encoded_subject() -> None:
    out = actions.rewrite(MESSAGE, ["X-Rule: ok", "X-Name: Jürgen"], ["[SPAM]"])
    assert out.startswith(b"X-Rule: ok\r\nX-Name: =?utf-8?")
    msg = email.message_from_bytes(out, policy=policy.default)
    assert str(msg["Subject"]) == "[SPAM] Привет, мир!"
    assert str(msg["X-Name"]) == "Jürgen"
    assert out.endswith(b"\r\n\r\nBody text.\r\n")
    assert out.count(b"Subject:") == 1
    no_subject = actions.rewrite(b"From: a@b\r\n\r\nx", [], ["[T]"])
    assert no_subject.startswith(b"Subject: [T]\r\nFrom: a@b")


def test_delivery_edit_keeps_the_blob_and_omits_the_old_subject() -> None:
    prefix, omit = actions.delivery_edit(MESSAGE, ["X-A: 1"], ["[X]", "[Y]"])
    assert prefix.startswith(b"X-A: 1\r\nSubject: [Y] [X] =?UTF-8?B?")
    ((start, end),) = omit
    assert MESSAGE[start:end].startswith(b"Subject:")


def test_forward_and_reply_bodies() -> None:
    v = view()
    fwd = actions.forward_body(
        MESSAGE,
        v,
        owner_address="alice@main.dom",
        hostname="main.dom",
        to=["f@g.com"],
        owner="alice@main.dom",
    )
    msg = email.message_from_bytes(fwd, policy=policy.default)
    assert msg["From"] == "alice@main.dom" and msg["To"] == "f@g.com"
    assert str(msg["Subject"]) == "Fwd: Привет, мир!"
    assert msg[LOOP_HEADER] == "alice@main.dom"
    attached = [p for p in msg.walk() if p.get_content_type() == "message/rfc822"]
    assert attached and MESSAGE.replace(b"\r\n", b"\n") in fwd.replace(b"\r\n", b"\n")
    reply = actions.reply_body(
        v,
        "I am away.\nBack soon.",
        owner_address="alice@main.dom",
        hostname="main.dom",
        to=["juergen@example.com"],
        owner="alice@main.dom",
    )
    msg = email.message_from_bytes(reply, policy=policy.default)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == "<abc.123@example.com>"
    assert str(msg["Subject"]) == "Re: Привет, мир!"
    assert msg.get_content().replace("\r\n", "\n").strip() == "I am away.\nBack soon."
    assert actions.reply_targets(v, True, "alice@main.dom") == [
        "juergen@example.com",
        "bob@other.dom",
        "carol@main.dom",
    ]


def test_no_automatic_reply_to_null_list_or_automatic_senders() -> None:
    assert actions.may_auto_reply(view()) is None
    assert "null" in actions.may_auto_reply(view(mail_from=""))
    assert actions.may_auto_reply(view(mail_from="owner-list@x.org")) is not None
    assert actions.may_auto_reply(view(mail_from="news-request@x.org")) is not None
    assert actions.may_auto_reply(view(b"Precedence: list\r\n\r\n")) is not None
    assert actions.may_auto_reply(view(b"Auto-Submitted: auto-replied\r\n\r\n")) is not None


def test_loop_reasons() -> None:
    v = view()
    assert loop_reason("alice@main.dom", v, []) is None
    assert "already generated" in loop_reason("alice@main.dom", v, ["alice@main.dom"])
    marked = view(f"{LOOP_HEADER}: ALICE@main.dom\r\n".encode() + MESSAGE)
    assert "already generated" in loop_reason("alice@main.dom", marked, [])
    assert "owners" in loop_reason("z@z", v, ["a", "b", "c", "d", "e"])


def test_execute_runs_the_program_with_the_message(tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = tmp_path / "scan.py"
    script.write_text(
        "import sys\n"
        "data = open(sys.argv[2], 'rb').read() if len(sys.argv) > 2 else sys.stdin.buffer.read()\n"
        f"open({str(out)!r}, 'wb').write(data)\n"
        "sys.stderr.write('scanned')\n"
    )
    code = actions.run_execute(
        f"[STDERR] [FILE] [RETPATH] [RCPT] {sys.executable} {script} x",
        b"Subject: s\r\n\r\nbody\r\n",
        "a@b.c",
        ["r1@x", "r2@y"],
        rule="t",
    )
    assert code == 0
    assert out.read_bytes() == (
        b"Return-Path: <a@b.c>\r\nEnvelope-To: r1@x\r\n"
        b"Envelope-To: r2@y\r\nSubject: s\r\n\r\nbody\r\n"
    )
    code = actions.run_execute(f"{sys.executable} {script}", b"plain", "", [], rule="t")
    assert code == 0 and out.read_bytes() == b"plain"
    assert actions.run_execute("/nonexistent/program", b"", "", [], rule="t") is None


def test_rules_with_no_active_rules_compile_to_nothing() -> None:
    assert not compile_rules([(Level.SERVER, Rule(0, "off", (), ()))])


def test_the_rejecting_rule_is_named_even_when_later_rules_match() -> None:
    d = run('((9, "refuse", (), (("Reject with", "No"))), (5, "later", (), (("Mark", "Seen"))))')
    assert d.matched == ["refuse", "later"] and d.reject_rule == "refuse"
