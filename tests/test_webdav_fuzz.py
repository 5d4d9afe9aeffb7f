"""Fuzz targets for WebDAV's header parsers (issue 11 point 7): any ``If``
or ``Timeout`` value is parsed or refused with a 400-class DavError, never
an exception of another kind, and the parsed parts come from the text."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from waypost.protocols.http.webdav import MAX_TIMEOUT, DavError, _lock_timeout, parse_if

SETTINGS = settings(max_examples=500, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
IF_PIECES = st.sampled_from(["(", ")", "<", ">", "[", "]", "Not", " ", "<urn:uuid:1>",
                             '["e1"]', "<http://h/~a/x>", "opaquelocktoken:", "\x00", "²"])
IF_HEADERS = st.one_of(st.text(max_size=80), st.lists(IF_PIECES, max_size=20).map("".join))


@SETTINGS
@given(IF_HEADERS)
def test_if_headers_parse_or_are_refused(header: str) -> None:
    try:
        lists = parse_if(header)
    except DavError as exc:
        assert exc.status == 400
        return
    assert lists
    for tag, conditions in lists:
        assert conditions and (tag is None or tag in header)
        for condition in conditions:
            assert (condition.token is None) != (condition.etag is None)
            assert (condition.token or condition.etag or "") in header


@SETTINGS
@given(st.one_of(st.text(max_size=60), st.lists(st.sampled_from(
    ["Second-", "Infinite", ",", " ", "1", "0", "99999999999999999999", "²", "-5"]),
    max_size=10).map("".join)))
def test_lock_timeouts_are_bounded(header: str) -> None:
    assert 1 <= _lock_timeout(header) <= MAX_TIMEOUT


def test_unicode_digits_are_not_seconds() -> None:
    assert _lock_timeout("Second-²") == _lock_timeout("")
