"""Pytest fixtures for the loopback peers in ``tests/support``.

Register them in ``tests/conftest.py`` with
``from support.fixtures import dns_server, smtp_sink  # noqa: F401``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.dns_server import TestDNSServer
from support.smtp_sink import SMTPSink


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
