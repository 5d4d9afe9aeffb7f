"""LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), CHILDREN (RFC 3348),
the SPECIAL-USE selection (RFC 6154) and STATUS=SIZE / DELETED (RFC 8438,
RFC 9051 §6.3.11) over real sockets against a ``waypost serve`` process.

The examples of RFC 5258 §5 are worked through on the RFC's own hierarchy
(``Fruit``, ``Tofu``, ``Vegetable``...), with our delimiter ``/`` and our
INBOX (``\\HasNoChildren``, where the RFC's server says ``\\NoInferiors``);
this server always returns ``\\HasChildren``/``\\HasNoChildren`` (RFC 5258
§4 allows it), so the expected lines carry them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.imap import Raw, append_cmd, tagged
from tests.support.server import WaypostServer

from waypost.protocols.imap import wire
from waypost.services.container import open_services
from waypost.services.mailaccess.service import MailAccess

PW = "list-pw-1234"
DOMAIN = "lists.dom"
_tags = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("listext") / "var").init()
    srv.cli("domain", "add", DOMAIN)
    for name in ("fruit", "deep", "special", "stat", "sizer", "sharer", "viewer"):
        srv.cli("account", "add", f"{name}@{DOMAIN}", "--password", PW)
    srv.start()
    yield srv
    srv.stop()


def login(server: WaypostServer, user: str) -> Raw:
    raw = Raw(server.port("IMAPPort"))
    raw.login(f"{user}@{DOMAIN}", PW)
    return raw


def run(raw: Raw, text: str) -> list[bytes]:
    """The untagged lines of a command that must succeed."""
    tag = f"t{next(_tags)}"
    lines = raw.cmd(tag, text)
    assert lines[-1].startswith(f"{tag} OK".encode()), lines
    return lines[:-1]


def lists(lines: list[bytes]) -> list[bytes]:
    return [line for line in lines if line.startswith(b"* LIST")]


@pytest.fixture(scope="module")
def fruit(server: WaypostServer) -> Raw:
    """The hierarchy of RFC 5258 §5: Fruit/{Apple,Banana,Peach}, Tofu,
    Vegetable/{Broccoli,Corn}; subscribed: INBOX, Fruit/Banana, Fruit/Peach
    (then deleted), Vegetable, Vegetable/Broccoli."""
    raw = login(server, "fruit")
    for name in ("Fruit", "Fruit/Apple", "Fruit/Banana", "Fruit/Peach", "Tofu", "Vegetable",
                 "Vegetable/Broccoli", "Vegetable/Corn"):  # fmt: skip
        run(raw, f'CREATE "{name}"')
    for name in ("INBOX", "Fruit/Banana", "Fruit/Peach", "Vegetable", "Vegetable/Broccoli"):
        run(raw, f'SUBSCRIBE "{name}"')
    run(raw, 'DELETE "Fruit/Peach"')
    return raw


TOP = [
    b'* LIST (\\HasNoChildren) "/" "INBOX"',
    b'* LIST (\\HasChildren) "/" "Fruit"',
    b'* LIST (\\HasNoChildren) "/" "Tofu"',
    b'* LIST (\\HasChildren) "/" "Vegetable"',
]


def test_example_1_plain_and_empty_selection_and_children(fruit: Raw) -> None:
    """§5 example 1 (and CHILDREN, RFC 3348 / §4): the same answer with no
    options, with empty selection options, with RETURN (CHILDREN)."""
    assert lists(run(fruit, 'LIST "" "%"')) == TOP
    assert lists(run(fruit, 'LIST () "" "%"')) == TOP
    assert lists(run(fruit, 'LIST "" "%" RETURN (CHILDREN)')) == TOP
    assert lists(run(fruit, 'LIST () "" "%" RETURN ()')) == TOP


def test_example_2_subscribed_lists_subscriptions_with_nonexistent(fruit: Raw) -> None:
    """§5 example 2: LIST (SUBSCRIBED) returns exactly the subscribed names,
    \\Subscribed on each, \\NonExistent on the one that is gone."""
    assert lists(run(fruit, 'LIST (SUBSCRIBED) "" "*"')) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Fruit/Banana"',
        b'* LIST (\\NonExistent \\Subscribed) "/" "Fruit/Peach"',
        b'* LIST (\\HasChildren \\Subscribed) "/" "Vegetable"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Vegetable/Broccoli"',
    ]


def test_example_3_return_subscribed_marks_without_selecting(fruit: Raw) -> None:
    """§5 example 3: RETURN (SUBSCRIBED) lists every mailbox, marking the subscribed."""
    assert lists(run(fruit, 'LIST "" "*" RETURN (SUBSCRIBED)')) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\HasChildren) "/" "Fruit"',
        b'* LIST (\\HasNoChildren) "/" "Fruit/Apple"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Fruit/Banana"',
        b'* LIST (\\HasNoChildren) "/" "Tofu"',
        b'* LIST (\\HasChildren \\Subscribed) "/" "Vegetable"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Vegetable/Broccoli"',
        b'* LIST (\\HasNoChildren) "/" "Vegetable/Corn"',
    ]


def test_example_4_remote_changes_nothing_here(fruit: Raw) -> None:
    """§5 example 4: REMOTE adds remote mailboxes; there are none (RFC 2193)."""
    assert lists(run(fruit, 'LIST (REMOTE) "" "%" RETURN (CHILDREN)')) == TOP
    assert lists(run(fruit, 'LIST (REMOTE SUBSCRIBED) "" "%"')) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\HasChildren \\Subscribed) "/" "Vegetable"',
    ]


def test_example_5_recursivematch_returns_childinfo(fruit: Raw) -> None:
    """§5 example 5: without RECURSIVEMATCH, Fruit (unsubscribed, with a
    subscribed child) is not listed; with it, Fruit and Vegetable carry
    ("CHILDINFO" ("SUBSCRIBED")) and Fruit no \\Subscribed."""
    assert b'"Fruit"' not in b"".join(lists(run(fruit, 'LIST (SUBSCRIBED) "" "%"')))
    assert lists(run(fruit, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\HasChildren) "/" "Fruit" ("CHILDINFO" ("SUBSCRIBED"))',
        b'* LIST (\\HasChildren \\Subscribed) "/" "Vegetable" ("CHILDINFO" ("SUBSCRIBED"))',
    ]
    # REMOTE is no obstacle once another option is there (§3)
    assert lists(run(fruit, 'LIST (REMOTE RECURSIVEMATCH SUBSCRIBED) "" "%"'))[1] == (
        b'* LIST (\\HasChildren) "/" "Fruit" ("CHILDINFO" ("SUBSCRIBED"))'
    )


def test_example_6_recursivematch_with_star_marks_parents_too(fruit: Raw) -> None:
    """§5 example 6: with "*" the children are listed themselves and their
    matching parents carry CHILDINFO; a \\NonExistent subscribed child counts."""
    assert lists(run(fruit, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "*"')) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\HasChildren) "/" "Fruit" ("CHILDINFO" ("SUBSCRIBED"))',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Fruit/Banana"',
        b'* LIST (\\NonExistent \\Subscribed) "/" "Fruit/Peach"',
        b'* LIST (\\HasChildren \\Subscribed) "/" "Vegetable" ("CHILDINFO" ("SUBSCRIBED"))',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Vegetable/Broccoli"',
    ]


def test_example_7_and_9_nonexistent_parents_and_grandchildren(server: WaypostServer) -> None:
    """§5 examples 7-9 (and §3 Note 2): a subscribed name deep below names
    that do not exist makes its matching ancestors \\NonExistent with
    CHILDINFO, whether or not the descendant matches the pattern."""
    raw = login(server, "deep")
    run(raw, 'SUBSCRIBE "Foo/Bar/Baz"')
    run(raw, 'CREATE "Moo"')
    run(raw, 'SUBSCRIBE "Moo/Cow"')  # Moo exists, Moo/Cow does not
    assert lists(run(raw, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')) == [
        b'* LIST (\\NonExistent) "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))',
        b'* LIST (\\HasNoChildren) "/" "Moo" ("CHILDINFO" ("SUBSCRIBED"))',
    ]
    assert lists(run(raw, 'LIST (SUBSCRIBED RECURSIVEMATCH) "Foo/" "%"')) == [
        b'* LIST (\\NonExistent) "/" "Foo/Bar" ("CHILDINFO" ("SUBSCRIBED"))',
    ]
    assert lists(run(raw, 'LIST (SUBSCRIBED) "" "%"')) == []
    assert lists(run(raw, 'LIST (SUBSCRIBED) "" "*"')) == [
        b'* LIST (\\NonExistent \\Subscribed) "/" "Foo/Bar/Baz"',
        b'* LIST (\\NonExistent \\Subscribed) "/" "Moo/Cow"',
    ]
    raw.close()


def test_example_8_recursivematch_alone_or_with_remote_is_bad(fruit: Raw) -> None:
    """§3 Note 3 and §5 example 8: RECURSIVEMATCH modifies another selection
    option; alone, or with only REMOTE, the command is BAD."""
    for options in ("(RECURSIVEMATCH)", "(RECURSIVEMATCH REMOTE)", "(REMOTE RECURSIVEMATCH)",
                    "(RECURSIVEMATCH RECURSIVEMATCH)"):  # fmt: skip
        lines = fruit.cmd("b", f'LIST {options} "" "%"')
        assert lines == [lines[-1]] and lines[-1].startswith(b"b BAD"), (options, lines)
    assert tagged(fruit.cmd("n", "NOOP")).startswith(b"n OK")  # the session goes on


def test_example_10_several_patterns(fruit: Raw) -> None:
    """§5 example 10 (and §3): several patterns in one LIST; each name once."""
    assert lists(run(fruit, 'LIST "" ("INBOX" "Vegetable/%" "Veg*")')) == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* LIST (\\HasChildren) "/" "Vegetable"',
        b'* LIST (\\HasNoChildren) "/" "Vegetable/Broccoli"',
        b'* LIST (\\HasNoChildren) "/" "Vegetable/Corn"',
    ]
    assert lists(run(fruit, 'LIST (SUBSCRIBED) "" ("Fruit/*" "INBOX") RETURN (CHILDREN)')) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Fruit/Banana"',
        b'* LIST (\\NonExistent \\Subscribed) "/" "Fruit/Peach"',
    ]


def test_empty_pattern_gives_delimiter_and_root(fruit: Raw) -> None:
    """RFC 3501 §6.3.8 / RFC 5258 §3: LIST "" "" answers the hierarchy delimiter."""
    assert run(fruit, 'LIST "" ""') == [b'* LIST (\\Noselect) "/" ""']
    assert run(fruit, 'LIST () "" ""') == [b'* LIST (\\Noselect) "/" ""']


def test_bad_list_extended_syntax(fruit: Raw) -> None:
    """Unknown options, an empty pattern list, a missing RETURN list: BAD, no LIST line."""
    for text in ('LIST (BOGUS) "" "%"', 'LIST "" () ', 'LIST "" "%" RETURN (BOGUS)',
                 'LIST "" "%" RETURN', 'LIST "" "%" RETURN (STATUS ())',
                 'LIST "" "%" RETURN (STATUS (MESSAGES BOGUS))', 'LIST "" "%" NONSENSE ()'):  # fmt: skip
        lines = fruit.cmd("x", text)
        assert len(lines) == 1 and lines[0].startswith(b"x BAD"), (text, lines)


def test_special_use_selection_and_recursivematch(server: WaypostServer) -> None:
    """RFC 6154 §3: LIST (SPECIAL-USE) lists only mailboxes with a special
    use; with RECURSIVEMATCH their parents come with ("CHILDINFO" ("SPECIAL-USE"))."""
    raw = login(server, "special")
    run(raw, 'CREATE "Old/Archive" (USE (\\Archive))')
    run(raw, 'CREATE "Rubbish" (USE (\\Trash))')
    run(raw, 'CREATE "Plain"')
    found = lists(run(raw, 'LIST (SPECIAL-USE) "" "*"'))
    assert b'* LIST (\\HasNoChildren \\Archive) "/" "Old/Archive"' in found
    assert b'* LIST (\\HasNoChildren \\Trash) "/" "Rubbish"' in found
    assert not any(b'"Plain"' in line or b'"INBOX"' in line for line in found)
    top = lists(run(raw, 'LIST (SPECIAL-USE RECURSIVEMATCH) "" "%"'))
    assert b'* LIST (\\Noselect \\HasChildren) "/" "Old" ("CHILDINFO" ("SPECIAL-USE"))' in top
    assert b'* LIST (\\HasNoChildren \\Trash) "/" "Rubbish"' in top
    assert not any(b'"Plain"' in line for line in top)
    # both options: subscribed AND special-use
    run(raw, 'SUBSCRIBE "Rubbish"')
    run(raw, 'SUBSCRIBE "Plain"')
    assert lists(run(raw, 'LIST (SPECIAL-USE SUBSCRIBED) "" "*"')) == [
        b'* LIST (\\HasNoChildren \\Trash \\Subscribed) "/" "Rubbish"'
    ]
    raw.close()


def _pairs(lines: list[bytes]) -> list[tuple[bytes, bytes | None]]:
    """(LIST line, the STATUS line right after it or None)."""
    out: list[tuple[bytes, bytes | None]] = []
    for line in lines:
        if line.startswith(b"* LIST"):
            out.append((line, None))
        elif line.startswith(b"* STATUS"):
            assert out and out[-1][1] is None, f"STATUS without its LIST line: {lines}"
            out[-1] = (out[-1][0], line)
    return out


def test_list_status_follows_its_list_line_and_skips_noselect(server: WaypostServer) -> None:
    """RFC 5819 §2: each STATUS right after its LIST line; none for a
    \\Noselect or \\NonExistent name; values equal to STATUS's own."""
    raw = login(server, "stat")
    run(raw, 'CREATE "Box/Inner"')  # Box: only the directory entity (\\Noselect)
    msg = b"Subject: s\r\n\r\n0123456789\r\n"
    lines = raw.cmd("a", append_cmd("Box/Inner", msg))
    assert tagged(lines).startswith(b"a OK")
    run(raw, 'SUBSCRIBE "Gone"')
    got = _pairs(run(raw, 'LIST "" "*" RETURN (STATUS (MESSAGES UIDNEXT SIZE) SUBSCRIBED)'))
    assert got == [
        (b'* LIST (\\HasNoChildren) "/" "INBOX"',
         b'* STATUS "INBOX" (MESSAGES 0 UIDNEXT 1 SIZE 0)'),
        (b'* LIST (\\Noselect \\HasChildren) "/" "Box"', None),
        (b'* LIST (\\HasNoChildren) "/" "Box/Inner"',
         b'* STATUS "Box/Inner" (MESSAGES 1 UIDNEXT 2 SIZE %d)' % len(msg)),
    ]  # fmt: skip
    got = _pairs(run(raw, 'LIST (SUBSCRIBED) "" "*" RETURN (STATUS (MESSAGES))'))
    assert got == [(b'* LIST (\\NonExistent \\Subscribed) "/" "Gone"', None)]
    own = run(raw, 'STATUS "Box/Inner" (MESSAGES UIDNEXT SIZE)')
    assert own == [b'* STATUS "Box/Inner" (MESSAGES 1 UIDNEXT 2 SIZE %d)' % len(msg)]
    raw.close()


def test_list_status_only_where_the_user_may_read(server: WaypostServer) -> None:
    """RFC 5819 with ACLs: a shared mailbox listed (l) but not readable (r) has no STATUS."""
    owner = login(server, "sharer")
    run(owner, 'CREATE "Seeonly"')
    run(owner, 'CREATE "Readable"')
    run(owner, f'SETACL "Seeonly" viewer@{DOMAIN} l')
    run(owner, f'SETACL "Readable" viewer@{DOMAIN} lr')
    owner.close()
    raw = login(server, "viewer")
    got = _pairs(
        run(raw, 'LIST "" ("~sharer/Seeonly" "~sharer/Readable") RETURN (STATUS (MESSAGES))')
    )
    assert got == [
        (b'* LIST (\\HasNoChildren) "/" "~sharer/Readable"',
         b'* STATUS "~sharer/Readable" (MESSAGES 0)'),
        (b'* LIST (\\HasNoChildren) "/" "~sharer/Seeonly"', None),
    ]  # fmt: skip
    raw.close()


def test_status_size_and_deleted(server: WaypostServer) -> None:
    """RFC 8438 SIZE (octets, the RFC822.SIZE sum) and RFC 9051 §6.3.11 DELETED."""
    raw = login(server, "sizer")
    run(raw, 'CREATE "Sizes"')
    sizes = []
    for i in range(3):
        msg = b"Subject: %d\r\n\r\n" % i + b"x" * (10 * (i + 1)) + b"\r\n"
        sizes.append(len(msg))
        assert tagged(raw.cmd("a", append_cmd("Sizes", msg))).startswith(b"a OK")
    run(raw, 'SELECT "Sizes"')
    run(raw, "STORE 1,3 +FLAGS (\\Deleted)")
    run(raw, "UNSELECT")
    got = run(raw, 'STATUS "Sizes" (SIZE DELETED MESSAGES)')
    assert got == [b'* STATUS "Sizes" (SIZE %d DELETED 2 MESSAGES 3)' % sum(sizes)]
    caps = run(raw, "CAPABILITY")[0].split()
    assert b"STATUS=SIZE" in caps and b"LIST-STATUS" in caps and b"LIST-EXTENDED" in caps
    assert b"CHILDREN" in caps
    assert tagged(raw.cmd("b", 'STATUS "Sizes" (SIZE BOGUS)')).startswith(b"b BAD")
    assert tagged(raw.cmd("c", 'STATUS "Nowhere" (SIZE)')).startswith(b"c NO [NONEXISTENT]")
    raw.close()


def test_lsub_keeps_its_rfc3501_meaning(fruit: Raw) -> None:
    """LSUB is not LIST (SUBSCRIBED): a gone name is \\Noselect, no \\Subscribed."""
    got = lists([line.replace(b"* LSUB", b"* LIST") for line in run(fruit, 'LSUB "" "*"')])
    assert b'* LIST (\\Noselect) "/" "Fruit/Peach"' in got
    assert not any(b"\\Subscribed" in line for line in got)
    assert re.search(rb'"Vegetable/Broccoli"', b"".join(got))


# -- fuzz targets for the LIST and STATUS parsers ---------------------------------------------

LIST_PIECES = st.sampled_from([
    "LIST ", "LSUB ", "STATUS ", "(", ")", " ", '"', '""', "%", "*", "/", "INBOX", "&", "-",
    "RECURSIVEMATCH", "REMOTE", "SUBSCRIBED", "SPECIAL-USE", "CHILDREN", "RETURN", "STATUS",
    "MESSAGES", "SIZE", "DELETED", "DELETED-STORAGE", "BOGUS", "{3}\r\nabc", "\x00", "é", "~",
])  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(LIST_PIECES, max_size=16).map("".join))
def test_list_and_status_parsers_fuzzed(text: str) -> None:
    """Any LIST/LSUB/STATUS line parses to arguments that keep the RFC 5258
    rules, or is a ParseError; nothing else is raised."""
    try:
        command = wire.parse(b"f " + text.encode() + b"\r\n")
    except wire.ParseError:
        return
    args = command.args
    if isinstance(args, wire.ListArgs):
        assert args.patterns
        if "RECURSIVEMATCH" in args.select:
            assert args.select & {"SUBSCRIBED", "SPECIAL-USE"}
        assert set(args.status) <= wire.STATUS_ITEMS
        assert bool(args.status) == ("STATUS" in args.returns)
    elif isinstance(args, wire.Status):
        assert args.items and set(args.items) <= wire.STATUS_ITEMS


def test_levels_percent_adds_are_nonexistent_in_extended_list(server: WaypostServer) -> None:
    """RFC 3501 §6.3.8: "%" shows a level above a visible name; when that
    level is no mailbox the user may see, a plain LIST says \\Noselect and an
    extended one \\NonExistent (RFC 5258 §3, as RFC 9051 §6.3.9 does)."""
    owner = login(server, "sharer")
    run(owner, 'CREATE "Hidden/Visible"')
    run(owner, f'SETACL "Hidden/Visible" viewer@{DOMAIN} lr')
    owner.close()
    raw = login(server, "viewer")
    pattern = '"~sharer/H%"'
    assert lists(run(raw, f'LIST "" {pattern}')) == [
        b'* LIST (\\Noselect \\HasChildren) "/" "~sharer/Hidden"'
    ]
    assert lists(run(raw, f'LIST () "" {pattern}')) == [
        b'* LIST (\\NonExistent \\HasChildren) "/" "~sharer/Hidden"'
    ]
    got = _pairs(run(raw, f'LIST "" ({pattern} "~sharer/Hidden/*") RETURN (STATUS (MESSAGES))'))
    assert got == [
        (b'* LIST (\\NonExistent \\HasChildren) "/" "~sharer/Hidden"', None),
        (b'* LIST (\\HasNoChildren) "/" "~sharer/Hidden/Visible"',
         b'* STATUS "~sharer/Hidden/Visible" (MESSAGES 0)'),
    ]  # fmt: skip
    raw.close()


def test_rev2_sessions_get_nonexistent_levels_from_the_service(tmp_path: Path) -> None:
    """IMAP4rev2 (RFC 9051 §6.3.9): the service marks "%" levels \\NonExistent
    for a rev2 session even in a plain LIST; IMAP4rev1 keeps \\Noselect.
    (ENABLE IMAP4rev2 itself comes with the rev2 work; this drives the
    service the session calls with ``rev2=self.rev2``.)"""
    services = open_services(tmp_path / "var", create=True)
    try:
        services.directory.init_server("main.dom")
        for name in ("owner", "reader"):
            services.directory.create_account(name)
        mail = MailAccess(services)
        mail.ensure_inbox("owner@main.dom")
        mail.create("owner@main.dom", "Top/Leaf")
        mail.set_acl("owner@main.dom", "Top/Leaf", "reader", "lr")
        rev1 = mail.list_mailboxes("reader@main.dom", "", ["~owner/%"])
        rev2 = mail.list_mailboxes("reader@main.dom", "", ["~owner/%"], rev2=True)
        assert [(e.name, e.attributes) for e in rev1] == [
            ("~owner/Top", ("\\Noselect", "\\HasChildren"))
        ]
        assert [(e.name, e.attributes) for e in rev2] == [
            ("~owner/Top", ("\\NonExistent", "\\HasChildren"))
        ]
    finally:
        services.close()


def test_children_count_only_what_the_user_may_see(server: WaypostServer) -> None:
    """RFC 3348 / RFC 5258 §4: \\HasChildren only for children the user can
    look up; a shared parent whose only child is hidden has no children."""
    owner = login(server, "sharer")
    run(owner, 'CREATE "Parent/Secret"')
    run(owner, 'CREATE "Parent/Open"')
    run(owner, f'SETACL "Parent" viewer@{DOMAIN} lr')
    assert lists(run(owner, 'LIST "" "Parent" RETURN (CHILDREN)')) == [
        b'* LIST (\\Noselect \\HasChildren) "/" "Parent"'
    ]
    raw = login(server, "viewer")
    assert lists(run(raw, 'LIST "" "~sharer/Parent" RETURN (CHILDREN)')) == [
        b'* LIST (\\Noselect \\HasNoChildren) "/" "~sharer/Parent"'
    ]
    run(owner, f'SETACL "Parent/Open" viewer@{DOMAIN} l')
    assert lists(run(raw, 'LIST "" "~sharer/Parent" RETURN (CHILDREN)')) == [
        b'* LIST (\\Noselect \\HasChildren) "/" "~sharer/Parent"'
    ]
    owner.close()
    raw.close()
