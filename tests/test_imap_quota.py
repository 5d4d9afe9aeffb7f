"""QUOTA (RFC 9208) over real sockets against a ``waypost serve`` process:
GETQUOTAROOT / GETQUOTA / SETQUOTA, usage in KB from the per-account total
kept by the store, the limit from the Directory (``MaxAccountSize``), and
enforcement: APPEND, COPY and MOVE over the limit answer ``NO [OVERQUOTA]``
and store nothing; EXPUNGE and DELETE give the room back; the total
survives a restart. STATUS DELETED-STORAGE (RFC 9208 §4.2) too.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.imap import Raw, append_cmd, tagged
from tests.support.server import WaypostServer

from waypost.protocols.imap import wire
from waypost.services.container import open_services
from waypost.storage.interface import OverQuota

PW = "quota-pw-1234"
DOMAIN = "quota.dom"
USERS = (
    "free",
    "small",
    "copier",
    "mover",
    "target",
    "snoop",
    "keeper",
    "racer",
    "webby",
    "static",
    "changer",
)
TIMEOUT_S = 30
_tags = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("quota") / "var").init()
    srv.cli("domain", "add", DOMAIN)
    for name in USERS:
        srv.cli("account", "add", f"{name}@{DOMAIN}", "--password", PW)
    for name in ("small", "copier", "mover", "target", "keeper", "webby", "static", "changer"):
        srv.cli("account", "set", f"{name}@{DOMAIN}", "MaxAccountSize", "10K")
    srv.cli("account", "add", f"boss@{srv.domain}", "--password", PW)
    srv.cli("account", "rights", f"boss@{srv.domain}", "AllDomains", "CanAccessMailboxes")
    srv.start()
    yield srv
    srv.stop()


def login(server: WaypostServer, user: str) -> Raw:
    raw = Raw(server.port("IMAPPort"))
    raw.login(user if "@" in user else f"{user}@{DOMAIN}", PW)
    return raw


def run(raw: Raw, text: str | bytes) -> list[bytes]:
    tag = f"q{next(_tags)}"
    lines = raw.cmd(tag, text)
    assert lines[-1].startswith(f"{tag} OK".encode()), lines
    return lines[:-1]


def refused(raw: Raw, text: str | bytes) -> bytes:
    tag = f"r{next(_tags)}"
    return tagged(raw.cmd(tag, text))[len(tag) + 1 :]


def message(size: int) -> bytes:
    head = b"Subject: quota\r\n\r\n"
    return head + b"x" * (size - len(head))


def append(mailbox: str, size: int) -> bytes:
    return append_cmd(mailbox, message(size))


def messages_in(raw: Raw, mailbox: str) -> int:
    (line,) = run(raw, f'STATUS "{mailbox}" (MESSAGES)')
    return int(line.rsplit(b" ", 1)[1].rstrip(b")"))


def test_capabilities(server: WaypostServer) -> None:
    raw = login(server, "free")
    caps = run(raw, "CAPABILITY")[0].split()
    assert b"QUOTA" in caps and b"QUOTA=RES-STORAGE" in caps
    assert b"QUOTASET" not in caps  # SETQUOTA is refused
    raw.close()


def test_unlimited_account_has_no_quota_root(server: WaypostServer) -> None:
    """RFC 9208 §4.1.2/§5.1: no limit, no root to report."""
    raw = login(server, "free")
    assert run(raw, "GETQUOTAROOT INBOX") == [b'* QUOTAROOT "INBOX"']
    assert refused(raw, 'GETQUOTA ""').startswith(b"NO [NONEXISTENT]")
    raw.close()


def test_getquotaroot_and_getquota_report_usage_in_kb(server: WaypostServer) -> None:
    """RFC 9208 §4.1.1-2, §5: usage in units of 1024 octets (rounded up),
    the limit from MaxAccountSize (10K = 10)."""
    raw = login(server, "small")
    assert run(raw, "GETQUOTAROOT INBOX") == [
        b'* QUOTAROOT "INBOX" ""',
        b'* QUOTA "" (STORAGE 0 10)',
    ]
    run(raw, append("INBOX", 3000))
    run(raw, 'CREATE "Work"')
    run(raw, append("Work", 1000))
    assert run(raw, 'GETQUOTA ""') == [b'* QUOTA "" (STORAGE 4 10)']  # 4000 octets -> 4
    assert run(raw, 'GETQUOTAROOT "Work"') == [
        b'* QUOTAROOT "Work" ""',
        b'* QUOTA "" (STORAGE 4 10)',
    ]
    assert refused(raw, 'GETQUOTAROOT "Nowhere"').startswith(b"NO [NONEXISTENT]")
    assert refused(raw, 'GETQUOTA "elsewhere"').startswith(b"NO [NONEXISTENT]")
    raw.close()


def test_append_over_the_limit_is_refused_and_stores_nothing(server: WaypostServer) -> None:
    """RFC 9208 §4.3 / RFC 5530: NO [OVERQUOTA]; the mailbox and the usage stay as they were."""
    raw = login(server, "keeper")
    run(raw, append("INBOX", 8000))
    before = run(raw, 'GETQUOTA ""')
    assert refused(raw, append("INBOX", 3000)).startswith(b"NO [OVERQUOTA]")
    assert messages_in(raw, "INBOX") == 1
    assert run(raw, 'GETQUOTA ""') == before
    run(raw, append("INBOX", 2000))  # exactly what is left still fits
    assert refused(raw, append("INBOX", 300)).startswith(b"NO [OVERQUOTA]")
    # EXPUNGE gives the room back; DELETED-STORAGE says how much it will be
    run(raw, "SELECT INBOX")
    run(raw, "STORE 1 +FLAGS (\\Deleted)")
    assert run(raw, 'STATUS "INBOX" (DELETED DELETED-STORAGE)') == [
        b'* STATUS "INBOX" (DELETED 1 DELETED-STORAGE 8000)'
    ]
    run(raw, "EXPUNGE")
    assert run(raw, 'GETQUOTA ""') == [b'* QUOTA "" (STORAGE 2 10)']
    run(raw, append("INBOX", 3000))
    raw.close()


def test_copy_and_move(server: WaypostServer) -> None:
    """COPY over the limit: NO [OVERQUOTA], nothing copied; one that fits
    works; MOVE inside the account needs no room; DELETE frees the room."""
    raw = login(server, "mover")
    run(raw, 'CREATE "Other"')
    run(raw, append("INBOX", 3000))
    run(raw, append("INBOX", 3000))
    run(raw, "SELECT INBOX")
    assert refused(raw, 'COPY 1:2 "Other"').startswith(b"NO [OVERQUOTA]")
    assert messages_in(raw, "Other") == 0
    assert refused(raw, 'UID COPY 1:* "Other"').startswith(b"NO [OVERQUOTA]")
    run(raw, 'COPY 1 "Other"')  # 9000 octets of 10240
    assert messages_in(raw, "Other") == 1
    assert refused(raw, 'COPY 2 "Other"').startswith(b"NO [OVERQUOTA]")
    lines = run(raw, 'MOVE 1:2 "Other"')  # no growth: allowed at the edge
    assert any(b"COPYUID" in line for line in lines)
    assert messages_in(raw, "Other") == 3 and messages_in(raw, "INBOX") == 0
    run(raw, "UNSELECT")
    run(raw, 'DELETE "Other"')
    assert run(raw, 'GETQUOTA ""') == [b'* QUOTA "" (STORAGE 0 10)']
    raw.close()


def test_move_into_another_account_counts_against_its_quota(server: WaypostServer) -> None:
    """A shared mailbox of another account: its owner's quota decides; a
    refused MOVE leaves the messages where they were."""
    owner = login(server, "target")
    run(owner, 'CREATE "Drop"')
    run(owner, f'SETACL "Drop" copier@{DOMAIN} lri')
    run(owner, append("INBOX", 9000))
    raw = login(server, "copier")
    run(raw, append("INBOX", 2000))
    run(raw, "SELECT INBOX")
    assert refused(raw, 'MOVE 1 "~target/Drop"').startswith(b"NO [OVERQUOTA]")
    assert messages_in(raw, "INBOX") == 1
    # the root of another account's mailbox is named, its quota is not shown
    assert run(raw, 'GETQUOTAROOT "~target/Drop"') == [
        f'* QUOTAROOT "~target/Drop" "~target@{DOMAIN}"'.encode()
    ]
    assert refused(raw, f'GETQUOTA "~target@{DOMAIN}"').startswith(b"NO [NOPERM]")
    run(owner, "SELECT INBOX")
    run(owner, "STORE 1 +FLAGS.SILENT (\\Deleted)")
    run(owner, "EXPUNGE")
    lines = run(raw, 'MOVE 1 "~target/Drop"')
    assert any(b"COPYUID" in line for line in lines)
    assert run(owner, 'GETQUOTA ""') == [b'* QUOTA "" (STORAGE 2 10)']
    owner.close()
    raw.close()


def test_administrator_reads_any_quota(server: WaypostServer) -> None:
    boss = login(server, f"boss@{server.domain}")
    lines = run(boss, f'GETQUOTA "~static@{DOMAIN}"')
    assert lines == [f'* QUOTA "~static@{DOMAIN}" (STORAGE 0 10)'.encode()]
    snoop = login(server, "snoop")
    assert refused(snoop, f'GETQUOTA "~static@{DOMAIN}"').startswith(b"NO [NOPERM]")
    boss.close()
    snoop.close()


def test_setquota_is_refused_and_bad_syntax_is_bad(server: WaypostServer) -> None:
    raw = login(server, "static")
    assert refused(raw, 'SETQUOTA "" (STORAGE 512)').startswith(b"NO [NOPERM]")
    assert refused(raw, 'SETQUOTA "" ()').startswith(b"NO [NOPERM]")
    for text in ('SETQUOTA "" (STORAGE)', 'SETQUOTA ""', 'SETQUOTA "" (STORAGE 1', "GETQUOTA",
                 "GETQUOTAROOT", 'GETQUOTA "" extra', 'SETQUOTA "" (STORAGE x)'):  # fmt: skip
        assert refused(raw, text).startswith(b"BAD"), text
    assert run(raw, 'GETQUOTA ""') == [b'* QUOTA "" (STORAGE 0 10)']  # unchanged
    raw.close()
    unauth = Raw(server.port("IMAPPort"))
    assert refused(unauth, 'GETQUOTA ""').startswith(b"BAD")  # not authenticated
    unauth.close()


def test_limit_changes_apply_at_once_and_usage_survives_restart(server: WaypostServer) -> None:
    raw = login(server, "changer")
    run(raw, append("INBOX", 4000))
    assert refused(raw, append("INBOX", 7000)).startswith(b"NO [OVERQUOTA]")
    server.cli("account", "set", f"changer@{DOMAIN}", "MaxAccountSize", "1M")
    run(raw, append("INBOX", 7000))
    assert run(raw, 'GETQUOTA ""') == [b'* QUOTA "" (STORAGE 11 1024)']
    server.cli("account", "set", f"changer@{DOMAIN}", "MaxAccountSize", "unlimited")
    assert run(raw, "GETQUOTAROOT INBOX") == [b'* QUOTAROOT "INBOX"']
    server.cli("account", "set", f"changer@{DOMAIN}", "MaxAccountSize", "20K")
    raw.close()
    server.stop()
    server.start()
    raw = login(server, "changer")
    assert run(raw, 'GETQUOTA ""') == [b'* QUOTA "" (STORAGE 11 20)']
    raw.close()


# -- fuzz target for the QUOTA parsers -------------------------------------------------------

QUOTA_PIECES = st.sampled_from([
    "GETQUOTA ", "GETQUOTAROOT ", "SETQUOTA ", "(", ")", " ", '"', '""', "STORAGE", "MESSAGE",
    "0", "512", "99999999999999999999", "-1", "x", "{2}\r\nab", "\x00", "é", "~a@b", "INBOX",
])  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(QUOTA_PIECES, max_size=14).map("".join))
def test_quota_parsers_fuzzed(text: str) -> None:
    """GETQUOTA/GETQUOTAROOT/SETQUOTA lines parse or are a ParseError; a
    parsed SETQUOTA holds upper-case resources and number64 limits."""
    try:
        command = wire.parse(b"f " + text.encode() + b"\r\n")
    except wire.ParseError:
        return
    if isinstance(command.args, wire.SetQuota):
        for resource, limit in command.args.limits:
            assert resource == resource.upper() and 0 <= limit <= wire.MAX_NUMBER64
    elif command.name == "GETQUOTA":
        assert isinstance(command.args, wire.QuotaRoot)


def test_concurrent_appends_never_overshoot_the_limit(server: WaypostServer) -> None:
    """Eight sessions APPEND 5000 octets at once to an account limited to
    20K (20480): exactly four fit; the others get NO [OVERQUOTA], whatever
    the interleaving (the store holds each write to the limit)."""
    server.cli("account", "set", f"racer@{DOMAIN}", "MaxAccountSize", "20K")
    sessions = [login(server, "racer") for _ in range(8)]
    start = threading.Barrier(len(sessions))
    answers: list[bytes] = []

    def one(raw: Raw, n: int) -> None:
        start.wait(timeout=TIMEOUT_S)
        answers.append(tagged(raw.cmd(f"c{n}", append("INBOX", 5000))))

    threads = [threading.Thread(target=one, args=(raw, n)) for n, raw in enumerate(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIMEOUT_S)
    assert len(answers) == 8
    assert sum(b" OK " in a for a in answers) == 4, answers
    assert sum(b" NO [OVERQUOTA]" in a for a in answers) == 4, answers
    assert messages_in(sessions[0], "INBOX") == 4
    assert run(sessions[0], 'GETQUOTA ""') == [b'* QUOTA "" (STORAGE 20 20)']
    for raw in sessions:
        raw.close()


def test_the_store_holds_each_write_to_max_usage(tmp_path: Path) -> None:
    """Store contract: with ``max_usage`` an APPEND, COPY or MOVE that would
    end above it raises OverQuota and writes nothing (the transaction rolls back)."""
    services = open_services(tmp_path / "var", create=True)
    try:
        services.directory.init_server("main.dom")
        services.directory.create_account("a")
        services.directory.create_account("b")
        store = services.store
        for account in ("a", "b"):
            store.mail_create_mailbox("main.dom", account, "Box")
        store.mail_append("main.dom", "a", "Box", message(3000), max_usage=3000)
        with pytest.raises(OverQuota):
            store.mail_append("main.dom", "a", "Box", message(10), max_usage=3000)
        with pytest.raises(OverQuota):
            store.mail_copy("main.dom", "a", "Box", None, "main.dom", "b", "Box", max_usage=2999)
        with pytest.raises(OverQuota):
            store.mail_move("main.dom", "a", "Box", None, "main.dom", "b", "Box", max_usage=2999)
        assert store.mail_usage("main.dom", "a") == 3000
        assert store.mail_usage("main.dom", "b") == 0
        assert len(store.mail_index("main.dom", "a", "Box")) == 1
        assert store.mail_index("main.dom", "b", "Box") == []
        store.mail_move("main.dom", "a", "Box", None, "main.dom", "b", "Box", max_usage=3000)
        assert (store.mail_usage("main.dom", "a"), store.mail_usage("main.dom", "b")) == (0, 3000)
        store.mail_delete_mailbox("main.dom", "b", "Box")
        assert store.mail_usage("main.dom", "b") == 0
    finally:
        services.close()


def test_the_mailboxes_page_shows_the_usage(server: WaypostServer) -> None:
    """WebUser's Mailboxes page: used and limit in KB, as GETQUOTA says;
    nothing for an unlimited account."""
    raw = login(server, "webby")
    run(raw, append("INBOX", 3000))
    raw.close()

    def page(user: str) -> str:
        with httpx.Client(base_url=server.url(), follow_redirects=False, timeout=30) as c:
            form = c.get("/")
            token = re.search(r'name="csrfToken" value="([^"]+)"', form.text)
            assert token, form.text[:300]
            done = c.post(
                "/login",
                data={"Username": f"{user}@{DOMAIN}", "Password": PW, "csrfToken": token.group(1)},
            )
            assert done.status_code == 303, done.text[:300]
            base = str(done.headers["location"]).rsplit("/", 1)[0] + "/"
            return c.get(base + "Mailboxes.wssp").text

    assert 'class="hint storage" data-used="3" data-limit="10"' in page("webby")
    assert 'class="hint storage"' not in page("free")
