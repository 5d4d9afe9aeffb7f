"""The services over one store, as the CLI and the server use them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from waypost import settings as settings_mod
from waypost.services.directory import Directory
from waypost.services.mail_events import MailEvents
from waypost.services.routing import Router
from waypost.services.rules.book import RuleBook
from waypost.services.skins import DomainSkins
from waypost.services.trust import ClientTrust
from waypost.storage.interface import Store
from waypost.storage.open import open_store


@dataclass
class Services:
    store: Store
    directory: Directory = field(init=False)
    router: Router = field(init=False)
    events: MailEvents = field(init=False)
    rules: RuleBook = field(init=False)
    """The compiled rules, one book shared by SMTP reception and local delivery."""

    def __post_init__(self) -> None:
        self.directory = Directory(self.store)
        self.directory.domain_files.append(DomainSkins(self.store.data_dir))
        self.router = Router(self.store, self.directory)
        self.events = MailEvents()
        self.rules = RuleBook(self)

    @property
    def data_dir(self) -> Path:
        return self.store.data_dir

    def settings(self) -> settings_mod.ServerSettings:
        stored = dict(self.store.get_settings())
        stored["MainDomain"] = self.directory.main_domain()
        return settings_mod.ServerSettings.from_store(stored)

    def set_setting(self, name: str, value: str) -> str:
        """Validate and store one server setting; returns its canonical name.

        ``MainDomain`` is not stored as text: changing it renames the Main
        Domain, as changing CGP's server name does.
        """
        if value.strip().lower() == "default":
            canonical = settings_mod.lookup(name).name
            if canonical == "MainDomain":
                raise settings_mod.SettingError("MainDomain has no default")
            self.store.set_setting(canonical, None)
            return canonical
        canonical, stored = settings_mod.validate(name, value)
        if canonical == "MainDomain":
            self.directory.rename_domain(self.directory.main_domain(), stored)
            return canonical
        self.store.set_setting(canonical, stored)
        return canonical

    def is_trusted_ip(self, ip: str) -> bool:
        """For one-off questions (the CLI); a running server keeps a ClientTrust."""
        return ClientTrust(self.settings()).is_trusted(ip)

    def close(self) -> None:
        self.store.close()


def open_services(data_dir: Path, *, create: bool = False) -> Services:
    return Services(open_store(Path(data_dir), create=create))
