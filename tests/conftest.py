"""Suite-wide setup: fast password hashing, and the shared fixtures of
``tests/support/fixtures.py`` (loopback peers, the services world).

Test modules import helpers from ``tests.support`` only (one import root);
no test module imports another.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from waypost.services import passwords

pytest_plugins = ["tests.support.fixtures"]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """Keep each phase's report on the item (``item.rep_call``), so fixtures
    can act on a failed test in their teardown (the browser's screenshots)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing() -> Iterator[None]:
    """argon2 at production cost makes every account creation ~0.1 s; the
    suite creates hundreds. Servers started as subprocesses keep the real
    parameters."""
    passwords.configure(**passwords.FAST_PARAMETERS)
    yield
    passwords.reset()

