"""Suite-wide setup: fast password hashing, and the shared fixtures of
``tests/support/fixtures.py`` (loopback peers, the services world).

Test modules import helpers from ``tests.support`` only (one import root);
no test module imports another.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from waypost.services import passwords

pytest_plugins = ["tests.support.fixtures"]

# Hypothesis profiles (tests/support/fuzz.py): "waypost" is the bounded pass of
# `make test` (hypothesis' own 100 examples per target); "fuzz" the long pass
# of `make fuzz` (FUZZ_EXAMPLES per target). Chosen by HYPOTHESIS_PROFILE or
# pytest's --hypothesis-profile. Tests that set max_examples keep theirs.
settings.register_profile("waypost", deadline=None, print_blob=True)
settings.register_profile("fuzz", deadline=None, print_blob=True,
                          max_examples=int(os.environ.get("FUZZ_EXAMPLES", "5000")))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "waypost"))


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



@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[object]:
    """One private PostgreSQL cluster for the whole session (tests/support/postgres.py);
    started only when a test asks for it. Missing PostgreSQL fails, never skips:
    CI installs it (.ci/run PEERS)."""
    from tests.support.postgres import PostgresCluster, postgres_available

    problem = postgres_available()
    if problem is not None:
        pytest.fail(f"PostgreSQL is needed by the store tests: {problem}")
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(postgres_cluster: object) -> Iterator[str]:
    """The URL of a fresh, empty database in the session's cluster (dropped after)."""
    from tests.support.postgres import PostgresCluster

    assert isinstance(postgres_cluster, PostgresCluster)
    url = postgres_cluster.fresh_database()
    yield url
    postgres_cluster.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """A location for a new store on each backend: a data directory or a
    database URL (the store-level tests run once per backend)."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path) + "/data"
