"""The Directory: domains, accounts, aliases, forwarders, groups, lists, rights.

Behaviour of spec/domains-accounts.md over a :class:`Store`. The CLI and the
protocols call it (from a worker thread: hashing and SQL block). The Router
never does; it reads the immutable :class:`DirectorySnapshot` built by
:meth:`Directory.snapshot`.

Addresses here are the Directory's own form: ``name@domain`` or plain
``name`` (the Main Domain); a domain alias may stand for its domain. Routing
forms (``%``, Router records) are resolved by the Router before they get here.

Errors: :class:`DirectoryError` for a refused request (bad name, bad setting,
rights rule), :class:`NotFound` / :class:`AlreadyExists` from the store for
missing or duplicate names. All carry one human-readable line.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from waypost.services import passwords, sealed
from waypost.services.mailaccess.names import check_template
from waypost.services.names import DirectoryError, domain_name, object_name, split_address
from waypost.services.router.view import (
    DirectorySnapshot,
    DirObject,
    DomainView,
    ObjectKind,
    UnknownMode,
    UnknownPolicy,
)
from waypost.settings import split_list
from waypost.storage.interface import DomainRecord, NotFound, ObjectRecord, Store

__all__ = ["Directory", "DirectoryError"]

ACCOUNT = ObjectKind.ACCOUNT.value
ALIAS = ObjectKind.ALIAS.value
FORWARDER = ObjectKind.FORWARDER.value
GROUP = ObjectKind.GROUP.value
LIST = ObjectKind.LIST.value
POSTMASTER = "postmaster"
DEFAULT = "default"  # a setting value meaning "remove the key, inherit"

SERVER_RIGHTS = ("Master", "Settings", "Users", "DomainsRead", "AllDomains", "Monitors",
                 "Directory")
DOMAIN_RIGHTS = (
    "Domain", "BasicSettings", "PSTNSettings", "CanCreateAccounts", "CanCreateAliases",
    "CanCreateGroups", "CanCreateForwarders", "CanCreateLists", "CanCreateNamedTasks",
    "CanAccessWebSites", "CanAccessMailboxes", "CanImpersonate", "CanModifyRules",
    "CanModifyPasswords",
)
_RIGHTS = {r.lower(): r for r in SERVER_RIGHTS + DOMAIN_RIGHTS}

# CGP service names for AccessModes / DomainAccessModes.
SERVICES = ("Mail", "Relay", "Signal", "Mobile", "TLS", "POP", "IMAP", "MAPI", "AirSync", "SIP",
            "XMPP", "WebMail", "XIMSS", "FTP", "ACAP", "PWD", "LDAP", "RADIUS", "S/MIME",
            "WebCAL", "WebSite", "PBX", "HTTP")

# Built-in server-wide domain defaults (spec §2.4, default first).
DOMAIN_DEFAULTS: dict[str, Any] = {
    "MailToUnknown": UnknownMode.REJECTED.value,
    "SignalToUnknown": UnknownMode.REJECTED.value,
    "AccessToUnknown": UnknownMode.REJECTED.value,
    "WebSitePrefix": "~",
    "DomainAccessModes": "All",
}
# Built-in server-wide Default Account Settings (spec §4.2).
ACCOUNT_DEFAULTS: dict[str, Any] = {
    "AccessModes": "All",
    "MaxAccountSize": "unlimited",
    "MaxWebSize": "100M",
    "MaxWebFiles": "1000",
    "DefaultWebPage": "default.html",
    "RulesAllowed": "Filter Only",
    "RPOPAllowed": "NO",
}
# Administrator overrides of the built-in defaults, JSON in the settings table.
SETTING_DOMAIN_DEFAULTS = "DomainDefaults"
SETTING_ACCOUNT_DEFAULTS = "ServerAccountDefaults"
TEMPLATE_KEYS = ("Settings", "Mailboxes", "Subscriptions", "MailboxAliases", "Rules")

_UNKNOWN_KEYS = {  # mode key -> (reroute key, allowed modes)
    "MailToUnknown": ("MailRerouteAddress", tuple(m.value for m in UnknownMode)),
    "SignalToUnknown": ("SignalRerouteAddress", tuple(m.value for m in UnknownMode)),
    "AccessToUnknown": ("AccessRerouteAddress",
                        (UnknownMode.REJECTED.value, UnknownMode.REROUTED.value)),
}


class DomainFiles(Protocol):
    """Files kept in the data directory per domain (skins; later file storage):
    told when a domain is renamed or deleted, so its files move or go with it."""

    def domain_renamed(self, old: str, new: str) -> None: ...

    def domain_deleted(self, name: str) -> None: ...

    def domain_created(self, name: str) -> None: ...


class Directory:
    """Domains and their objects, as administrators and protocols see them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.domain_files: list[DomainFiles] = []
        """Registered by the services container (``Services``)."""
        self._cached: tuple[int, DirectorySnapshot] | None = None
        self._snapshot_lock = threading.Lock()

    # -- server ------------------------------------------------------------

    def init_server(self, main_domain: str) -> str:
        """Create the Main Domain and ``postmaster`` (Master); return its password."""
        existing = [d.name for d in self.store.list_domains() if d.is_main]
        if existing:
            raise DirectoryError(f"the server is already initialised: Main Domain {existing[0]}")
        self.store.create_domain(domain_name(main_domain), is_main=True)
        password = passwords.generate_password()
        self.create_account(POSTMASTER, password=password)
        self.set_rights(POSTMASTER, ["Master"])
        return password

    def main_domain(self) -> str:
        for domain in self.store.list_domains():
            if domain.is_main:
                return domain.name
        raise NotFound("the server has no Main Domain; run `waypost init`")

    # -- domains -----------------------------------------------------------

    def list_domains(self) -> list[DomainRecord]:
        return self.store.list_domains()

    def get_domain(self, name: str) -> DomainRecord:
        """The domain called ``name`` or having it as a Domain Alias."""
        canonical = domain_name(name)
        try:
            return self.store.get_domain(canonical)
        except NotFound:
            for domain in self.store.list_domains():
                if canonical in (a.lower() for a in domain.aliases):
                    return domain
            raise

    def create_domain(self, name: str, settings: Mapping[str, Any] | None = None) -> DomainRecord:
        canonical = domain_name(name)
        stored = self._validated_domain_settings(canonical, {}, settings or {})
        with self.store.transaction():
            self.store.create_domain(canonical)
            if stored:
                self.store.update_domain(canonical, settings=stored)
        for files in self.domain_files:  # a new domain never inherits a deleted one's files
            files.domain_created(canonical)
        return self.store.get_domain(canonical)

    def delete_domain(self, name: str, force: bool = False) -> None:
        """Delete a secondary domain; with objects in it only when ``force``."""
        domain = self._real_domain(name)
        if domain.is_main:
            raise DirectoryError(f"the Main Domain {domain.name} cannot be deleted")
        count = len(self.store.list_objects(domain.name))
        if count and not force:
            raise DirectoryError(
                f"domain {domain.name} is not empty ({count} objects); use force to delete it"
                " with everything in it"
            )
        self.store.delete_domain(domain.name)
        for files in self.domain_files:
            files.domain_deleted(domain.name)

    def rename_domain(self, old: str, new: str) -> None:
        """Rename a domain; its files (skins) move with it: first the files, then
        the store, and the files back if the store refuses."""
        current, target = self._real_domain(old).name, domain_name(new)
        moved: list[DomainFiles] = []
        try:
            for files in self.domain_files:
                files.domain_renamed(current, target)
                moved.append(files)
            self.store.rename_domain(current, target)
        except BaseException:
            for files in reversed(moved):
                files.domain_renamed(target, current)
            raise

    def add_domain_alias(self, name: str, alias: str) -> None:
        self.store.add_domain_alias(self._real_domain(name).name, domain_name(alias))

    def remove_domain_alias(self, name: str, alias: str) -> None:
        self.store.remove_domain_alias(self._real_domain(name).name, domain_name(alias))

    def set_domain_aliases(self, name: str, aliases: Iterable[str]) -> None:
        """Make the alias list exactly ``aliases`` (CLI ``SetDomainAliases``)."""
        domain = self._real_domain(name)
        wanted = {domain_name(a) for a in aliases}
        current = {a.lower() for a in domain.aliases}
        for alias in sorted(current - wanted):
            self.store.remove_domain_alias(domain.name, alias)
        for alias in sorted(wanted - current):
            self.store.add_domain_alias(domain.name, alias)

    def domain_settings(self, name: str) -> dict[str, Any]:
        return dict(self.get_domain(name).settings)

    def effective_domain_settings(self, name: str) -> dict[str, Any]:
        """Domain settings with the server-wide defaults filled in."""
        return {**self.server_domain_defaults(), **self.get_domain(name).settings}

    def set_domain_settings(self, name: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` (value ``default`` removes a key); return the stored settings."""
        domain = self.get_domain(name)
        stored = self._validated_domain_settings(domain.name, domain.settings, changes)
        self.store.update_domain(domain.name, settings=stored)
        return stored

    def server_domain_defaults(self) -> dict[str, Any]:
        """Built-in domain defaults overridden by the administrator's ones."""
        return {**DOMAIN_DEFAULTS, **self._json_setting(SETTING_DOMAIN_DEFAULTS)}

    def set_server_domain_defaults(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        if any(_key(k, _DOMAIN_VALIDATORS) == "AssignedIPAddresses" for k in changes):
            raise DirectoryError("AssignedIPAddresses is a per-domain setting, not a default")
        current = self._json_setting(SETTING_DOMAIN_DEFAULTS)
        stored = _merge(current, changes, _DOMAIN_VALIDATORS)
        _check_reroutes({**DOMAIN_DEFAULTS, **stored})
        self._set_json_setting(SETTING_DOMAIN_DEFAULTS, stored)
        return stored

    # -- account defaults and templates --------------------------------------

    def account_defaults(self, domain: str) -> dict[str, Any]:
        return dict(self.get_domain(domain).account_defaults)

    def set_account_defaults(self, domain: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        record = self.get_domain(domain)
        stored = _merge_account_settings(record.account_defaults, changes)
        self.store.update_domain(record.name, account_defaults=stored)
        return stored

    def server_account_defaults(self) -> dict[str, Any]:
        return {**ACCOUNT_DEFAULTS, **self._json_setting(SETTING_ACCOUNT_DEFAULTS)}

    def set_server_account_defaults(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        stored = _merge_account_settings(self._json_setting(SETTING_ACCOUNT_DEFAULTS), changes)
        self._set_json_setting(SETTING_ACCOUNT_DEFAULTS, stored)
        return stored

    def account_template(self, domain: str) -> dict[str, Any]:
        return dict(self.get_domain(domain).template)

    def set_account_template(self, domain: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Merge template keys (``Settings``, ``Mailboxes``, ``Subscriptions``,
        ``MailboxAliases``, ``Rules``); existing accounts are not touched (§5)."""
        record = self.get_domain(domain)
        template = dict(record.template)
        for key, value in changes.items():
            canonical = _key(key, dict.fromkeys(TEMPLATE_KEYS))
            if _is_default(value):
                template.pop(canonical, None)
            else:
                template[canonical] = _template_value(canonical, value)
        self.store.update_domain(record.name, template=template)
        return template

    # -- accounts ------------------------------------------------------------

    def create_account(
        self, address: str, password: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> str:
        """Create an account; its settings start as the domain template's ``Settings``.

        Returns the account's address ``name@domain``. The template's
        Mailboxes/Subscriptions/MailboxAliases are for the mailstore to apply.
        """
        domain, name = self._locate(address)
        record = self.store.get_domain(domain)
        changes = dict(settings or {})
        password = _pop_password(changes, password)
        initial = _merge_account_settings(record.template.get("Settings", {}), changes)
        secret = passwords.hash_password(password) if password else None
        data: dict[str, Any] = {"Settings": initial, "Rights": []}
        effective = {**self.server_account_defaults(), **record.account_defaults, **initial}
        if password and sealed.wants_cram(effective):
            data["Sealed"] = {"CRAM-MD5": sealed.seal(self.store.data_dir, password)}
        self.store.create_object(ObjectRecord(
            domain=domain, name=name, kind=ACCOUNT, data=data, secret=secret,
        ))
        mail = {key: record.template.get(key) for key in ("Mailboxes", "Subscriptions",
                                                           "MailboxAliases")}
        if any(mail.values()):  # the template's mailboxes, subscriptions, aliases (§5)
            try:
                check_template(mail["Mailboxes"] or (), mail["Subscriptions"] or (),
                               mail["MailboxAliases"])
                self.store.mail_apply_template(
                    domain, name, mailboxes=mail["Mailboxes"] or (),
                    subscriptions=mail["Subscriptions"] or (), aliases=mail["MailboxAliases"])
            except Exception as exc:
                self.store.delete_object(domain, name)
                raise DirectoryError(f"the Account Template of {domain} cannot be applied:"
                                     f" {exc}") from exc
        return f"{name}@{domain}"

    def get_account(self, address: str) -> ObjectRecord:
        """The account record (``secret`` is the argon2 hash: never show it)."""
        return self._get(address, ACCOUNT)

    def list_accounts(self, domain: str | None = None) -> list[ObjectRecord]:
        return self._list(domain, ACCOUNT)

    def delete_account(self, address: str) -> None:
        """Delete an account and its aliases (they are names of the account)."""
        record = self._get(address, ACCOUNT)
        with self.store.transaction():
            for alias in self._aliases_of(record):
                self.store.delete_object(record.domain, alias.name)
            self.store.delete_object(record.domain, record.name)

    def rename_account(self, address: str, new_name: str) -> None:
        """Rename within the domain; the account's aliases follow it."""
        record = self._get(address, ACCOUNT)
        aliases = self._aliases_of(record)
        new = self._new_name(record, new_name)
        with self.store.transaction():  # the account and its aliases move together
            self.store.rename_object(record.domain, record.name, new)
            for alias in aliases:
                self.store.update_object(record.domain, alias.name,
                                         data={**alias.data, "Target": new})

    def account_settings(self, address: str) -> dict[str, Any]:
        return dict(self._get(address, ACCOUNT).data.get("Settings", {}))

    def set_account_settings(self, address: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` (``default`` removes; ``Password`` sets the password)."""
        record = self._get(address, ACCOUNT)
        changes = dict(changes)
        password = _pop_password(changes, None)
        settings = _merge_account_settings(record.data.get("Settings", {}), changes)
        secret = passwords.hash_password(password) if password else None
        data = {**record.data, "Settings": settings}
        domain = self.store.get_domain(record.domain)
        if not sealed.wants_cram({**self.server_account_defaults(), **domain.account_defaults,
                                  **settings}):
            data.pop("Sealed", None)  # leaving argon2+cram-md5 forgets the sealed copy
        self.store.update_object(record.domain, record.name, data=data, secret=secret)
        if password:
            self.set_password(address, password)
        return settings

    def account_prefs(self, address: str) -> dict[str, Any]:
        """The account's stored Preferences (CGP ``GetAccountPrefs``): what the
        user chooses for himself (WebUser options), apart from the Settings an
        administrator sets. Defaults are the reader's (``services/preferences.py``)."""
        prefs = self._get(address, ACCOUNT).data.get("Prefs") or {}
        return dict(prefs) if isinstance(prefs, dict) else {}

    def set_account_prefs(self, address: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` into the Preferences; a value of ``default`` (or
        None) removes the key. Returns the stored Preferences."""
        record = self._get(address, ACCOUNT)
        prefs = record.data.get("Prefs") or {}
        prefs = dict(prefs) if isinstance(prefs, dict) else {}
        for key, value in changes.items():
            if value is None or value == "default":
                prefs.pop(key, None)
            else:
                prefs[key] = value
        self.store.update_object(record.domain, record.name, data={**record.data, "Prefs": prefs})
        return prefs

    def effective_account_settings(self, address: str) -> dict[str, Any]:
        """Account settings, then the domain's AccountDefaults, then the server's."""
        record = self._get(address, ACCOUNT)
        domain = self.store.get_domain(record.domain)
        return {**self.server_account_defaults(), **domain.account_defaults,
                **record.data.get("Settings", {})}

    def service_enabled(self, address: str, service: str) -> bool:
        """May the account use ``service`` (``POP``, ``IMAP``, ...)? Only if both
        its effective AccessModes and its domain's DomainAccessModes allow it
        (spec §4.2)."""
        record = self._get(address, ACCOUNT)
        account_modes = self.effective_account_settings(address).get("AccessModes", "All")
        domain_modes = self.effective_domain_settings(record.domain).get(
            "DomainAccessModes", "All")
        return _allows(account_modes, service) and _allows(domain_modes, service)

    def set_password(self, address: str, password: str) -> None:
        if not isinstance(password, str) or not password:
            raise DirectoryError("the password must not be empty")
        record = self._get(address, ACCOUNT)
        data = {k: v for k, v in record.data.items() if k != "Sealed"}
        if sealed.wants_cram(self.effective_account_settings(address)):
            data["Sealed"] = {"CRAM-MD5": sealed.seal(self.store.data_dir, password)}
        self.store.update_object(record.domain, record.name, data=data,
                                 secret=passwords.hash_password(password))

    def cram_secret(self, address: str) -> str | None:
        """The password kept for CRAM-MD5 (``PasswordEncryption`` =
        ``argon2+cram-md5``), or None: see ``services/sealed.py``."""
        try:
            record = self._get(address, ACCOUNT)
        except (NotFound, DirectoryError):
            return None
        token = record.data.get("Sealed", {}).get("CRAM-MD5")
        if not token or not sealed.wants_cram(self.effective_account_settings(address)):
            return None
        return sealed.unseal(self.store.data_dir, token)

    def verify_password(self, address: str, password: str) -> bool:
        """True if ``address`` is an account with this password.

        Unknown names cost one argon2 verification too, so timing does not
        tell which names exist.
        """
        try:
            record = self._get(address, ACCOUNT)
        except (NotFound, DirectoryError):
            return passwords.verify_dummy(password)
        if not record.secret:
            return passwords.verify_dummy(password)
        return passwords.verify_password(record.secret, password)

    # -- administrator rights ------------------------------------------------

    def get_rights(self, address: str) -> list[str]:
        return list(self._get(address, ACCOUNT).data.get("Rights", []))

    def set_rights(self, address: str, rights: Iterable[str]) -> list[str]:
        """Replace the account's rights; server rights only in the Main Domain (§6.1)."""
        record = self._get(address, ACCOUNT)
        wanted = {_right(r) for r in rights}
        server = [r for r in SERVER_RIGHTS if r in wanted]
        main = self.main_domain()
        if server and record.domain.lower() != main.lower():
            raise DirectoryError(
                f"server rights ({', '.join(server)}) can only be granted to accounts of the"
                f" Main Domain {main}; {record.name}@{record.domain} is a secondary-domain account"
            )
        ordered = [r for r in SERVER_RIGHTS + DOMAIN_RIGHTS if r in wanted]
        self.store.update_object(record.domain, record.name,
                                 data={**record.data, "Rights": ordered})
        return ordered

    def has_domain_right(self, admin_address: str, target_domain: str, right: str) -> bool:
        """May ``admin_address`` use Domain Administrator ``right`` on ``target_domain``?

        Master may do everything; ``AllDomains`` extends the admin's domain
        rights to every domain; otherwise it needs ``Domain`` on its own domain.
        """
        wanted = _right(right)
        try:
            admin = self._get(admin_address, ACCOUNT)
            target = self.get_domain(target_domain)
        except (NotFound, DirectoryError):
            return False
        rights = set(admin.data.get("Rights", []))
        if "Master" in rights:
            return True
        if wanted not in rights:
            return False
        if "AllDomains" in rights:
            return True
        return "Domain" in rights and admin.domain.lower() == target.name.lower()

    def can_access_mailboxes(self, admin_address: str, target_domain: str) -> bool:
        """§6.2 / How To: may this admin open any mailbox of ``target_domain``?"""
        return self.has_domain_right(admin_address, target_domain, "CanAccessMailboxes")

    # -- account aliases -----------------------------------------------------

    def add_alias(self, alias_address: str, account_address: str) -> None:
        account = self._get(account_address, ACCOUNT)
        domain, name = self._locate(alias_address, default_domain=account.domain)
        if domain.lower() != account.domain.lower():
            raise DirectoryError(
                f"alias {alias_address!r} must be in the account's domain {account.domain}"
            )
        self.store.create_object(ObjectRecord(domain=account.domain, name=name, kind=ALIAS,
                                              data={"Target": account.name}))

    def get_alias(self, alias_address: str) -> ObjectRecord:
        """The alias record; ``data["Target"]`` is the account name."""
        return self._get(alias_address, ALIAS)

    def remove_alias(self, alias_address: str) -> None:
        self._delete(alias_address, ALIAS)

    def list_aliases(self, domain: str | None = None) -> list[ObjectRecord]:
        """Every account alias of ``domain`` (the Main Domain when omitted)."""
        return self._list(domain, ALIAS)

    def account_aliases(self, account_address: str) -> list[str]:
        """Names of one account's aliases."""
        return [a.name for a in self._aliases_of(self._get(account_address, ACCOUNT))]

    def set_aliases(self, account_address: str, names: Iterable[str]) -> None:
        """Make the account's alias list exactly ``names`` (CLI ``SetAccountAliases``)."""
        account = self._get(account_address, ACCOUNT)
        current = {a.name.lower(): a.name for a in self._aliases_of(account)}
        wanted = {object_name(n).lower(): n for n in names}
        for lower in current.keys() - wanted.keys():
            self.store.delete_object(account.domain, current[lower])
        for lower in wanted.keys() - current.keys():
            self.add_alias(f"{wanted[lower]}@{account.domain}", f"{account.name}@{account.domain}")

    # -- forwarders ----------------------------------------------------------

    def create_forwarder(self, address: str, target: str) -> None:
        domain, name = self._locate(address)
        self.store.create_object(ObjectRecord(domain=domain, name=name, kind=FORWARDER,
                                              data={"Target": _target(target)}))

    def get_forwarder(self, address: str) -> ObjectRecord:
        """The forwarder record; ``data["Target"]`` is the address."""
        return self._get(address, FORWARDER)

    def set_forwarder(self, address: str, target: str) -> None:
        record = self._get(address, FORWARDER)
        self.store.update_object(record.domain, record.name,
                                 data={**record.data, "Target": _target(target)})

    def list_forwarders(self, domain: str | None = None) -> list[ObjectRecord]:
        return self._list(domain, FORWARDER)

    def delete_forwarder(self, address: str) -> None:
        self._delete(address, FORWARDER)

    def rename_forwarder(self, address: str, new_name: str) -> None:
        self._rename(address, FORWARDER, new_name)

    # -- groups --------------------------------------------------------------

    def create_group(
        self, address: str, members: Iterable[str] = (),
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        domain, name = self._locate(address)
        data = {"Members": _members(members), "Settings": _plain_dict("group settings",
                                                                       settings or {})}
        self.store.create_object(ObjectRecord(domain=domain, name=name, kind=GROUP, data=data))

    def get_group(self, address: str) -> ObjectRecord:
        return self._get(address, GROUP)

    def group_members(self, address: str) -> list[str]:
        return list(self._get(address, GROUP).data.get("Members", []))

    def set_group_members(self, address: str, members: Iterable[str]) -> None:
        record = self._get(address, GROUP)
        self.store.update_object(record.domain, record.name,
                                 data={**record.data, "Members": _members(members)})

    def add_group_member(self, address: str, member: str) -> None:
        members = self.group_members(address)
        if _target(member).lower() in (m.lower() for m in members):
            raise DirectoryError(f"{member} is already a member of {address}")
        self.set_group_members(address, [*members, member])

    def remove_group_member(self, address: str, member: str) -> None:
        members = self.group_members(address)
        kept = [m for m in members if m.lower() != member.strip().lower()]
        if len(kept) == len(members):
            raise NotFound(f"{member} is not a member of {address}")
        self.set_group_members(address, kept)

    def list_groups(self, domain: str | None = None) -> list[ObjectRecord]:
        return self._list(domain, GROUP)

    def delete_group(self, address: str) -> None:
        self._delete(address, GROUP)

    def rename_group(self, address: str, new_name: str) -> None:
        self._rename(address, GROUP, new_name)

    # -- mailing lists -------------------------------------------------------

    def create_list(self, address: str, owner: str) -> None:
        """A list owned by an account of the same domain (plain owner name = that domain)."""
        domain, name = self._locate(address)
        owner_record = self._get(owner, ACCOUNT, default_domain=domain)
        if owner_record.domain.lower() != domain.lower():
            raise DirectoryError(
                f"the owner of list {name}@{domain} must be an account of {domain}"
            )
        self.store.create_object(ObjectRecord(
            domain=domain, name=name, kind=LIST,
            data={"Owner": owner_record.name, "Settings": {}, "Subscribers": []},
        ))

    def get_list(self, address: str) -> ObjectRecord:
        return self._get(address, LIST)

    def update_list(self, address: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Merge list settings (``default`` removes); ``Owner`` changes the owner."""
        record = self._get(address, LIST)
        data = dict(record.data)
        settings = dict(data.get("Settings", {}))
        for key, value in changes.items():
            if str(key).lower() == "owner":
                owner = self._get(str(value), ACCOUNT, default_domain=record.domain)
                if owner.domain.lower() != record.domain.lower():
                    raise DirectoryError(f"the owner must be an account of {record.domain}")
                data["Owner"] = owner.name
            elif _is_default(value):
                settings.pop(key, None)
            else:
                settings[str(key)] = _json_value(str(key), value)
        data["Settings"] = settings
        self.store.update_object(record.domain, record.name, data=data)
        return settings

    def list_lists(self, domain: str | None = None) -> list[ObjectRecord]:
        return self._list(domain, LIST)

    def delete_list(self, address: str) -> None:
        self._delete(address, LIST)

    def rename_list(self, address: str, new_name: str) -> None:
        self._rename(address, LIST, new_name)

    # -- any object ----------------------------------------------------------

    def find_object(self, address: str) -> ObjectRecord:
        """Whatever object has this name."""
        domain, name = self._locate(address)
        return self.store.get_object(domain, name)

    # -- the Router's view -----------------------------------------------------

    def snapshot(self) -> DirectorySnapshot:
        """The current snapshot; rebuilt only when the store's version moved."""
        version = self.store.version()
        cached = self._cached
        if cached is not None and cached[0] == version:
            return cached[1]
        with self._snapshot_lock:
            cached = self._cached
            if cached is None or cached[0] != version:
                # Changes made while building give a newer version: rebuilt next time.
                cached = (version, self._build_snapshot())
                self._cached = cached
            return cached[1]

    def _build_snapshot(self) -> DirectorySnapshot:
        settings = self.store.get_settings()
        defaults = self.server_domain_defaults()
        main = ""
        domains: dict[str, DomainView] = {}
        aliases: dict[str, str] = {}
        ip_domains: dict[str, str] = {}
        for record in self.store.list_domains():
            name = record.name.lower()
            effective = {**defaults, **record.settings}
            domains[name] = DomainView(
                name=name,
                mail_unknown=_policy(effective, "MailToUnknown"),
                signal_unknown=_policy(effective, "SignalToUnknown"),
                access_unknown=_policy(effective, "AccessToUnknown"),
            )
            aliases.update((a.lower(), name) for a in record.aliases)
            if record.is_main:
                main = name
            else:
                for ip in _ip_list(record.settings.get("AssignedIPAddresses", "")):
                    ip_domains[ip] = name
        objects: dict[tuple[str, str], DirObject] = {}
        for obj in self.store.all_objects():
            view = _dir_object(obj)
            if view is not None:
                objects[(obj.domain.lower(), obj.name.lower())] = view
        own_ips = {"127.0.0.1", "0.0.0.0", *ip_domains}
        own_ips.update(_ip_list(settings.get("ServerIPAddresses", ""), strict=False))
        # list format as in settings.split_list; an ATRN "= account" part is not a pattern
        hold = tuple(p for p in (item.partition("=")[0].strip().lower()
                                 for item in split_list(settings.get("HoldMailForDomains", "")))
                     if p)
        return DirectorySnapshot(
            main_domain=main,
            domains=MappingProxyType(domains),
            domain_aliases=MappingProxyType(aliases),
            objects=MappingProxyType(objects),
            own_ips=frozenset(own_ips),
            ip_domains=MappingProxyType(ip_domains),
            hold_domains=hold,
        )

    # -- helpers -------------------------------------------------------------

    def _real_domain(self, name: str) -> DomainRecord:
        """A domain by its real name (deleting or renaming through an alias is refused)."""
        record = self.get_domain(name)
        if record.name.lower() != domain_name(name):
            raise DirectoryError(f"{name} is a Domain Alias of {record.name}; use the real name")
        return record

    def _locate(self, address: str, default_domain: str | None = None) -> tuple[str, str]:
        """(real domain name, object name) of a Directory address."""
        name, domain = split_address(address)
        if domain is None:
            return default_domain or self.main_domain(), name
        return self.get_domain(domain).name, name

    def _get(self, address: str, kind: str, default_domain: str | None = None) -> ObjectRecord:
        domain, name = self._locate(address, default_domain)
        try:
            record = self.store.get_object(domain, name)
        except NotFound:
            raise NotFound(f"{kind} {name}@{domain} does not exist") from None
        if record.kind != kind:
            raise NotFound(f"{record.name}@{domain} is {_a(record.kind)}, not {_a(kind)}")
        return record

    def _list(self, domain: str | None, kind: str) -> list[ObjectRecord]:
        real = self.get_domain(domain).name if domain else self.main_domain()
        return self.store.list_objects(real, kind)

    def _delete(self, address: str, kind: str) -> None:
        record = self._get(address, kind)
        self.store.delete_object(record.domain, record.name)

    def _rename(self, address: str, kind: str, new_name: str) -> None:
        record = self._get(address, kind)
        self.store.rename_object(record.domain, record.name, self._new_name(record, new_name))

    def _new_name(self, record: ObjectRecord, new_name: str) -> str:
        """New name of a renamed object: plain, or an address in the same domain."""
        domain, name = self._locate(new_name, default_domain=record.domain)
        if domain.lower() != record.domain.lower():
            raise DirectoryError(
                f"cannot move {record.name}@{record.domain} to another domain ({domain})"
            )
        return name

    def _aliases_of(self, account: ObjectRecord) -> list[ObjectRecord]:
        return [a for a in self.store.list_objects(account.domain, ALIAS)
                if str(a.data.get("Target", "")).lower() == account.name.lower()]

    def _validated_domain_settings(
        self, domain: str, current: Mapping[str, Any], changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        stored = _merge(current, changes, _DOMAIN_VALIDATORS)
        _check_reroutes({**self.server_domain_defaults(), **stored})
        mine = set(_ip_list(stored.get("AssignedIPAddresses", "")))
        for other in self.store.list_domains():
            if other.name.lower() == domain.lower():
                continue
            taken = mine & set(_ip_list(other.settings.get("AssignedIPAddresses", "")))
            if taken:
                raise DirectoryError(
                    f"{', '.join(sorted(taken))} already assigned to domain {other.name}"
                )
        return stored

    def _json_setting(self, key: str) -> dict[str, Any]:
        text = self.store.get_settings().get(key)
        return dict(json.loads(text)) if text else {}

    def _set_json_setting(self, key: str, value: dict[str, Any]) -> None:
        self.store.set_setting(key, json.dumps(value, sort_keys=True) if value else None)


# -- settings validation ------------------------------------------------------

Validator = Callable[[str, Any], Any]


def _is_default(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == DEFAULT


def _key(key: str, known: Mapping[str, Any]) -> str:
    """The canonical spelling of a known key (keys are matched case-insensitively)."""
    for candidate in known:
        if candidate.lower() == str(key).lower():
            return candidate
    raise DirectoryError(f"unknown setting {key!r}; valid keys: {', '.join(known)}")


def _merge(
    current: Mapping[str, Any], changes: Mapping[str, Any], validators: Mapping[str, Validator]
) -> dict[str, Any]:
    """``current`` updated by validated ``changes``; ``default`` removes a key."""
    result = dict(current)
    implied: dict[str, str] = {}
    for key, value in changes.items():
        canonical = _key(key, validators)
        if _is_default(value):
            result.pop(canonical, None)
            continue
        value = validators[canonical](canonical, value)
        if canonical in _UNKNOWN_KEYS and isinstance(value, tuple):
            value, implied[_UNKNOWN_KEYS[canonical][0]] = value
        if value in ("", None) and canonical == "AssignedIPAddresses":
            result.pop(canonical, None)
        else:
            result[canonical] = value
    for key, address in implied.items():
        given = next((v for k, v in changes.items() if k.lower() == key.lower()), None)
        if given is not None and not _is_default(given) and str(given).strip() != address:
            raise DirectoryError(
                f"two different reroute addresses for {key}: {given!r}, {address!r}"
            )
        result[key] = address
    return result


def _check_reroutes(effective: Mapping[str, Any]) -> None:
    for mode_key, (address_key, _) in _UNKNOWN_KEYS.items():
        if effective.get(mode_key) == UnknownMode.REROUTED and not effective.get(address_key):
            raise DirectoryError(
                f"{mode_key} is 'Rerouted to' but {address_key} is not set;"
                f" give both, e.g. {address_key}=*%domain.dom@otherserver.dom._via"
            )


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise DirectoryError(f"{key} must be text, not {type(value).__name__}")
    return value.strip()


def _unknown_mode(key: str, value: Any) -> str | tuple[str, str]:
    """A "... to Unknown" mode; ``Rerouted to ADDRESS`` also sets the address."""
    text = _text(key, value)
    address_key, allowed = _UNKNOWN_KEYS[key]
    for mode in allowed:
        if text.lower() == mode.lower():
            return mode
    prefix = UnknownMode.REROUTED.value
    rest = text[len(prefix):]
    if text.lower().startswith(prefix.lower()) and rest[:1] in (" ", ":") and rest.strip(" :"):
        return prefix, _reroute_address(address_key, rest.strip(" :"))
    raise DirectoryError(f"invalid {key} {value!r}; use one of: {', '.join(allowed)}")


def _reroute_address(key: str, value: Any) -> str:
    text = _text(key, value)
    if not text or any(ch.isspace() for ch in text):
        raise DirectoryError(f"invalid {key} {value!r}: give an address like *%dom@host._via")
    return text


def _web_site_prefix(key: str, value: Any) -> str:
    text = _text(key, value)
    if "/" in text or any(ch.isspace() for ch in text):
        raise DirectoryError(f"invalid {key} {value!r}: no '/' or spaces allowed")
    return text


def _access_modes(key: str, value: Any) -> str | list[str]:
    """``All``, ``None`` or a list of service names (canonical spelling)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise DirectoryError(f"{key} must be All, None or a list of services")
    names = [_text(key, i) for i in items if _text(key, i)]
    if len(names) == 1 and names[0].lower() in ("all", "none"):
        return names[0].capitalize()
    known = {s.lower(): s for s in SERVICES}
    bad = [n for n in names if n.lower() not in known]
    if bad:
        raise DirectoryError(
            f"invalid {key}: unknown service {bad[0]!r}; use All, None or some of"
            f" {', '.join(SERVICES)}"
        )
    return [known[n.lower()] for n in names]


def _allows(modes: Any, service: str) -> bool:
    """Does an AccessModes value (``All``, ``None`` or a list) include ``service``?"""
    if isinstance(modes, str):
        modes = [m.strip() for m in modes.split(",")]
    names = {str(m).lower() for m in modes}
    return "all" in names or service.lower() in names


def _ip_addresses(key: str, value: Any) -> str:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise DirectoryError(f"{key} must be a comma-separated list of IP addresses")
    result: list[str] = []
    for item in items:
        text = _text(key, item).strip("[]")
        if not text:
            continue
        try:
            ip = str(ipaddress.ip_address(text.removeprefix("IPv6:")))
        except ValueError:
            raise DirectoryError(f"invalid {key}: {item.strip()!r} is not an IP address") from None
        if ip not in result:
            result.append(ip)
    return ", ".join(result)


_DOMAIN_VALIDATORS: dict[str, Validator] = {
    "MailToUnknown": _unknown_mode,
    "MailRerouteAddress": _reroute_address,
    "SignalToUnknown": _unknown_mode,
    "SignalRerouteAddress": _reroute_address,
    "AccessToUnknown": _unknown_mode,
    "AccessRerouteAddress": _reroute_address,
    "WebSitePrefix": _web_site_prefix,
    "DomainAccessModes": _access_modes,
    "AssignedIPAddresses": _ip_addresses,
}


def _ip_list(text: str, strict: bool = True) -> list[str]:
    """IPs of a stored comma list, normalised; ``strict=False`` skips bad ones."""
    result = []
    for item in str(text).split(","):
        item = item.strip().strip("[]").removeprefix("IPv6:")
        if not item:
            continue
        try:
            result.append(str(ipaddress.ip_address(item)))
        except ValueError:
            if strict:
                raise DirectoryError(f"{item!r} is not an IP address") from None
    return result


def _merge_account_settings(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict:
    """Account settings are open-ended (CGP has many); only known ones are checked."""
    result = dict(current)
    for key, value in changes.items():
        if not isinstance(key, str) or not key.strip():
            raise DirectoryError("account setting names must be non-empty text")
        if key == "Password":
            raise DirectoryError("Password is not a stored setting; set the password instead")
        if _is_default(value):
            result.pop(key, None)
        elif key == "AccessModes":
            result[key] = _access_modes(key, value)
        elif key == "PasswordEncryption":
            if str(value).lower() not in sealed.MODES:
                raise DirectoryError(
                    f"PasswordEncryption must be one of {', '.join(sealed.MODES)}")
            result[key] = str(value).lower()
        else:
            result[key] = _json_value(key, value)
    return result


def _pop_password(changes: dict[str, Any], password: str | None) -> str | None:
    """CGP scripts pass ``Password`` inside the settings dictionary; take it out."""
    given = changes.pop("Password", None)
    if given is not None and password is not None and given != password:
        raise DirectoryError("two different passwords given")
    return password if password is not None else given


def _json_value(key: str, value: Any) -> Any:
    if isinstance(value, bool | int | float):
        return str(value) if not isinstance(value, bool) else ("YES" if value else "NO")
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return [_json_value(key, v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_value(key, v) for k, v in value.items()}
    raise DirectoryError(f"invalid value for {key}: {type(value).__name__} is not allowed")


def _plain_dict(what: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise DirectoryError(f"{what} must be a dictionary")
    return {str(k): _json_value(str(k), v) for k, v in value.items()}


def _template_value(key: str, value: Any) -> Any:
    if key == "Settings":
        if not isinstance(value, Mapping):
            raise DirectoryError("template Settings must be a dictionary")
        return _merge_account_settings({}, value)
    if key in ("Mailboxes", "Subscriptions"):
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise DirectoryError(f"template {key} must be a list of mailbox names")
        return [_text(key, v) for v in value]
    if key == "MailboxAliases":
        if not isinstance(value, Mapping):
            raise DirectoryError("template MailboxAliases must be a dictionary alias -> mailbox")
        return {_text(key, k): _text(key, v) for k, v in value.items()}
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise DirectoryError(f"template {key} must be a list")
    return _json_value(key, list(value))


def _right(name: str) -> str:
    right = _RIGHTS.get(str(name).replace(" ", "").lower())
    if right is None:
        raise DirectoryError(
            f"unknown right {name!r}; server rights: {', '.join(SERVER_RIGHTS)};"
            f" domain rights: {', '.join(DOMAIN_RIGHTS)}"
        )
    return right


def _target(address: Any) -> str:
    text = _text("address", address)
    if not text or any(ch.isspace() for ch in text) or "," in text:
        raise DirectoryError(f"invalid address {address!r}")
    return text


def _members(members: Iterable[str]) -> list[str]:
    if isinstance(members, str):
        members = members.split(",") if members.strip() else []
    result: list[str] = []
    for member in members:
        text = _target(member)
        if text.lower() not in (m.lower() for m in result):
            result.append(text)
    return result


def _a(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def _policy(effective: Mapping[str, Any], mode_key: str) -> UnknownPolicy:
    address_key = _UNKNOWN_KEYS[mode_key][0]
    try:
        mode = UnknownMode(effective.get(mode_key, UnknownMode.REJECTED.value))
    except ValueError:
        mode = UnknownMode.REJECTED
    return UnknownPolicy(mode=mode, reroute=str(effective.get(address_key, "")))


def _dir_object(record: ObjectRecord) -> DirObject | None:
    try:
        kind = ObjectKind(record.kind)
    except ValueError:
        return None  # a kind routing does not know (yet)
    if kind is ObjectKind.ALIAS:
        targets: tuple[str, ...] = (str(record.data.get("Target", "")),)
    elif kind is ObjectKind.FORWARDER:
        targets = (str(record.data.get("Target", "")),)
    elif kind is ObjectKind.GROUP:
        targets = tuple(record.data.get("Members", []))
    else:
        targets = ()
    return DirObject(kind=kind, name=record.name, targets=targets)
