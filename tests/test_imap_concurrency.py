"""Ten IMAP sessions at once on the same mailboxes, checked against a model.

A real ``waypost serve`` on loopback; ten sessions (eight of one account, two
of another that shares a mailbox with it through an ACL) run randomly chosen
commands for a bounded time: APPEND, STORE (+/-FLAGS, system flags and
keywords), EXPUNGE, UID EXPUNGE, COPY, MOVE, SELECT/EXAMINE, FETCH (FLAGS,
UID, BODY[]), SEARCH, STATUS, NOOP, short IDLEs, and CREATE/DELETE/RENAME of
mailboxes (RENAME INBOX too). Every response of every session goes through
``tests/support/imap_model.py``, which checks the RFC 3501/9051 §7 rules on
each session's view (see its module doc). At the end every session quiesces
(NOOP) and its view is compared with a fresh EXAMINE + ``UID FETCH 1:*
FLAGS``.

The run is seeded: the seed is printed on failure and
``WAYPOST_MODEL_SEED=<seed>`` replays the same choices (timing still varies).
``WAYPOST_MODEL_SECONDS`` makes the run longer than its default 25 s.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Iterator

import pytest
from tests.support import imap_model
from tests.support.imap_model import (
    Client,
    ConnectionEnded,
    MailboxKey,
    Response,
    SessionModel,
    World,
    parse_response,
    transcript,
)
from tests.support.server import WaypostServer

from waypost.services.container import Services
from waypost.services.mailaccess.criteria import SearchKey
from waypost.services.mailaccess.errors import NoSuchMailbox, TryCreate
from waypost.services.mailaccess.service import FetchNeeds, MailAccess

PW = "model-pw-1234"
DOMAIN = "race.dom"
OWNER, SHARER = "racer", "sharer"
SECONDS = float(os.environ.get("WAYPOST_MODEL_SECONDS", "25"))
SESSIONS = 10
SHARER_SESSIONS = 2
THINK = 0.2
"""Share of commands after which a session pauses (10-100 ms), as a user reading
does: so other sessions change its mailbox between two of its commands, not
only while one runs (the window in which a replaced mailbox could be served)."""
FLAGS = ("\\Seen", "\\Flagged", "\\Answered", "\\Draft", "\\Deleted")
KEYWORDS = ("$Label1", "$Label2", "Work", "Todo")
CHURN = ("churn1", "churn2", "churn3")
"""Mailboxes of the owner that sessions create, delete and rename."""
OWNER_BOXES = ("INBOX", "box1", "box2", *CHURN, f"~{SHARER}/common")
SHARER_BOXES = ("INBOX", "common", "box1")


def resolver(user: str) -> Callable[[str], MailboxKey]:
    """The mailbox a name of ``user`` means: (owner, name)."""

    def resolve(name: str) -> MailboxKey:
        if name.startswith("~"):
            owner, _, rest = name[1:].partition("/")
            return (owner.partition("@")[0], rest)
        return (user, "INBOX" if name.upper() == "INBOX" else name)

    return resolve


# -- the server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("race") / "var", log_level="INFO").init()
    srv.cli("domain", "add", DOMAIN)
    for name in (OWNER, SHARER):
        srv.cli("account", "add", f"{name}@{DOMAIN}", "--password", PW)
    srv.start()
    try:
        asyncio.run(_setup(srv.port("IMAPPort")))
        yield srv
    finally:  # also when the set-up fails: no server left behind
        srv.stop()


async def _setup(port: int) -> None:
    world = World()
    for user, commands in (
        (OWNER, ["CREATE box1", "CREATE box2", "CREATE churn1"]),
        (SHARER, ["CREATE common", "CREATE box1", f"SETACL common {OWNER} lrswipkxte"]),
    ):
        client = await _login(world, user, user, port)
        for text in commands:
            resp = await client.command(text)
            assert resp.status == "OK", resp.line
        await client.command("LOGOUT")
        await client.close()
    assert not world.violations, world.violations


async def _login(world: World, label: str, user: str, port: int, *, rev2: bool = False) -> Client:
    """A logged-in session; with ``rev2``, IMAP4rev2 enabled when the server offers it."""
    client = Client(SessionModel(world, label, resolver(user)))
    await client.connect(port)
    resp = await client.command(f'LOGIN "{user}@{DOMAIN}" "{PW}"')
    assert resp.status == "OK", resp.line
    if rev2 and resp.code == "CAPABILITY" and "IMAP4rev2" in resp.code_args:
        assert (await client.command("ENABLE IMAP4rev2")).status == "OK"
    return client


# -- one racing session ---------------------------------------------------------------------


class Racer:
    """One session choosing its next command at random from its view."""

    def __init__(self, world: World, index: int, seed: int, port: int) -> None:
        self.world = world
        self.index = index
        self.user = SHARER if index < SHARER_SESSIONS else OWNER
        self.boxes = SHARER_BOXES if self.user == SHARER else OWNER_BOXES
        self.rng = random.Random(f"{seed}-{index}")
        self.port = port
        self.client: Client | None = None
        self.sent = 0
        self.logins = 0

    @property
    def model(self) -> SessionModel:
        assert self.client is not None
        return self.client.model

    async def run(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.client is None:
                self.logins += 1
                self.client = await _login(
                    self.world,
                    f"s{self.index}.{self.logins}",
                    self.user,
                    self.port,
                    rev2=self.index % 3 == 2,  # a third of the sessions, once offered
                )
            try:
                await self.step()
            except ConnectionEnded:
                await self.client.close()
                self.client = None
            self.sent += 1
            if self.rng.random() < THINK:  # a user reading: other sessions move on meanwhile
                await asyncio.sleep(self.rng.uniform(0.01, 0.1))

    async def step(self) -> None:
        rng, client = self.rng, self.client
        assert client is not None
        view = client.model.view
        if view is None and rng.random() < 0.6:
            await self.select()
            return
        churn = 8 if self.user == OWNER else 0
        writes = 0 if view is not None and view.examine else 1  # EXAMINE: no STORE, EXPUNGE
        if view is None:  # only what is valid in the authenticated state
            choices = [self.append, self.select, self.noop, self.churn, self.status]
            weights = [12, 5, 4, churn, 3]
        else:
            choices = [
                self.append, self.store, self.expunge, self.copy, self.select, self.fetch,
                self.search, self.noop, self.idle, self.churn, self.status,
            ]  # fmt: skip
            weights = [12, 16 * writes, 6 * writes, 8, 5, 14, 6, 4, 2, churn, 3]
        choice = rng.choices(choices, weights=weights)[0]
        await choice()

    # -- sets -----------------------------------------------------------------------------

    def seqset(self) -> str | None:
        view = self.model.view
        if view is None or not view.slots:
            return None
        n = len(view.slots)
        a = self.rng.randint(1, n)
        shape = self.rng.random()
        if shape < 0.4:
            return str(a)
        if shape < 0.7:
            return f"{a}:{min(n, a + self.rng.randint(0, 4))}"
        if shape < 0.85:
            return f"{a}:*"
        return "1:*"

    def uidset(self) -> str:
        view = self.model.view
        known = [s.uid for s in view.slots if s.uid is not None] if view else []
        if known and self.rng.random() < 0.7:
            picked = sorted(self.rng.sample(known, min(len(known), self.rng.randint(1, 3))))
            return ",".join(str(u) for u in picked)
        low = self.rng.randint(1, max(known, default=5) + 2)
        return f"{low}:*" if self.rng.random() < 0.5 else f"{low}:{low + self.rng.randint(0, 5)}"

    def target(self) -> str:
        return self.rng.choice(self.boxes)

    # -- commands ---------------------------------------------------------------------------

    async def select(self) -> None:
        verb = "EXAMINE" if self.rng.random() < 0.2 else "SELECT"
        resp = await self.command(f"{verb} {self.target()}")
        if resp.status == "OK" and self.model.view is not None and self.model.view.slots:
            await self.command("UID FETCH 1:* (UID FLAGS)")

    async def append(self) -> None:
        flags = self.rng.sample(FLAGS[:4] + KEYWORDS, self.rng.randint(0, 2))
        marker = f"{self.index}-{self.sent}-{self.rng.getrandbits(48):x}"
        body = (
            f"From: s{self.index}@{DOMAIN}\r\nSubject: race {marker}\r\n"
            f"Message-ID: <{marker}@{DOMAIN}>\r\n\r\nbody {marker}\r\n"
        ).encode()
        flag_text = f" ({' '.join(flags)})" if flags else ""
        await self.command(f"APPEND {self.target()}{flag_text}", body)

    async def store(self) -> None:
        mode = self.rng.choice(["+FLAGS", "-FLAGS", "+FLAGS", "FLAGS"])
        silent = ".SILENT" if self.rng.random() < 0.15 else ""
        flags = self.rng.sample(FLAGS + KEYWORDS, self.rng.randint(1, 3))
        if self.rng.random() < 0.5:
            where = f"UID STORE {self.uidset()}"
        else:
            seqs = self.seqset()
            if seqs is None:
                return
            where = f"STORE {seqs}"
        resp = await self.command(f"{where} {mode}{silent} ({' '.join(flags)})")
        view = self.model.view
        if silent and view is not None and resp.status == "OK":
            for slot in view.slots:
                slot.flags = None  # our own change is not echoed: flags unknown now

    async def expunge(self) -> None:
        if self.rng.random() < 0.5:
            await self.command("EXPUNGE")
        else:
            await self.command(f"UID EXPUNGE {self.uidset()}")

    async def copy(self) -> None:
        """A few messages at a time (copying ``1:*`` would double the mailboxes)."""
        verb = self.rng.choice(["COPY", "MOVE"])
        view = self.model.view
        if view is None or not view.slots:
            return
        if self.rng.random() < 0.5:
            known = [s.uid for s in view.slots if s.uid is not None]
            if known:
                picked = sorted(self.rng.sample(known, min(len(known), self.rng.randint(1, 3))))
                uids = ",".join(str(u) for u in picked)
                await self.command(f"UID {verb} {uids} {self.target()}")
        else:
            n = len(view.slots)
            a = self.rng.randint(1, n)
            await self.command(f"{verb} {a}:{min(n, a + self.rng.randint(0, 2))} {self.target()}")

    async def fetch(self) -> None:
        items = self.rng.choice(
            ["(UID FLAGS)", "(UID BODY.PEEK[])", "(UID FLAGS BODY.PEEK[])", "(UID BODY[])",
             "(FLAGS)", "(UID RFC822.SIZE)"]
        )  # fmt: skip
        if self.rng.random() < 0.5:
            await self.command(f"UID FETCH {self.uidset()} {items}")
        else:
            seqs = self.seqset()
            if seqs is not None:
                await self.command(f"FETCH {seqs} {items}")

    async def search(self) -> None:
        key = self.rng.choice(
            ["ALL", "UNSEEN", "FLAGGED", "DELETED", "KEYWORD Work", "NOT SEEN", "SUBJECT race"]
        )
        await self.command(f"{'UID ' if self.rng.random() < 0.5 else ''}SEARCH {key}")

    async def noop(self) -> None:
        """NOOP, after listening a moment with no command in progress."""
        assert self.client is not None
        await self.client.unsolicited(0.05)
        await self.command("NOOP")

    async def idle(self) -> None:
        assert self.client is not None
        await self.client.idle(self.rng.uniform(0.1, 0.6))

    async def status(self) -> None:
        await self.command(f"STATUS {self.target()} (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")

    async def churn(self) -> None:
        op = self.rng.random()
        name = self.rng.choice(CHURN)
        if op < 0.4:
            await self.command(f"CREATE {name}")
        elif op < 0.7:
            await self.command(f"DELETE {name}")
        else:  # now and then RENAME INBOX: its messages move, INBOX stays (RFC 3501 §6.3.5)
            source = "INBOX" if op >= 0.96 else name  # as many draws as before
            await self.command(f"RENAME {source} {self.rng.choice(CHURN)}")

    async def command(self, text: str, body: bytes | None = None) -> Response:
        assert self.client is not None
        return await self.client.command(text, body)

    # -- the end ---------------------------------------------------------------------------

    async def quiesce(self) -> None:
        """NOOP, then learn the UIDs and flags the view does not know yet
        (only for those messages, so the flags it tracked are still compared)."""
        if self.client is None:
            return
        try:
            await self.command("NOOP")
            view = self.model.view
            if view is None:
                return
            unknown = [str(i + 1) for i, s in enumerate(view.slots) if s.uid is None]
            if unknown:
                await self.command(f"FETCH {','.join(unknown)} (UID)")
            unknown = [str(s.uid) for s in view.slots if s.flags is None]
            if unknown:
                await self.command(f"UID FETCH {','.join(unknown)} (FLAGS)")
        except ConnectionEnded:
            await self.client.close()
            self.client = None


async def fresh_look(world: World, user: str, name: str, port: int) -> tuple[int, dict]:
    """UIDVALIDITY and every message's flags, as a new session sees them."""
    client = await _login(world, "fresh", user, port)
    try:
        resp = await client.command(f"EXAMINE {name}")
        view = client.model.view
        if resp.status != "OK" or view is None or view.v is None:
            return -1, {}
        if view.slots:
            await client.command("UID FETCH 1:* (FLAGS)")
        flags = {s.uid: s.flags for s in view.slots}
        await client.command("LOGOUT")
        return view.v, flags
    finally:
        await client.close()


async def race(port: int, seed: int, seconds: float) -> tuple[World, list[Racer]]:
    world = World()
    racers = [Racer(world, i, seed, port) for i in range(SESSIONS)]
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(r.run(deadline) for r in racers))
    for racer in racers:  # one after the other: nothing changes any more
        await racer.quiesce()
    for racer in racers:
        view = racer.model.view if racer.client is not None else None
        if view is None or view.v is None:
            continue
        owner, name = view.key
        mailbox = name if owner == racer.user else f"~{owner}/{name}"
        v, flags = await fresh_look(world, racer.user, mailbox, port)
        if v == -1:
            racer.model.fail(f"{mailbox} is gone, yet the session was not told")
        else:
            racer.model.compare(v, flags)
    for racer in racers:
        if racer.client is not None:
            await racer.client.close()
    return world, racers


def test_ten_sessions_keep_every_view_consistent(server: WaypostServer) -> None:
    seed = int(os.environ.get("WAYPOST_MODEL_SEED", "0")) or random.randrange(1, 2**31)
    replay = f"seed {seed}: replay with WAYPOST_MODEL_SEED={seed}"
    try:
        world, racers = asyncio.run(race(server.port("IMAPPort"), seed, SECONDS))
    except Exception as exc:  # a hang (read timeout), a response that does not parse
        raise AssertionError(f"the run failed ({replay}): {exc!r}") from exc
    commands = sum(r.sent for r in racers)
    assert not world.violations, (
        f"{len(world.violations)} protocol violations in {commands} commands ({replay}):\n"
        + "\n".join(world.violations[:5])
    )
    assert commands >= SESSIONS * 5, f"only {commands} commands ran ({replay})"
    # the run exercised what it claims to (else the checks proved nothing)
    assert len(world.bodies) >= 20, replay
    assert world.expunged, replay


# -- regressions the checker found ----------------------------------------------------------


REPLACED_COMMANDS = (
    "FETCH 1:2 (UID FLAGS)",
    "UID FETCH 1:* (FLAGS BODY.PEEK[])",
    "SEARCH ALL",
    "UID SEARCH FLAGGED",
    "UID STORE 1 +FLAGS (\\Deleted)",
    "STORE 1:2 FLAGS (\\Seen)",
    "FETCH 1 (BODY[])",
    "COPY 1 INBOX",
    "UID MOVE 1:2 INBOX",
    "UID EXPUNGE 1:*",
    "CLOSE",
)


@pytest.mark.parametrize("command", REPLACED_COMMANDS)
def test_a_replaced_mailbox_is_never_served_nor_changed(
    server: WaypostServer, command: str
) -> None:
    """A session whose selected mailbox was deleted and created again under
    the same name by another session is told (BYE; CLOSE just leaves it), and
    its next command neither reads nor changes the new mailbox (RFC 3501 §2.3.1.1): before the
    fix FETCH answered the new mailbox's messages under the old UIDs, STORE
    flagged them, COPY copied them and CLOSE expunged them."""
    asyncio.run(_replaced(server.port("IMAPPort"), command))


@pytest.mark.parametrize("command", ["SEARCH SUBJECT old", "UID SEARCH ALL", "SORT (DATE) UTF-8 ALL"])
def test_an_empty_view_of_a_replaced_mailbox_is_not_answered(
    server: WaypostServer, command: str
) -> None:
    """The same with nothing in the view: no ``* SEARCH``/``* SORT`` for a
    mailbox that was replaced, but BYE (the model-based run found an empty
    ``* ESEARCH`` answered for the new incarnation, seed 1116405773)."""
    asyncio.run(_replaced_empty(server.port("IMAPPort"), command))


async def _replaced_empty(port: int, command: str) -> None:
    world = World()
    name = f"hollow{len(command)}{command[:4].strip().lower()}"
    a = await _login(world, "a", OWNER, port)
    b = await _login(world, "b", OWNER, port)
    assert (await b.command(f"CREATE {name}")).status == "OK"
    assert (await a.command(f"SELECT {name}")).status == "OK"
    assert (await b.command(f"DELETE {name}")).status == "OK"
    assert (await b.command(f"CREATE {name}")).status == "OK"
    a.model.transcript.clear()
    with pytest.raises(ConnectionEnded, match="BYE"):
        await a.command(command)
    served = [t for t in a.model.transcript if t.startswith(("S: * SEARCH", "S: * SORT"))]
    assert not served, a.model.transcript
    await a.close()
    await b.command("LOGOUT")
    await b.close()


async def _replaced(port: int, command: str) -> None:
    world = World()
    name = f"reborn{REPLACED_COMMANDS.index(command)}"
    a = await _login(world, "a", OWNER, port)
    b = await _login(world, "b", OWNER, port)
    assert (await b.command(f"CREATE {name}")).status == "OK"
    for i in range(3):
        old = f"Subject: old {i}\r\n\r\nold\r\n".encode()
        assert (await b.command(f"APPEND {name} (\\Deleted)", old)).status == "OK"
    assert (await a.command(f"SELECT {name}")).status == "OK"
    assert (await a.command("UID FETCH 1:* (UID FLAGS)")).status == "OK"
    inbox_before = await fresh_look(world, OWNER, "INBOX", port)
    assert (await b.command(f"DELETE {name}")).status == "OK"
    assert (await b.command(f"CREATE {name}")).status == "OK"
    for i in range(2):
        new = f"Subject: new {i}\r\n\r\nnew\r\n".encode()
        assert (await b.command(f"APPEND {name} (\\Flagged \\Deleted)", new)).status == "OK"
    a.model.transcript.clear()
    if command == "CLOSE":  # leaves the mailbox: nothing to expunge, OK (RFC 3501 §6.4.2)
        assert (await a.command(command)).status == "OK"
    else:
        with pytest.raises(ConnectionEnded, match="BYE"):
            await a.command(command)
    served = [t for t in a.model.transcript if t.startswith(("S: * 1 ", "S: * 2 ", "S: * SEARCH"))]
    assert not served, a.model.transcript
    assert not world.violations, world.violations
    await a.close()
    _, flags = await fresh_look(world, OWNER, name, port)
    assert sorted(flags) == [1, 2]
    assert set(flags.values()) == {frozenset({"\\Flagged", "\\Deleted"})}
    assert await fresh_look(world, OWNER, "INBOX", port) == inbox_before
    await b.command("LOGOUT")
    await b.close()


@pytest.fixture
def mail(svc: Services) -> tuple[Services, MailAccess, str]:
    """The mail-access service on the shared services world, with alice's mailbox Box."""
    user = "alice@main.dom"
    access = MailAccess(svc)
    access.ensure_inbox(user)
    access.create(user, "Box")
    return svc, access, user


def test_the_service_refuses_the_old_incarnation_of_a_mailbox(
    mail: tuple[Services, MailAccess, str],
) -> None:
    """The mail-access service and the store pin a selection to its
    UIDVALIDITY: after DELETE + CREATE every call on the old selection is
    NoSuchMailbox, and the new mailbox is untouched."""

    _, access, user = mail
    access.append(user, "Box", b"Subject: old\r\n\r\nold\r\n", ["\\Deleted"])
    old = access.select(user, "Box", examine=False)
    access.delete(user, "Box")
    access.create(user, "Box")
    uid = access.append(user, "Box", b"Subject: new\r\n\r\nnew\r\n", ["\\Deleted"]).uid
    opened, uids = old.opened, list(old.uids)
    calls = [
        lambda: access.fetch(opened, [(1, uids[0])], FetchNeeds(raw=True)),
        lambda: access.store_flags(opened, uids, ["\\Seen"], "add"),
        lambda: access.expunge(opened, uids),
        lambda: access.copy(user, opened, uids, "INBOX"),
        lambda: access.copy(user, opened, uids, "INBOX", move=True),
        lambda: access.search(opened, uids, SearchKey("ALL"), lambda u: False, True),
        lambda: access.search(opened, uids, SearchKey("SUBJECT", ("old",)), lambda u: False, True),
    ]
    for call in calls:
        with pytest.raises(NoSuchMailbox):
            call()
    with pytest.raises(NoSuchMailbox), access.index(opened):
        pass
    assert access.expunge(opened, uids, quiet=True) == []  # CLOSE: nothing to expunge
    now = access.select(user, "Box", examine=True)
    assert list(now.uids) == [uid] and now.uidvalidity != old.uidvalidity
    assert access.status(user, "INBOX", ["MESSAGES"]) == [("MESSAGES", 0)]
    assert access.search(now.opened, now.uids, SearchKey("DELETED"), lambda u: False, True) == [uid]


def test_recent_is_claimed_only_up_to_what_the_view_holds(
    mail: tuple[Services, MailAccess, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the checker as ``* -1 RECENT``: between a session's read of
    the changes and its claim of \\Recent, another session claimed newer
    messages, so the claim's first UID lay beyond the view's UIDNEXT and the
    view's recent range ran backwards. And a claim took messages the view had
    not seen yet, so they were \\Recent for no session (RFC 3501 §2.3.2)."""
    svc, access, user = mail
    store = svc.store
    msg = b"Subject: r\r\n\r\nr\r\n"
    access.append(user, "Box", msg)
    a = access.select(user, "Box", examine=False)
    access.append(user, "Box", msg)  # UID 2: new for a
    real = store.mail_changes_since
    racing = True

    def then_another_session(*args: object, **kwargs: object) -> object:
        found = real(*args, **kwargs)
        if racing:  # lands between a's read of the changes and its claim
            access.append(user, "Box", msg)  # UID 3
            store.mail_claim_recent(*a.opened.target.ref)  # b claims UIDs 2 and 3
        return found

    monkeypatch.setattr(store, "mail_changes_since", then_another_session)
    changes, first = access.poll(a.opened, a.modseq, a.uidnext, True)
    assert [m.uid for m in changes.new] == [2] and changes.uidnext == 3
    assert first is not None and first <= changes.uidnext  # 2 and 3 are b's: none for a
    racing = False
    access.append(user, "Box", msg)  # UID 4, and UID 5 arrives between read and claim

    def then_delivery(*args: object, **kwargs: object) -> object:
        found = real(*args, **kwargs)
        access.append(user, "Box", msg)
        return found

    monkeypatch.setattr(store, "mail_changes_since", then_delivery)
    changes, first = access.poll(a.opened, changes.highestmodseq, changes.uidnext, True)
    assert [m.uid for m in changes.new] == [3, 4] and first == 4
    monkeypatch.setattr(store, "mail_changes_since", real)
    changes, first = access.poll(a.opened, changes.highestmodseq, changes.uidnext, True)
    assert [m.uid for m in changes.new] == [5] and first == 5  # still a's to claim


def test_a_target_deleted_meanwhile_is_trycreate(
    mail: tuple[Services, MailAccess, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the checker as ``NO [NONEXISTENT]`` for APPEND: a DELETE by
    another session between the rights check and the store's append (or
    copy) still means "create it and try again" (RFC 3501 §6.3.11, §6.4.7)."""

    svc, access, user = mail
    store = svc.store
    msg = b"Subject: t\r\n\r\nt\r\n"

    def after_a_delete(real: Callable[..., object]) -> Callable[..., object]:
        def run(*args: object, **kwargs: object) -> object:
            access.delete(user, "Box")  # lands after the rights check
            return real(*args, **kwargs)

        return run

    monkeypatch.setattr(store, "mail_append_many", after_a_delete(store.mail_append_many))
    with pytest.raises(TryCreate):
        access.append(user, "Box", msg)
    monkeypatch.undo()
    access.create(user, "Box")
    access.append(user, "INBOX", msg)
    sel = access.select(user, "INBOX", examine=False)
    for move, op in ((False, "mail_copy"), (True, "mail_move")):
        monkeypatch.setattr(store, op, after_a_delete(getattr(store, op)))
        with pytest.raises(TryCreate):
            access.copy(user, sel.opened, list(sel.uids), "Box", move=move)
        monkeypatch.undo()
        access.create(user, "Box")
    assert access.status(user, "INBOX", ["MESSAGES"]) == [("MESSAGES", 1)]


# -- the checker itself -----------------------------------------------------------------------


def selected(world: World | None = None) -> SessionModel:
    model = SessionModel(world or World(), "unit", resolver(OWNER))
    transcript(model, [
        ("C", "a SELECT box1"), "* FLAGS (\\Seen \\Deleted Work)", "* 3 EXISTS",
        "* OK [UIDVALIDITY 7] x", "* OK [UIDNEXT 9] x", "a OK [READ-WRITE] done",
        ("C", "b UID FETCH 1:* (UID FLAGS)"), "* 1 FETCH (UID 2 FLAGS ())",
        "* 2 FETCH (UID 5 FLAGS (\\Seen))", "* 3 FETCH (UID 8 FLAGS (Work))", "b OK done",
    ])  # fmt: skip
    assert not model.world.violations, model.world.violations
    return model


@pytest.mark.parametrize(
    ("lines", "complaint"),
    [
        ([("C", "c FETCH 1 (UID)"), "* 2 EXPUNGE", "c OK"], "EXPUNGE during FETCH"),
        ([("C", "c UID SEARCH ALL"), "* 1 EXPUNGE", "c OK"], "EXPUNGE during UID SEARCH"),
        ([("C", "c NOOP"), "* 4 EXPUNGE", "c OK"], "outside the view"),
        ([("C", "c NOOP"), "* 2 EXISTS", "c OK"], "EXISTS went down"),
        ([("C", "c NOOP"), "* 4 EXISTS", "* 4 FETCH (UID 6)", "c OK"], "strictly increasing"),
        ([("C", "c FETCH 2 (UID)"), "* 2 FETCH (UID 6)", "c OK"], "was UID 5, now UID 6"),
        (
            [("C", "c NOOP"), "* 2 EXPUNGE", "* 3 EXISTS", "* 3 FETCH (UID 5)", "c OK"],
            "strictly increasing",
        ),
        (
            [
                ("C", "c NOOP"),
                "* 2 EXPUNGE",
                "* 3 EXISTS",
                "* 3 FETCH (UID 9)",
                "c OK",
                ("C", "d UID SEARCH ALL"),
                "* SEARCH 2 5 8 9",
                "d OK",
            ],
            "told are expunged",
        ),
        ([("C", "c FETCH 9 (FLAGS)"), "c OK"], ""),
        ([("C", "c FETCH 1 (UID)"), "* 5 FETCH (UID 2)", "c OK"], "outside the view"),
        ([("C", "c FETCH 1 (UID)"), "c BAD no"], "BAD for a well-formed command"),
        ([("C", "c FETCH 1 (UID)"), "c NO [SERVERBUG] oops"], "server failure"),
        ([("C", "c NOOP"), "* BYE shutting down"], "unexpected BYE"),
        ([("C", "c SEARCH ALL"), "* SEARCH 1 4", "c OK"], "outside 1:3"),
        ([("C", "c NOOP"), "c OK", "* 1 EXPUNGE"], "no command in progress"),
        ([("C", "c NOOP"), "c OK", "* 4 EXISTS", "* 1 FETCH (FLAGS ())"], ""),
        ([("C", "c STORE 1 +FLAGS (\\Seen)"), "* 1 FETCH (FLAGS ())", "c OK"], "without them"),
        ([("C", "c STORE 2 -FLAGS (\\Seen)"), "* 2 FETCH (FLAGS (\\Seen))", "c OK"], "with some"),
        (
            [("C", "c UID STORE 2 FLAGS (Work)"), "* 1 FETCH (FLAGS (Work \\Seen))", "c OK"],
            "answered otherwise",
        ),
        (  # not a message of the STORE: another session's change
            [("C", "c STORE 2:* +FLAGS (\\Seen)"), "* 1 FETCH (FLAGS ())", "c OK"],
            "",
        ),
        (  # the first answer is the STORE's; a later one another session's change
            [
                ("C", "c UID STORE 2 FLAGS (Work)"),
                "* 1 FETCH (FLAGS (Work))",
                "* 1 FETCH (FLAGS (Work \\Seen))",
                "c OK",
            ],
            "",
        ),
        ([("C", "c STORE 1 +FLAGS.SILENT (\\Seen)"), "* 1 FETCH (FLAGS ())", "c OK"], ""),
    ],
)
def test_the_checker_complains_about_a_wrong_transcript(lines: list, complaint: str) -> None:
    model = selected()
    found = transcript(model, lines)
    if complaint:
        assert any(complaint in v for v in found), found
    else:
        assert not found


def test_the_checker_accepts_what_the_rfc_allows() -> None:
    model = selected()
    assert not transcript(model, [
        ("C", "c FETCH 1 (UID FLAGS)"), "* 1 FETCH (UID 2 FLAGS (\\Seen))",
        "* 4 EXISTS", "c NO [EXPUNGEISSUED] some are gone",
        ("C", "d NOOP"), "* 1 EXPUNGE", "* 3 FETCH (UID 9 FLAGS ())", "d OK",
        ("C", "e IDLE"), "* 1 EXPUNGE", "* 3 EXISTS", "e OK",
    ])  # fmt: skip
    assert [s.uid for s in model.view.slots] == [8, 9, None]


def test_the_checker_sees_bytes_change_and_uids_resurrected() -> None:
    world = World()
    one, two = selected(world), selected(world)
    # literals come from the client's reader; here the body is a quoted string
    transcript(one, [("C", "c FETCH 1 (UID BODY[])"), '* 1 FETCH (UID 2 BODY[] "abc")', "c OK"])
    transcript(two, [("C", "c FETCH 1 (UID BODY[])"), '* 1 FETCH (UID 2 BODY[] "abd")', "c OK"])
    assert any("bytes of UIDVALIDITY 7 UID 2 changed" in v for v in world.violations)
    world.violations.clear()
    transcript(one, [("C", "d EXPUNGE"), "* 1 EXPUNGE", "d OK"])
    three = SessionModel(world, "three", resolver(OWNER))
    transcript(three, [
        ("C", "a SELECT box1"), "* 3 EXISTS", "* OK [UIDVALIDITY 7] x", "a OK",
        ("C", "b FETCH 1:* (UID)"), "* 1 FETCH (UID 2)", "b OK",
    ])  # fmt: skip
    assert any("UID 2 of UIDVALIDITY 7 resurrected" in v for v in world.violations)


def test_the_checker_sees_a_replaced_mailbox_served() -> None:
    world = World()
    one = selected(world)
    two = SessionModel(world, "two", resolver(OWNER))
    transcript(two, [("C", "x DELETE box1"), "x OK", ("C", "y CREATE box1"), "y OK"])
    assert world.last_seen[(OWNER, "box1")][None].done > world.first_seen[((OWNER, "box1"), 7)]
    transcript(one, [("C", "c FETCH 1 (UID FLAGS)"), "* 1 FETCH (UID 2 FLAGS ())", "c OK"])
    assert any("served a replaced mailbox" in v for v in world.violations)
    world.violations.clear()
    three = SessionModel(world, "three", resolver(OWNER))
    transcript(three, [("C", "a SELECT box1"), "* 0 EXISTS", "* OK [UIDVALIDITY 7] x", "a OK"])
    assert any("UIDVALIDITY reused" in v for v in world.violations)
    world.violations.clear()
    transcript(three, [("C", "a SELECT box1"), "* OK [UIDVALIDITY 8] x", "* OK [UIDNEXT 1] x"])
    assert not world.violations
    # a BYE for the replaced mailbox is what the RFC allows
    transcript(one, [("C", "d NOOP"), "* BYE Selected mailbox was deleted"])
    assert not world.violations


def test_the_checker_sees_uidnext_go_back_and_recent_under_rev2() -> None:
    model = selected()
    transcript(model, [
        ("C", "c SELECT box1"), "* 3 EXISTS", "* OK [UIDVALIDITY 7] x", "* OK [UIDNEXT 8] x",
        "c OK",
    ])  # fmt: skip
    assert any("UIDNEXT 8 went back" in v for v in model.world.violations)
    model = selected()
    transcript(model, [("C", "c STATUS box1 (UIDNEXT UIDVALIDITY)"),
                       "* STATUS box1 (UIDNEXT 8 UIDVALIDITY 7)", "c OK"])  # fmt: skip
    assert any("STATUS UIDNEXT 8 went back" in v for v in model.world.violations)
    model = selected()
    transcript(model, [("C", "c ENABLE IMAP4rev2"), "* ENABLED IMAP4rev2", "c OK",
                       ("C", "d NOOP"), "* 1 RECENT", "d OK"])  # fmt: skip
    assert any("RECENT after ENABLE IMAP4rev2" in v for v in model.world.violations)


def test_the_checker_sees_sizes_change_and_uids_handed_out_again() -> None:
    model = selected()
    transcript(model, [
        ("C", "c FETCH 1 (UID RFC822.SIZE)"), "* 1 FETCH (UID 2 RFC822.SIZE 10)", "c OK",
        ("C", "d FETCH 1 (UID BODY[])"), '* 1 FETCH (UID 2 BODY[] "abc")', "d OK",
    ])  # fmt: skip
    assert any("was 10 bytes, now 3" in v for v in model.world.violations)
    model = selected()
    model.begin("e", "APPEND box1", b"x")
    model.receive(parse_response("e OK [APPENDUID 7 5] done"))
    model.begin("f", "COPY 1 box1")
    model.receive(parse_response("f OK [COPYUID 7 2 8] done"))
    found = model.world.violations
    assert any("APPEND: new UID 5 of UIDVALIDITY 7 is not above UID 8" in v for v in found)
    assert any("COPY: new UID 8" in v for v in found)


def test_the_checker_accepts_a_mailbox_renamed_back() -> None:
    """An incarnation gone from a name may come back by RENAME: then serving it is right."""
    world = World()
    one = selected(world)
    two = SessionModel(world, "two", resolver(OWNER))
    transcript(two, [("C", "x RENAME box1 box9"), "x OK", ("C", "y RENAME box9 box1"), "y OK"])
    transcript(one, [("C", "c FETCH 1 (UID FLAGS)"), "* 1 FETCH (UID 2 FLAGS ())", "c OK"])
    assert not world.violations
    transcript(two, [("C", "z RENAME box1 box9"), "z OK"])
    transcript(one, [("C", "d FETCH 1 (UID FLAGS)"), "* 1 FETCH (UID 2 FLAGS ())", "d OK"])
    assert any("served a replaced mailbox" in v for v in world.violations)


def test_the_checker_keyword_rule() -> None:
    lines = [("C", "c NOOP"), "* 1 FETCH (FLAGS (Todo))", "c OK"]
    assert any("RFC 3501 §7.2.6" in v for v in transcript(selected(), lines))
    announced = [("C", "c NOOP"), "* FLAGS (\\Seen Todo)", "* 1 FETCH (FLAGS (Todo))", "c OK"]
    assert not transcript(selected(), announced)


def test_the_checker_parses_literals_and_codes() -> None:
    resp = parse_response("* 1 FETCH (UID 4 BODY[] \x000\x00 FLAGS (\\Seen))", [b"hi\r\n"])
    assert imap_model.fetch_items(resp.data) == {
        "UID": "4", "BODY[]": b"hi\r\n", "FLAGS": ["\\Seen"]
    }  # fmt: skip
    ok = parse_response("a OK [COPYUID 9 1:3,5 10:13] done")
    assert (ok.code, ok.code_args, ok.text) == ("COPYUID", ["9", "1:3,5", "10:13"], "done")
    assert imap_model.uid_set("1:3,5") == [1, 2, 3, 5]
    assert parse_response("* OK [PERMANENTFLAGS (\\Seen \\*)] x").code_args == [["\\Seen", "\\*"]]
