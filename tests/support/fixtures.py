"""Pytest fixtures shared across test modules: loopback peers, the
services world, and password-hashing cost. ``tests/conftest.py`` registers this module as a plugin, so
test modules name these fixtures as parameters and import nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.dns_server import TestDNSServer
from tests.support.services import open_world
from tests.support.smtp_sink import SMTPSink

from waypost.services import passwords
from waypost.services.container import Services


@pytest.fixture
def dns_server() -> Iterator[TestDNSServer]:
    """A running, empty loopback DNS server; fill it with ``.load({...})`` or ``.set()``."""
    with TestDNSServer() as server:
        yield server


@pytest.fixture
def smtp_sink() -> Iterator[SMTPSink]:
    """A running loopback SMTP sink recording every message (``.messages``)."""
    with SMTPSink() as sink:
        yield sink


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    """Services over a real store in tmp_path, holding the world of tests.support.services."""
    services = open_world(tmp_path / "var")
    yield services
    services.close()


@pytest.fixture
def secure_password_hashing() -> Iterator[None]:
    """Production argon2 cost for one test; the suite's fast setting comes back after it."""
    passwords.reset()
    yield
    passwords.configure(**passwords.FAST_PARAMETERS)


# Debian's Chromium through Playwright: ``browser`` (one per module), ``context``, ``phone``.
from tests.support.browser import browser, context, phone  # noqa: E402, F401
