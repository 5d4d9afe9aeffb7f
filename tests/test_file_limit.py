"""The server lifts its soft open-file limit at start (every connection is a
descriptor; the connection limits must refuse a flood before the process
runs out of them)."""

from __future__ import annotations

import resource

from waypost.server import FILE_LIMIT, raise_file_limit


def test_the_soft_file_limit_is_lifted_within_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 256 if hard == resource.RLIM_INFINITY else min(256, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        raise_file_limit()
        lifted, still_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert still_hard == hard
        assert lifted == (FILE_LIMIT if hard == resource.RLIM_INFINITY else min(FILE_LIMIT, hard))
        raise_file_limit()  # idempotent: never lowers
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == lifted
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
