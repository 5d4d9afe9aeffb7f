"""Where rules are kept, and the compiled rules the server runs.

Storage [waypost] (no table of its own): server-wide rules are the JSON
setting ``ServerMailRules`` in the settings table; domain rules the key
``MailRules`` of the domain's settings; account rules the key ``MailRules``
of the account's data (beside its settings and rights), so they follow
renames and go with the domain or account. All three keep the compact
array form of ``text.rules_to_stored``.

Every write goes through :func:`save`, which checks the whole set first
(``model.check_rules`` for that level): a refused set leaves the rules in
force untouched. :class:`RuleBook` keeps the compiled rules and rebuilds
them when the store's change counter moves.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from waypost.services.rules.engine import CompiledRules, compile_rules
from waypost.services.rules.model import Level, Rule, RuleError, check_allowed, check_rules
from waypost.services.rules.text import rules_from_json, rules_to_stored

if TYPE_CHECKING:  # the container builds the RuleBook it owns
    from waypost.services.container import Services

log = logging.getLogger("waypost.rules")

SERVER_SETTING = "ServerMailRules"
RULES_KEY = "MailRules"


def _decode(stored: Any, level: Level, where: str) -> list[Rule]:
    if not stored:
        return []
    try:
        data = json.loads(stored) if isinstance(stored, str) else stored
        return rules_from_json(data, level)
    except RuleError as exc:
        log.error("stored %s rules of %s are invalid and ignored: %s", level.value, where, exc)
        return []


def target_of(services: Services, level: Level, target: str | None) -> str:
    """The canonical owner: "" (server), the domain name, or ``name@domain``."""
    if level is Level.SERVER:
        return ""
    if not target:
        raise RuleError(f"{level.value} rules need a {level.value} name")
    if level is Level.DOMAIN:
        return services.directory.get_domain(target).name
    record = services.directory.get_account(target)
    return f"{record.name}@{record.domain}"


def load(services: Services, level: Level, target: str | None = None) -> list[Rule]:
    """The rules of one level as stored (inactive ones included)."""
    if level is Level.SERVER:
        return _decode(services.store.get_settings().get(SERVER_SETTING), level, "the server")
    if level is Level.DOMAIN:
        record = services.directory.get_domain(target or "")
        return _decode(record.settings.get(RULES_KEY), level, record.name)
    account = services.directory.get_account(target or "")
    return _decode(account.data.get(RULES_KEY), level, f"{account.name}@{account.domain}")


def save(
    services: Services,
    level: Level,
    target: str | None,
    rules: Sequence[Rule],
    *,
    by_user: bool = False,
) -> list[Rule]:
    """Check and store a whole rule set (replacing the old one); returns it
    with canonical names. ``by_user``: the account's own user sets it, so
    ``RulesAllowed`` applies (administrators are not limited)."""
    checked = check_rules(list(rules), level)
    stored: list[Any] | None = rules_to_stored(checked) or None
    if level is Level.SERVER:
        services.store.set_setting(SERVER_SETTING, json.dumps(stored) if stored else None)
        return checked
    if level is Level.DOMAIN:
        record = services.directory.get_domain(target or "")
        settings = dict(record.settings)
        if stored:
            settings[RULES_KEY] = stored
        else:
            settings.pop(RULES_KEY, None)
        services.store.update_domain(record.name, settings=settings)
        return checked
    account = services.directory.get_account(target or "")
    if by_user:
        allowed = services.directory.effective_account_settings(
            f"{account.name}@{account.domain}"
        ).get("RulesAllowed", "Filter Only")
        check_allowed(checked, str(allowed))
    data = dict(account.data)
    if stored:
        data[RULES_KEY] = stored
    else:
        data.pop(RULES_KEY, None)
    services.store.update_object(account.domain, account.name, data=data)
    return checked


def account_preferences(services: Services, account: str) -> dict[str, str]:
    """What ``Preference`` tests: the effective settings, then stored ``Prefs``."""
    try:
        settings = services.directory.effective_account_settings(account)
        prefs = services.directory.get_account(account).data.get("Prefs") or {}
    except Exception:
        return {}
    merged = {**settings, **(prefs if isinstance(prefs, dict) else {})}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in merged.items()}


class RuleBook:
    """Compiled rules of the running server, rebuilt after any store change.

    Thread-safe; call from a worker thread (it reads the store).
    """

    def __init__(self, services: Services) -> None:
        self.services = services
        self._lock = threading.Lock()
        self._version = -1
        self._server = CompiledRules()
        self._accounts: dict[str, tuple[CompiledRules, dict[str, str]]] = {}
        self._domains: dict[str, list[Rule]] = {}
        self.main_domain = ""  # as of the last refresh: the name generated mail comes from

    def _fresh(self) -> None:
        version = self.services.store.version()
        if version != self._version:
            try:
                self.main_domain = self.services.directory.main_domain()
            except Exception:
                self.main_domain = ""
            self._server = compile_rules(
                (Level.SERVER, r, "") for r in load(self.services, Level.SERVER)
            )
            self._accounts = {}
            self._domains = {}
            self._version = version

    def known_empty(self, version: int) -> bool:
        """No server-wide rules as of ``version`` (no I/O: safe on the event loop)."""
        return version == self._version and not self._server

    def server(self) -> CompiledRules:
        with self._lock:
            self._fresh()
            return self._server

    def account(self, account: str) -> tuple[CompiledRules, dict[str, str]]:
        """Domain rules then the account's own, as one ordered list (rules.md
        §1), and the account's preferences; ``account`` is ``name@domain``."""
        with self._lock:
            self._fresh()
            key = account.lower()
            cached = self._accounts.get(key)
            if cached is not None:
                return cached
            domain = account.rpartition("@")[2].lower()
            try:
                if domain not in self._domains:
                    self._domains[domain] = load(self.services, Level.DOMAIN, domain)
                domain_rules = self._domains[domain]
                own = load(self.services, Level.ACCOUNT, account)
            except Exception as exc:  # a vanished account: no rules, delivery decides
                log.debug("no rules for %s: %s", account, exc)
                domain_rules, own = [], []
            compiled = compile_rules(
                [(Level.DOMAIN, r, domain) for r in domain_rules]
                + [(Level.ACCOUNT, r, account) for r in own]
            )
            prefs = account_preferences(self.services, account) if compiled else {}
            self._accounts[key] = (compiled, prefs)
            return compiled, prefs
