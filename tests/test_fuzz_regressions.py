"""Crashes the fuzz targets found (issue 13 point 7), each replayed end to end
against a real ``waypost serve`` over real sockets.

* A Date header with a year past 9999 (``Mon, 7 Feb 11111111994 ...``), or
  one whose offset moves it past 9999-12-31, made ``parsedate_to_datetime``
  or ``astimezone`` raise ``OverflowError``: the webmail message list,
  message view and reply form of the mailbox holding such a message
  answered 500, so one message from anyone broke the mailbox in the web
  interface. Found by ``tests/fuzz/test_fuzz_mime.py`` (through IMAPClient's
  reading of our ENVELOPE) and ``tests/fuzz/test_fuzz_misc.py::test_dates``.
* The same overflow in ``If-Modified-Since`` answered 500 for a skin file or
  a personal site page; now the header is ignored (RFC 9110 §13.1.3: an
  invalid date is ignored).
* IMAP ``LOGIN`` refused an unquoted user name holding ``]`` with BAD,
  though ``]`` is an ASTRING-CHAR (RFC 3501 §9), so the serialiser's own
  atoms did not parse back (``tests/fuzz/test_fuzz_imap.py``, the astring
  round trip). Now such a login is checked like any other.
* A size setting of more than 4300 digits (``MaxAccountSize`` of an account
  is stored as typed) made ``int()`` raise a bare ValueError where callers
  expect SettingError: IMAP GETQUOTAROOT failed. Now such a size is
  unreadable, which the quota code already reads as 0
  (``tests/fuzz/test_fuzz_misc.py::test_setting_values``).
* The rules text parser recursed once per ``(``: a few thousand nested
  parentheses ended ``waypost rules set`` with a RecursionError traceback,
  and a ``#`` number of 5000 digits with int()'s bare ValueError. Both are
  now the parser's own error, with line and column
  (``tests/fuzz/test_fuzz_rules.py::test_rule_sets``).
* IMAP APPEND took a date-time whose UTC instant is past 9999 or before
  year 1 (``"31-Dec-9999 23:59:59 -2359"``); the message's INTERNALDATE
  could then never be written, and every FETCH naming it (``FETCH 1:*
  FAST``, as clients sync) answered NO [SERVERBUG]. Now APPEND answers BAD
  (``tests/fuzz/test_fuzz_imap.py::test_date_times``, storing round trip).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from tests.support.imap_raw import RawImap, append_command
from tests.support.server import WaypostServer
from tests.support.webuser import login_session

from waypost.services.container import open_services
from waypost.services.mailaccess.service import MailAccess

ALICE = "alice@main.dom"
PASSWORD = "fuzz-pw-1"
ARRIVAL = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)
HOSTILE_DATES = [
    "Mon, 7 Feb 11111111994 21:52:25 -0800",  # year past 9999
    "Fri, 31 Dec 9999 23:59:59 -0100",  # UTC is in year 10000
    "Mon, 7 Feb 99999999999999999999999 21:52:25 +0000",  # not even a C long
]


def message(subject: str, date: str) -> bytes:
    return (f"From: Bob <bob@remote.example>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
            f"Date: {date}\r\n\r\nHello.\r\n").encode()


@dataclass
class Web:
    server: WaypostServer
    uids: list[int]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url(), follow_redirects=False, timeout=30)

    def session(self, c: httpx.Client) -> str:
        return login_session(c, "alice", PASSWORD)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    data = tmp_path_factory.mktemp("fuzzregress") / "var"
    server = WaypostServer(data).init()
    server.cli("account", "add", "carol", "--password", PASSWORD)
    server.cli("account", "set", "carol", "MaxAccountSize", "9" * 5000)
    svc = open_services(data)
    try:
        svc.directory.create_account("alice", PASSWORD)
        svc.set_setting("LoginFailureLimit", "0")
        access = MailAccess(svc)
        access.ensure_inbox(ALICE)
        uids = [access.append(ALICE, "INBOX", message(f"hostile {i}", date), (), ARRIVAL).uid
                for i, date in enumerate(HOSTILE_DATES)]
    finally:
        svc.close()
    server.start()
    try:
        yield Web(server, uids)
    finally:
        server.stop()


def test_a_date_past_year_9999_does_not_break_the_message_list(web: Web) -> None:
    with web.client() as c:
        base = web.session(c)
        page = c.get(base + "Mailbox.wssp", params={"Mailbox": "INBOX"})
        assert page.status_code == 200, page.text[:300]
        for i in range(len(HOSTILE_DATES)):
            assert f"hostile {i}" in page.text
        assert page.text.count("2026-03-04 05:06") == len(HOSTILE_DATES)


@pytest.mark.parametrize("index", range(len(HOSTILE_DATES)))
def test_a_date_past_year_9999_does_not_break_the_message_or_the_reply(web: Web,
                                                                      index: int) -> None:
    uid = str(web.uids[index])
    with web.client() as c:
        base = web.session(c)
        view = c.get(base + "Message.wssp", params={"Mailbox": "INBOX", "UID": uid})
        assert view.status_code == 200, view.text[:300]
        assert f"hostile {index}" in view.text and "2026-03-04 05:06" in view.text
        reply = c.get(base + "Compose.wssp", params={"Mailbox": "INBOX", "UID": uid,
                                                    "Mode": "forward"})
        assert reply.status_code == 200, reply.text[:300]
        assert "2026-03-04 05:06" in reply.text


@pytest.mark.parametrize("value", [HOSTILE_DATES[0], HOSTILE_DATES[2]])
def test_an_if_modified_since_past_year_9999_is_ignored(web: Web, value: str) -> None:
    with web.client() as c:
        plain = c.get("/style.css")
        assert plain.status_code == 200 and plain.headers["Last-Modified"]
        hostile = c.get("/style.css", headers={"If-Modified-Since": value})
        assert hostile.status_code == 200
        assert hostile.content == plain.content
        fresh = c.get("/style.css", headers={"If-Modified-Since": plain.headers["Last-Modified"]})
        assert fresh.status_code == 304


def test_an_imap_user_name_with_a_bracket_is_a_login_not_a_syntax_error(web: Web) -> None:
    c = RawImap(web.server.port("IMAPPort"))
    try:
        assert c.cmd("a1", "LOGIN ali]ce wrong")[-1].startswith(b"a1 NO ")
        assert c.cmd("a2", "LOGIN ]alice] " + PASSWORD)[-1].startswith(b"a2 NO ")
        assert c.cmd("a3", "LOGIN alice " + PASSWORD)[-1].startswith(b"a3 OK ")
    finally:
        c.sock.close()


def test_an_account_size_of_5000_digits_is_read_as_no_room(web: Web) -> None:
    c = RawImap(web.server.port("IMAPPort"))
    try:
        assert c.cmd("a1", "LOGIN carol " + PASSWORD)[-1].startswith(b"a1 OK ")
        lines = c.cmd("a2", "GETQUOTAROOT INBOX")
        assert lines[-1].startswith(b"a2 OK "), lines
        assert b'* QUOTA "" (STORAGE 0 0)' in lines, lines
    finally:
        c.sock.close()


@pytest.mark.parametrize(("text", "reason"), [
    ("(" * 3000 + ")" * 3000, "line 1, column 101: nested deeper than 100 levels"),
    ("( #" + "9" * 5000 + ", a, (), () )", "line 1, column 3: number too long"),
])
def test_hostile_rule_text_is_refused_with_its_place(tmp_path: Path, text: str,
                                                     reason: str) -> None:
    server = WaypostServer(tmp_path / "var").init()
    done = server.cli("rules", "set", "-", input=text, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-500:]
    assert done.stderr.strip() == f"error: rules not changed: {reason}"


@pytest.mark.parametrize("when", ["31-Dec-9999 23:59:59 -2359", "01-Jan-0001 00:00:00 +0001"])
def test_an_append_date_outside_the_utc_calendar_is_refused(web: Web, when: str) -> None:
    c = RawImap(web.server.port("IMAPPort"))
    try:
        assert c.cmd("a1", "LOGIN alice " + PASSWORD)[-1].startswith(b"a1 OK ")
        box = f"Dates{when[-4:]}"
        assert c.cmd("a2", f"CREATE {box}")[-1].startswith(b"a2 OK ")
        message = b"Subject: when\r\n\r\nx\r\n"
        command = append_command(box, message).replace(b"() {", f'() "{when}" {{'.encode())
        assert c.cmd("a3", command)[-1].startswith(b"a3 BAD Invalid date-time")
        assert c.cmd("a4", append_command(box, message))[-1].startswith(b"a4 OK ")
        assert c.cmd("a5", f"SELECT {box}")[-1].startswith(b"a5 OK ")
        fetched = c.cmd("a6", "FETCH 1:* FAST")
        assert fetched[-1].startswith(b"a6 OK ") and len(fetched) == 2, fetched
    finally:
        c.sock.close()
