"""The verified-credentials cache (issue 12 point 4): the same name and
password log in again without argon2; a wrong password, a password change,
a removed account and a lock-out take effect at once; nothing but keyed
hashes is kept."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from waypost.services import auth, passwords
from waypost.services.container import Services, open_services
from waypost.services.credential_cache import CACHE, CredentialCache
from waypost.services.login_guard import LoginGuard

ALICE = "alice@main.dom"
PASSWORD = "cache-pw-1"


class Counting:
    """Counts argon2 verifications (wraps the library's hasher, not ours)."""

    def __init__(self) -> None:
        self.calls = 0
        self.inner = passwords._hasher

    def verify(self, hashed: str, password: str) -> bool:
        self.calls += 1
        return bool(self.inner.verify(hashed, password))

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.fixture
def svc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    services = open_services(tmp_path / "var", create=True)
    services.directory.init_server("main.dom")
    services.directory.create_account("alice", PASSWORD)
    services.directory.add_alias("ali@main.dom", ALICE)
    CACHE.clear()
    try:
        yield services
    finally:
        CACHE.clear()
        services.close()


@pytest.fixture
def argon2(monkeypatch: pytest.MonkeyPatch) -> Counting:
    counting = Counting()
    monkeypatch.setattr(passwords, "_hasher", counting)
    return counting


def test_a_second_login_skips_argon2(svc: Services, argon2: Counting) -> None:
    assert auth.check_password(svc, ALICE, PASSWORD) == ALICE
    assert argon2.calls == 1
    for login in (ALICE, "alice", "ali@main.dom", "alice%main.dom"):
        assert auth.check_password(svc, login, PASSWORD) == ALICE
    assert argon2.calls == 1


def test_wrong_passwords_always_run_argon2_and_fail(svc: Services, argon2: Counting) -> None:
    assert auth.check_password(svc, ALICE, PASSWORD) == ALICE
    for _ in range(3):
        assert auth.check_password(svc, ALICE, PASSWORD + "x") is None
    assert argon2.calls == 4
    assert auth.check_password(svc, "nobody@main.dom", PASSWORD) is None


def test_a_password_change_or_removal_takes_effect_at_once(svc: Services,
                                                           argon2: Counting) -> None:
    assert auth.check_password(svc, ALICE, PASSWORD) == ALICE
    svc.directory.set_password(ALICE, "new-pw-2")
    assert auth.check_password(svc, ALICE, PASSWORD) is None
    assert auth.check_password(svc, ALICE, "new-pw-2") == ALICE
    svc.directory.delete_account(ALICE)
    assert auth.check_password(svc, ALICE, "new-pw-2") is None


def test_the_setting_turns_it_off(svc: Services, argon2: Counting) -> None:
    svc.set_setting("LoginCacheTime", "0")
    for _ in range(3):
        assert auth.check_password(svc, ALICE, PASSWORD) == ALICE
    assert argon2.calls == 3 and len(CACHE) == 0


def test_a_lock_out_refuses_a_cached_password(svc: Services) -> None:
    svc.set_setting("LoginFailureLimit", "2")
    settings = svc.settings()
    guard = LoginGuard(sleep=lambda _s: asyncio.sleep(0))

    async def login(password: str) -> str | None:
        attempt = await auth.guarded_login(
            svc, guard, settings, "192.0.2.9", ALICE,
            lambda: auth.authenticate(svc, ALICE, password), service="IMAP")
        return attempt.account

    async def scenario() -> list[str | None]:
        return [await login(PASSWORD), await login("bad"), await login("bad"),
                await login(PASSWORD)]

    assert asyncio.run(scenario()) == [ALICE, None, None, None]


def test_entries_expire_and_hold_no_password() -> None:
    now = [1000.0]
    cache = CredentialCache(clock=lambda: now[0], max_entries=2)
    cache.remember("a@x", "$argon2id$h1", "secret-pw", 60)
    assert cache.hit("a@x", "$argon2id$h1", "secret-pw")
    assert not cache.hit("a@x", "$argon2id$h2", "secret-pw")
    now[0] += 61
    assert not cache.hit("a@x", "$argon2id$h1", "secret-pw")
    for n in range(3):
        cache.remember(f"u{n}@x", "h", "pw", 60)
    assert len(cache) == 2
    assert all(isinstance(k, bytes) and len(k) == 32 and b"pw" not in k
               for k in cache._entries)
