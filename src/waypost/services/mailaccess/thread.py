"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 §2.2, §3), pure.

Input: the :class:`~waypost.services.mailaccess.sort.SortData` of the
messages a SEARCH program found; output: a forest of ``(number, children)``
where ``number`` is None for a dummy parent (a message referred to but not
among those found), the shape ``wire.thread_line`` writes.

Choices: Message-IDs compare exactly (octet by octet, brackets removed); a
message without one, or with one already taken, gets a unique one (§2.2
step 1A); "sent date" is :attr:`SortData.date` (the internal date when the
Date header is missing or bad); equal dates keep mailbox order. Walks over
parents and children are loops, not recursion, so a reply chain thousands
deep cannot exhaust the stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter

from waypost.services.mailaccess.sort import SortData, base_subject

Tree = tuple[int | None, list["Tree"]]


def ordered_subject(messages: Sequence[SortData]) -> list[Tree]:
    """ORDEREDSUBJECT (§3): group by base subject; in each group the earliest
    message is the parent of all the others (siblings, by date); groups in
    the order of their first message's date. Grouped with a dictionary (one
    base subject per message) rather than by sorting every message on it."""
    groups: dict[str, list[SortData]] = {}
    for m in messages:
        groups.setdefault(base_subject(m.subject)[0], []).append(m)
    threads: list[tuple[SortData, list[Tree]]] = []
    for group in groups.values():
        if len(group) > 1:
            group.sort(key=_sent)
        threads.append((group[0], [(m.number, []) for m in group[1:]]))
    threads.sort(key=lambda t: _sent(t[0]))
    return [(first.number, children) for first, children in threads]


_sent = attrgetter("date", "seq")
"""The order of "sent date" with mailbox order breaking ties."""


class _Node:
    __slots__ = ("children", "message", "parent", "reply")

    def __init__(self) -> None:
        self.message: SortData | None = None
        self.parent: _Node | None = None
        self.children: list[_Node] = []
        self.reply = False

    def link(self, child: _Node) -> None:
        """Make ``child`` a child of this node, unless that makes a loop."""
        node: _Node | None = self
        while node is not None:  # not an ancestor of this node: no loop
            if node is child:
                return
            node = node.parent
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)

    def first(self) -> _Node:
        """The message that stands for this node (a dummy: its first child)."""
        node = self
        while node.message is None and node.children:
            node = node.children[0]
        return node

    def key(self) -> tuple[float, int]:
        message = self.first().message
        return (message.date, message.seq) if message is not None else (0.0, 0)


def references(messages: Sequence[SortData]) -> list[Tree]:
    """REFERENCES (§2.2 steps 1-6, §3)."""
    table: dict[str, _Node] = {}
    for m in sorted(messages, key=lambda m: m.seq):  # (1) link by the references
        mid = m.message_id
        if not mid or (mid in table and table[mid].message is not None):
            mid = f"\x00{m.seq}"  # (1A) none, or a duplicate: unique
        node = table.get(mid) or table.setdefault(mid, _Node())  # no _Node made per lookup
        node.message = m
        parent: _Node | None = None
        for ref in m.references:  # (1B) each reference the parent of the next
            ref_node = table.get(ref) or table.setdefault(ref, _Node())
            if parent is not None and ref_node.parent is None:
                parent.link(ref_node)
            parent = ref_node
        if parent is not None:  # (1C) the last reference is the parent
            parent.link(node)
        elif node.parent is not None:
            node.parent.children.remove(node)
            node.parent = None
    root = _Node()  # (2) the root set
    root.children = [node for node in table.values() if node.parent is None]
    for node in root.children:
        node.parent = root
    _prune(root)  # (4)
    _sort_siblings(root)  # (5) the root set by date
    _merge_subjects(root)  # (5A-C)
    _sort_siblings(root)  # (6) every set of siblings by date
    return [_tree(node) for node in root.children]


def _walk(root: _Node) -> list[_Node]:
    """Every node below ``root``, parents before their children."""
    out, stack = [], list(root.children)
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.children)
    return out


def _prune(root: _Node) -> None:
    """§2.2 step 4: drop dummies without children; replace a dummy by its
    children, except at the top where it has more than one child.

    Each parent's list of children is rebuilt once, children before their
    parents (so a dummy's own children are final when it is replaced): a
    splice per dummy (``list.index`` in the root's list of thousands) made
    this quadratic in the threads whose first message is missing, most of
    THREAD's time on a large mailbox."""
    for node in reversed([root, *_walk(root)]):  # children before their parents
        children = node.children
        if not any(child.message is None for child in children):
            continue
        kept: list[_Node] = []
        for child in children:
            if child.message is not None or (node is root and len(child.children) > 1):
                kept.append(child)
                continue
            for grandchild in child.children:
                grandchild.parent = node
            kept.extend(child.children)
        node.children = kept


def _sort_siblings(root: _Node) -> None:
    for node in reversed([root, *_walk(root)]):  # a dummy's children first: its date
        if len(node.children) > 1:
            node.children.sort(key=_Node.key)


def _merge_subjects(root: _Node) -> None:
    """§2.2 step 5: threads whose base subjects are equal are gathered."""
    subjects: dict[str, _Node] = {}
    for node in root.children:  # (5B) the best container per subject
        first = node.first().message
        if first is None:
            continue
        subject, node.reply = base_subject(first.subject)
        if not subject:
            continue
        held = subjects.get(subject)
        if (
            held is None
            or (held.message is not None and node.message is None)
            or (held.message is not None and held.reply and not node.reply)
        ):
            subjects[subject] = node
    tops = root.children  # (5C) merge into it; the tops are detached meanwhile,
    for node in tops:  # so that no link has to remove them from the root's long list
        node.parent = None
    gone: set[int] = set()
    replaced: dict[int, _Node] = {}  # a held top -> the dummy that took its place
    for node in tops:
        first = node.first().message
        if first is None:
            continue
        subject = base_subject(first.subject)[0]
        held = subjects.get(subject)
        if not subject or held is None or held is node:
            continue
        gone.add(id(node))
        if held.message is None and node.message is None:
            for child in list(node.children):
                held.link(child)
        elif held.message is None or (node.reply and not held.reply):
            held.link(node)
        else:
            dummy = _Node()
            replaced[id(held)] = dummy
            dummy.children.append(held)
            held.parent = dummy
            dummy.link(node)
            subjects[subject] = dummy
    root.children = [
        replaced.get(id(node), node)
        for node in tops
        if id(node) in replaced or id(node) not in gone
    ]
    for node in root.children:
        node.parent = root


def _tree(top: _Node) -> Tree:
    """The node as ``(number, children)``, built without recursion."""
    out: Tree = (top.message.number if top.message else None, [])
    stack = [(top, out)]
    while stack:
        node, tree = stack.pop()
        for child in node.children:
            sub: Tree = (child.message.number if child.message else None, [])
            tree[1].append(sub)
            stack.append((child, sub))
    return out
