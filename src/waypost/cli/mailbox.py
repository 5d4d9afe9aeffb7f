"""``waypost mailbox ...``: an account's mailboxes, ACLs, subscriptions and
mailbox aliases, for the administrator (spec/mailboxes.md §8).

Commands act with administrator rights (as the account's owner), like the CGP
CLI without ``AUTH``; ``acl`` and ``rights`` take ``--auth USER`` to act with
that user's rights on the account's mailbox instead (``GETMAILBOXACL ...
AUTH user``). Names and rights go through ``services/mailaccess``,
the same code IMAP uses.
"""

from __future__ import annotations

import time

import click

from waypost.cli.common import data_option, services
from waypost.cli.output import fail, line, table
from waypost.services.container import Services
from waypost.services.mailaccess.rights import MailboxAccess, parse_rights
from waypost.services.mailstore import INBOX, Mailstore
from waypost.storage.open import NotFound

_RAW = {"ignore_unknown_options": True, "help_option_names": ["--help"]}  # "-lrs", "-john": values


@click.group("mailbox")
def mailbox_group() -> None:
    """Mailboxes of accounts, their ACLs, subscriptions and aliases."""


@mailbox_group.command("list")
@data_option
@click.argument("account")
def list_(account: str) -> None:
    """ACCOUNT's mailboxes with message counts, sizes and attributes."""
    with services() as svc:
        address = _address(svc, account)
        boxes = Mailstore(svc.store).mailboxes(address)
        attributes = {e.name: e.attributes() for e in svc.store.mail_folders(
            *_split(address))}
    table(["mailbox", "messages", "size", "uidvalidity", "uidnext", "attributes"],
          [(b.name, b.messages, b.size, b.uidvalidity, b.uidnext,
            " ".join(attributes.get(b.name, ())) or None) for b in boxes],
          empty=f"{address} has no mailboxes yet")


@mailbox_group.command("show")
@data_option
@click.argument("account")
@click.argument("mailbox", default=INBOX)
def show(account: str, mailbox: str) -> None:
    """The messages of ACCOUNT's MAILBOX (default INBOX): UID, flags, size,
    internal date, From, Subject."""
    with services() as svc:
        address = _address(svc, account)
        store = Mailstore(svc.store)
        try:
            info = store.mailbox(address, mailbox)
        except NotFound:
            if mailbox.upper() != INBOX:
                raise
            line(f"{INBOX} of {address}: 0 messages")  # created at the first delivery
            return
        messages = store.list_messages(address, info.name)
    line(f"{info.name} of {address}: {info.messages} messages, {info.size} octets, "
         f"UIDVALIDITY {info.uidvalidity}, UIDNEXT {info.uidnext}")
    if messages:
        line()
    table(["uid", "flags", "size", "date", "from", "subject"],
          [(m.uid, " ".join(m.flags) or None, m.size,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.internal_date)),
            m.summary.get("from") or None, m.summary.get("subject") or None)
           for m in messages])


@mailbox_group.command("create")
@data_option
@click.argument("account")
@click.argument("name")
@click.option("--special-use", "use", metavar="USE",
              help="SPECIAL-USE attribute (\\Sent, \\Drafts, \\Trash, \\Junk, \\Archive, ...)")
def create(account: str, name: str, use: str | None) -> None:
    """Create mailbox NAME in ACCOUNT (``A/B`` also makes ``A``; ``A/`` makes
    only the folder ``A``, not selectable)."""
    with services() as svc:
        address = _address(svc, account)
        target = MailboxAccess(svc).create(address, name, special_use=use)
    line(f"mailbox {target.mailbox_name}{'/' if name.endswith('/') else ''} created in"
         f" {target.owner}")


@mailbox_group.command("delete")
@data_option
@click.argument("account")
@click.argument("name")
@click.option("--recursive", is_flag=True, help="delete the sub-mailboxes too (MAILBOXES)")
def delete(account: str, name: str, recursive: bool) -> None:
    """Delete mailbox NAME of ACCOUNT with its messages. A mailbox with
    sub-mailboxes keeps its name as a folder unless --recursive."""
    with services() as svc:
        address = _address(svc, account)
        access = MailboxAccess(svc)
        target = access.resolve(address, name)
        if recursive:
            svc.store.mail_delete_mailbox(*target.ref, recursive=True)
        else:
            access.delete(address, name)
    line(f"mailbox {target.mailbox_name} of {target.owner} deleted"
         + (" with its sub-mailboxes" if recursive else ""))


@mailbox_group.command("rename")
@data_option
@click.argument("account")
@click.argument("old")
@click.argument("new")
def rename(account: str, old: str, new: str) -> None:
    """Rename mailbox OLD of ACCOUNT (with its sub-mailboxes) to NEW. Renaming
    INBOX moves its messages and leaves an empty INBOX."""
    with services() as svc:
        address = _address(svc, account)
        target = MailboxAccess(svc).rename(address, old, new)
    line(f"mailbox {old} of {target.owner} renamed to {target.mailbox_name}")


@mailbox_group.command("acl", context_settings=_RAW)
@data_option
@click.option("--auth", "auth_user", metavar="USER",
              help="act with USER's rights instead of as administrator")
@click.argument("account")
@click.argument("name")
@click.argument("change", nargs=-1, type=click.UNPROCESSED)
def acl(account: str, name: str, change: tuple[str, ...], auth_user: str | None) -> None:
    """Show the ACL of mailbox NAME of ACCOUNT, or set one entry:
    IDENTIFIER RIGHTS (``lrs`` replaces, ``+w`` adds, ``-w`` removes; ``none``
    or ``""`` deletes the entry). Identifiers: ``name``, ``name@domain``,
    ``anyone``, ``anyone@``, ``anyone@domain``, ``#group``, ``-identifier``."""
    if len(change) not in (0, 2):
        raise click.UsageError("give IDENTIFIER RIGHTS, or nothing to show the ACL")
    with services() as svc:
        user, mailbox = _acting(svc, account, name, auth_user)
        access = MailboxAccess(svc)
        if change:
            identifier, rights = change
            mode, letters = parse_rights(rights)
            if mode == "replace" and not letters:
                removed = access.delete_acl(user, mailbox, identifier)
                if not removed:
                    fail(f"{name} has no ACL entry for {identifier}")
                line(f"ACL entry {identifier} removed from {name}")
                return
            now = access.set_acl(user, mailbox, identifier, rights)
            line(f"{identifier} on {name}: {_stored(now) or 'no rights (entry removed)'}")
            return
        entries = access.get_acl(user, mailbox)
    table(["identifier", "rights", "imap"],
          [(ident, _stored(wire), wire) for ident, wire in entries],
          empty=f"{name} has no ACL entries: only the owner and administrators have access")


@mailbox_group.command("rights")
@data_option
@click.argument("account")
@click.argument("name")
@click.option("--auth", "auth_user", metavar="USER", required=True,
              help="whose rights to show")
def rights(account: str, name: str, auth_user: str) -> None:
    """The effective rights of USER on mailbox NAME of ACCOUNT (GETMAILBOXRIGHTS)."""
    with services() as svc:
        user, mailbox = _acting(svc, account, name, auth_user)
        wire = MailboxAccess(svc).my_rights(user, mailbox)
    line(f"{_stored(wire)} (IMAP {wire})")


@mailbox_group.command("use")
@data_option
@click.argument("account")
@click.argument("name")
@click.argument("use")
def use_(account: str, name: str, use: str) -> None:
    """Set the SPECIAL-USE attribute of mailbox NAME (``\\Sent``, ``\\Trash``,
    ...); ``none`` removes it, ``default`` goes back to the one its name implies."""
    value: str | None = {"none": "", "default": None}.get(use.lower(), use)
    with services() as svc:
        address = _address(svc, account)
        svc.store.mail_set_special_use(*_split(address), name, value)
        entry = svc.store.mail_folder(*_split(address), name)
    line(f"{entry.name} of {address}: {entry.special_use or 'no special use'}")


@mailbox_group.command("subscribe")
@data_option
@click.argument("account")
@click.argument("name")
def subscribe(account: str, name: str) -> None:
    """Add NAME (may be foreign: ``~owner/box``) to ACCOUNT's subscription list."""
    with services() as svc:
        address = _address(svc, account)
        MailboxAccess(svc).subscribe(address, name)
    line(f"{address} subscribed to {name}")


@mailbox_group.command("unsubscribe")
@data_option
@click.argument("account")
@click.argument("name")
def unsubscribe(account: str, name: str) -> None:
    """Remove NAME from ACCOUNT's subscription list."""
    with services() as svc:
        address = _address(svc, account)
        if not MailboxAccess(svc).unsubscribe(address, name):
            fail(f"{address} is not subscribed to {name}")
    line(f"{address} unsubscribed from {name}")


@mailbox_group.command("subscriptions")
@data_option
@click.argument("account")
def subscriptions(account: str) -> None:
    """ACCOUNT's Mailbox Subscription list, with whether each name exists."""
    with services() as svc:
        address = _address(svc, account)
        entries = MailboxAccess(svc).list_subscribed(address, "", "*", extended=True)
    table(["mailbox", "state"],
          [(e.name, "missing" if "\\NonExistent" in e.attributes else "ok") for e in entries],
          empty=f"{address} is subscribed to nothing")


@mailbox_group.command("alias")
@data_option
@click.argument("account")
@click.argument("alias", required=False)
@click.argument("target", required=False)
def alias(account: str, alias: str | None, target: str | None) -> None:
    """List ACCOUNT's mailbox aliases, or make ALIAS stand for TARGET (often
    foreign: ``~marketing/announce``)."""
    if alias is not None and target is None:
        raise click.UsageError("give ALIAS TARGET, or nothing to list the aliases")
    with services() as svc:
        address = _address(svc, account)
        access = MailboxAccess(svc)
        if alias is not None and target is not None:
            access.set_alias(address, alias, target)
            line(f"{alias} of {address} now stands for {target}")
            return
        aliases = access.aliases(address)
    table(["alias", "target"], sorted(aliases.items()),
          empty=f"{address} has no mailbox aliases")


@mailbox_group.command("unalias")
@data_option
@click.argument("account")
@click.argument("alias")
def unalias(account: str, alias: str) -> None:
    """Remove mailbox alias ALIAS of ACCOUNT (the target mailbox stays)."""
    with services() as svc:
        address = _address(svc, account)
        MailboxAccess(svc).remove_alias(address, alias)
    line(f"mailbox alias {alias} of {address} removed")


def _address(svc: Services, account: str) -> str:
    record = svc.directory.get_account(account)
    return f"{record.name}@{record.domain}"


def _split(address: str) -> tuple[str, str]:
    name, _, domain = address.rpartition("@")
    return domain, name


def _acting(svc: Services, account: str, name: str, auth_user: str | None) -> tuple[str, str]:
    """(user, mailbox name as that user writes it): the owner itself, or with
    ``--auth`` another user reaching the owner's mailbox as ``~owner@domain/name``."""
    owner = _address(svc, account)
    if auth_user is None:
        return owner, name
    return _address(svc, auth_user), f"~{owner}/{name}"


def _stored(wire: str) -> str:
    """RFC 4314 letters back to CGP letters for display (``kxc`` -> ``c``)."""
    return parse_rights(wire)[1] if wire else ""


COMMANDS = [mailbox_group]
