"""A UID names one message of one UIDVALIDITY, for good (RFC 3501 §2.3.1.1).

The model-based run (``test_imap_concurrency.py``) flagged, about once in a
dozen runs, "new UID 248 of UIDVALIDITY v is not above UID 247 known before".
Two causes, both fixed here:

* the checker: it held against a new UID every expunge it knew of *when the
  tagged OK was read*, also expunges another session saw after the command
  was sent. The server commits a COPY/APPEND, another session meets the new
  message (EXISTS, FETCH) and expunges it, and only then does this session
  read its ``[COPYUID ...]``: correct, yet flagged. The floor in that message
  (247, below the UID) shows it: the UID was not known before the command;
* the server: COPY and MOVE read the target's UIDVALIDITY for COPYUID after
  the copying transaction, so a RENAME (or DELETE + CREATE) of the target
  name landing in between made COPYUID pair the new UIDs with the UIDVALIDITY
  of the mailbox that took the name (RFC 4315 §3): over the wire, one
  session's COPYUIDs of one UIDVALIDITY went backwards (5, then 4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from tests.support.imap_model import Client, SessionModel, World, transcript, uid_set
from tests.support.server import WaypostServer

from waypost.services.container import Services
from waypost.services.mailaccess.errors import TryCreate
from waypost.services.mailaccess.service import MailAccess

PW = "unique-pw-1234"
DOMAIN = "uid.dom"
USER = "copier"
MSG = b"Subject: u\r\n\r\nu\r\n"


# -- the server: COPYUID names the incarnation that got the copies ---------------------------


def _replaced_after(
    real: Callable[..., object], replace: Callable[[], None]
) -> Callable[..., object]:
    """The store call, then another session's change: it lands between the
    copy's transaction and the service's answer."""

    def run(*args: object, **kwargs: object) -> object:
        found = real(*args, **kwargs)
        replace()
        return found

    return run


@pytest.mark.parametrize("move", [False, True], ids=["COPY", "MOVE"])
def test_copyuid_names_the_incarnation_that_got_the_copies(
    svc: Services, monkeypatch: pytest.MonkeyPatch, move: bool
) -> None:
    """Before the fix the answer named ``Other``'s UIDVALIDITY, whose UID 1 is
    another message: a client's cache would have mixed the two up."""
    user = "alice@main.dom"
    access = MailAccess(svc)
    access.ensure_inbox(user)
    for name in ("Box", "Other"):
        access.create(user, name)
    access.append(user, "Other", b"Subject: other\r\n\r\nother\r\n")
    access.append(user, "INBOX", MSG)
    box = access.select(user, "Box", examine=True).uidvalidity
    other = access.select(user, "Other", examine=True).uidvalidity
    sel = access.select(user, "INBOX", examine=False)

    def rename_twice() -> None:  # the copies go with Box; Other takes its name
        access.rename(user, "Box", "Away")
        access.rename(user, "Other", "Box")

    op = "mail_move" if move else "mail_copy"
    monkeypatch.setattr(svc.store, op, _replaced_after(getattr(svc.store, op), rename_twice))
    copied = access.copy(user, sel.opened, list(sel.uids), "Box", move=move)
    assert copied.pairs == [(1, 1)]
    assert copied.uidvalidity == box != other
    away = access.select(user, "Away", examine=True)
    assert (away.uidvalidity, list(away.uids)) == (box, [1])


def test_flags_are_stripped_only_in_the_incarnation_that_got_the_copies(
    svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COPY into a shared mailbox where the user may not set flags drops them
    from the copies afterwards; the target replaced meanwhile, that cleanup
    changed the flags of the new incarnation's message with the same UID."""
    user, owner = "alice@main.dom", "dd-customer@main.dom"
    access = MailAccess(svc)
    for who in (user, owner):
        access.ensure_inbox(who)
    for name in ("Shared", "Other"):
        access.create(owner, name)
        access.set_acl(owner, name, user, "lri")  # no s, w, d: flags are dropped
    access.append(owner, "Other", MSG, ["\\Seen", "Work"])
    access.append(user, "INBOX", MSG, ["\\Seen", "Work"])
    sel = access.select(user, "INBOX", examine=False)

    def rename_twice() -> None:
        access.rename(owner, "Shared", "Away")
        access.rename(owner, "Other", "Shared")

    monkeypatch.setattr(svc.store, "mail_copy", _replaced_after(svc.store.mail_copy, rename_twice))
    assert access.copy(user, sel.opened, list(sel.uids), "~dd-customer/Shared").pairs == [(1, 1)]
    [kept] = svc.store.mail_messages("main.dom", "dd-customer", "Shared")
    assert (kept.uid, sorted(kept.flags)) == (1, ["Work", "\\Seen"])


@pytest.mark.parametrize("move", [False, True], ids=["COPY", "MOVE"])
def test_a_target_gone_and_back_meanwhile_is_trycreate(
    svc: Services, monkeypatch: pytest.MonkeyPatch, move: bool
) -> None:
    """The target renamed away while the copy runs and another mailbox renamed
    to its name before the answer: the copy found no target, so TRYCREATE
    (RFC 3501 §6.4.7 MUST), not ``NO [NONEXISTENT]`` as if the selected
    mailbox were gone (found by the wire test below)."""
    user = "alice@main.dom"
    access = MailAccess(svc)
    access.ensure_inbox(user)
    for name in ("Box", "X"):
        access.create(user, name)
    access.append(user, "INBOX", MSG)
    sel = access.select(user, "INBOX", examine=False)
    op = "mail_move" if move else "mail_copy"
    real = getattr(svc.store, op)

    def around(*args: object, **kwargs: object) -> object:
        access.rename(user, "Box", "Away")
        try:
            return real(*args, **kwargs)
        finally:
            access.rename(user, "X", "Box")

    monkeypatch.setattr(svc.store, op, around)
    with pytest.raises(TryCreate):
        access.copy(user, sel.opened, list(sel.uids), "Box", move=move)
    assert list(access.select(user, "INBOX", examine=True).uids) == [1]


# -- the checker: only what was known before the command counts ----------------------------


def _on_box1(world: World, label: str) -> SessionModel:
    """A session with box1 selected: UIDVALIDITY 7, UIDs 2 5 8, UIDNEXT 9."""
    model = SessionModel(world, label, lambda name: (USER, name))
    transcript(model, [
        ("C", "a SELECT box1"), "* 3 EXISTS", "* OK [UIDVALIDITY 7] x", "* OK [UIDNEXT 9] x",
        "a OK [READ-WRITE] done",
        ("C", "b UID FETCH 1:* (UID FLAGS)"), "* 1 FETCH (UID 2 FLAGS ())",
        "* 2 FETCH (UID 5 FLAGS ())", "* 3 FETCH (UID 8 FLAGS ())", "b OK done",
    ])  # fmt: skip
    assert not world.violations, world.violations
    return model


MEETS_AND_EXPUNGES_UID_9 = [
    ("C", "d NOOP"), "* 4 EXISTS", "d OK",
    ("C", "e FETCH 4 (UID FLAGS)"), "* 4 FETCH (UID 9 FLAGS (\\Deleted))", "e OK",
    ("C", "f EXPUNGE"), "* 4 EXPUNGE", "f OK",
]  # fmt: skip
"""Another session meets the new message (UID 9) and expunges it."""


@pytest.mark.parametrize(
    ("command", "answer"),
    [("c COPY 1 box1", "c OK [COPYUID 7 2 9] done"), ("c APPEND box1", "c OK [APPENDUID 7 9] x")],
)
def test_the_checker_accepts_a_new_uid_expunged_before_its_ok_was_read(
    command: str, answer: str
) -> None:
    """The transcript that misled the checker (seed 626691102: "new UID 248 ...
    is not above UID 247 known before"): the server commits the copy, another
    session sees UID 9 and expunges it, and only then is the tagged OK with
    UID 9 read. UID 9 was not known when the command was sent: no reuse."""
    world = World()
    one, two = _on_box1(world, "one"), _on_box1(world, "two")
    tag, _, text = command.partition(" ")
    one.begin(tag, text, MSG if text.startswith("APPEND") else None)
    transcript(two, MEETS_AND_EXPUNGES_UID_9)
    assert not transcript(one, [answer])


@pytest.mark.parametrize(
    ("command", "answer"),
    [("c COPY 1 box1", "c OK [COPYUID 7 2 9] done"), ("c APPEND box1", "c OK [APPENDUID 7 9] x")],
)
def test_the_checker_still_sees_a_uid_handed_out_again(command: str, answer: str) -> None:
    """The same UID 9, but expunged before the command was sent: a reuse. The
    report names who knew UID 9 and shows the sessions' exchanges interleaved."""
    world = World()
    one, two = _on_box1(world, "one"), _on_box1(world, "two")
    transcript(two, MEETS_AND_EXPUNGES_UID_9)
    tag, _, text = command.partition(" ")
    one.begin(tag, text, MSG if text.startswith("APPEND") else None)
    [found] = transcript(one, [answer])
    assert "new UID 9 of UIDVALIDITY 7 is not above UID 9 known before" in found
    assert "UID 9 known at event" in found and "[two] e FETCH 4 (UID FLAGS)" in found
    assert "UID 9 known expunged at event" in found
    assert "[two] S: * 4 EXPUNGE" in found  # the interleaved excerpt


def test_the_checker_sees_copyuid_name_the_wrong_incarnation() -> None:
    """What the COPYUID race looked like on the wire: one session's UIDs of one
    UIDVALIDITY going backwards."""
    world = World()
    one = _on_box1(world, "one")
    assert not transcript(one, [("C", "c COPY 1 box1"), "c OK [COPYUID 7 2 10] done"])
    [found] = transcript(one, [("C", "d COPY 1 box1"), "d OK [COPYUID 7 2 9] done"])
    assert "COPY: new UID 9 of UIDVALIDITY 7 is not above UID 10 known before" in found


def test_the_checker_sees_copyuid_name_an_incarnation_gone_from_the_name() -> None:
    """COPYUID naming a UIDVALIDITY that another session's DELETE + CREATE had
    replaced before the COPY was sent (as APPENDUID already was checked)."""
    world = World()
    _on_box1(world, "one")  # box1 is UIDVALIDITY 7
    two = SessionModel(world, "two", lambda name: (USER, name))
    transcript(two, [
        ("C", "x DELETE box1"), "x OK", ("C", "y CREATE box1"), "y OK",
        ("C", "a SELECT box2"), "* 1 EXISTS", "* OK [UIDVALIDITY 11] x", "a OK",
    ])  # fmt: skip
    [found] = transcript(two, [("C", "c COPY 1 box1"), "c OK [COPYUID 7 1 9] done"])
    assert "COPY into ('copier', 'box1') answered UIDVALIDITY 7, gone from that name" in found


# -- the same over the wire -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("uids") / "var", log_level="INFO").init()
    srv.cli("domain", "add", DOMAIN)
    srv.cli("account", "add", f"{USER}@{DOMAIN}", "--password", PW)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def _login(world: World, label: str, port: int) -> Client:
    client = Client(SessionModel(world, label, lambda name: (USER, name)))
    await client.connect(port)
    assert (await client.command(f'LOGIN "{USER}@{DOMAIN}" "{PW}"')).status == "OK"
    return client


COPIERS = 4
REPLACEMENTS = 60


def test_copies_into_a_name_replaced_meanwhile_keep_their_uids(server: WaypostServer) -> None:
    """Four sessions COPY into ``T`` while a fifth keeps replacing ``T``
    (CREATE X, RENAME T Y<n>, RENAME X T). Afterwards every incarnation holds
    exactly the UIDs the COPYUIDs named for its UIDVALIDITY, and each
    session's UIDs of one UIDVALIDITY went up. Before the fix a few hundred
    copies sufficed for COPYUIDs naming the incarnation that took the name;
    the run is bounded by the number of replacements, not by time."""
    asyncio.run(_copy_while_replaced(server.port("IMAPPort")))


async def _copy_while_replaced(port: int) -> None:
    world = World()
    admin = await _login(world, "admin", port)
    for text in ("CREATE src", "CREATE T"):
        assert (await admin.command(text)).status == "OK"
    for _ in range(3):
        assert (await admin.command("APPEND src", MSG)).status == "OK"
    copiers = [await _login(world, f"c{i}", port) for i in range(COPIERS)]
    for client in copiers:
        assert (await client.command("SELECT src")).status == "OK"
    named: dict[int, list[int]] = {}  # UIDVALIDITY -> new UIDs COPYUID named
    done = False

    async def copy(client: Client) -> None:
        mine: dict[int, int] = {}  # UIDVALIDITY -> the last UID this session was given
        while not done:
            resp = await client.command("UID COPY 1:* T")
            if resp.code == "TRYCREATE":  # T is between its RENAMEs
                continue
            assert resp.status == "OK" and resp.code == "COPYUID", resp.line
            v, uids = int(resp.code_args[0]), uid_set(resp.code_args[2])
            assert uids[0] > mine.get(v, 0), f"{client.model.label}: {resp.line} after {mine[v]}"
            mine[v] = uids[-1]
            named.setdefault(v, []).extend(uids)

    async def replace() -> None:
        nonlocal done
        try:
            for n in range(REPLACEMENTS):
                for text in ("CREATE X", f"RENAME T Y{n}", "RENAME X T"):
                    assert (await admin.command(text)).status == "OK"
        finally:
            done = True

    await asyncio.gather(replace(), *(copy(c) for c in copiers))
    assert not world.violations, "\n".join(world.violations[:3])
    held: dict[int, list[int]] = {}
    for name in ["T", *(f"Y{n}" for n in range(REPLACEMENTS))]:
        assert (await admin.command(f"EXAMINE {name}")).status == "OK"
        view = admin.model.view
        assert view is not None and view.v is not None
        if view.slots:
            assert (await admin.command("UID FETCH 1:* (UID)")).status == "OK"
        held[view.v] = [s.uid for s in view.slots if s.uid is not None]
    named_sorted = {v: sorted(uids) for v, uids in named.items()}
    assert {v: u for v, u in held.items() if u} == named_sorted
    assert sum(map(len, named.values())) >= REPLACEMENTS  # the race was run, not skipped
    for client in (admin, *copiers):
        await client.command("LOGOUT")
        await client.close()
