"""Shared fixtures: fast password hashing for the suite, loopback peers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from waypost.services import passwords


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing() -> Iterator[None]:
    """argon2 at production cost makes every account creation ~0.1 s; the
    suite creates hundreds. Servers started as subprocesses keep the real
    parameters."""
    passwords.configure(**passwords.FAST_PARAMETERS)
    yield
    passwords.reset()


from support.fixtures import dns_server, smtp_sink  # noqa: E402, F401  (loopback peers)
