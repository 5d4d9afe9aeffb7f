"""Fuzz targets for the smaller parsers: IMAP URLs (RFC 5092), WebDAV ``If``
headers, server setting values, queue names, ACL rights, the web composer's
address fields, and dates (the Date header as the web interface shows it,
HTTP's ``If-Modified-Since``).

Properties: each parser returns a value or raises its own error
(:class:`UrlError`, :class:`DavError` 400, :class:`SettingError`,
``ValueError``, :class:`ComposeError` ``badAddress``), never another
exception; setting values validate to a fixed point; a date never fails a
page (a Date header nobody can read shows the arrival time).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from tests.support.fuzz import TARGET, seed_ids, text_mutants, text_seeds

from waypost import settings
from waypost.protocols.http.common import not_modified
from waypost.protocols.http.webdav import DavError, parse_if
from waypost.protocols.imap import wire
from waypost.protocols.imap.imapurl import UrlError, parse_section, parse_url
from waypost.services.delivery.dns import parse_queue
from waypost.services.mailaccess.errors import InvalidRights
from waypost.services.mailaccess.quota import parse_limit
from waypost.services.mailaccess.rights import ALL_RIGHTS, parse_rights
from waypost.services.queue import parse_queue_name
from waypost.web.compose import ComposeError, parse_addresses
from waypost.web.mail import date_text

URLS = text_seeds("misc/imapurls.lines")
SETTING_VALUES = text_seeds("misc/settings.lines")
IF_HEADERS = text_seeds("misc/webdav_if.lines")
QUEUES = text_seeds("misc/queues.lines")
ADDRESSES = text_seeds("misc/addresses.lines")
DATES = text_seeds("misc/dates.lines")
PUNCT = [" ", ",", ";", ":", "/", "%", "@", "[", "]", "(", ")", "<", ">", '"', "-", ".", "*",
         "\\e", "\n", "\x00", "é", "\xff", "9" * 40, "0"]


def check_url(text: str) -> None:
    """A URL names one message (and its section again when written back)."""
    try:
        url = parse_url(text)
    except UrlError as exc:
        assert str(exc)
        return
    numbers = [url.uid, url.uidvalidity, url.port, *(url.partial or ())]
    assert url.mailbox and all(n is None or 0 <= n <= wire.MAX_NUMBER for n in numbers)
    if url.section is not None:
        assert parse_section(str(url.section)) == url.section


@pytest.mark.parametrize("text", URLS, ids=seed_ids(URLS))
def test_imap_url_seeds(text: str) -> None:
    check_url(text)


@TARGET
@given(text_mutants(URLS, [*PUNCT, ";UID=", ";SECTION=", ";PARTIAL=", "%C3%9F", "imap://"]))
def test_imap_urls(text: str) -> None:
    check_url(text)


def check_if(header: str) -> None:
    try:
        lists = parse_if(header)
    except DavError as exc:
        assert exc.status == 400
        return
    for _tag, conditions in lists:
        assert conditions


@pytest.mark.parametrize("header", IF_HEADERS, ids=seed_ids(IF_HEADERS))
def test_webdav_if_seeds(header: str) -> None:
    check_if(header)


@TARGET
@given(text_mutants(IF_HEADERS, [*PUNCT, "Not ", "<urn:uuid:1>", '["e"]', "W/"]))
def test_webdav_if_headers(header: str) -> None:
    check_if(header)


def check_setting_value(value: str) -> None:
    for setting in settings.SETTINGS:
        try:
            once = setting.validate(value)
        except settings.SettingError:
            continue
        assert setting.validate(once) == once, setting.name
    assert parse_limit(value) is None or parse_limit(value) >= 0


@pytest.mark.parametrize("value", SETTING_VALUES, ids=seed_ids(SETTING_VALUES))
def test_setting_value_seeds(value: str) -> None:
    check_setting_value(value)


@TARGET
@given(text_mutants(SETTING_VALUES, PUNCT))
def test_setting_values(value: str) -> None:
    check_setting_value(value)


def check_queue(text: str) -> None:
    try:
        host, port, is_ip = parse_queue(text)
    except ValueError:
        pass
    else:
        assert host and (port is None or 0 < port < 65536)
        assert host == host.lower() or is_ip
    module, _queue = parse_queue_name(text)
    assert module and module == module.upper()
    try:
        mode, letters = parse_rights(text)
    except InvalidRights:
        return
    assert mode in ("add", "remove", "replace") and set(letters) <= set(ALL_RIGHTS)


@pytest.mark.parametrize("text", QUEUES, ids=seed_ids(QUEUES))
def test_queue_seeds(text: str) -> None:
    check_queue(text)


@TARGET
@given(text_mutants(QUEUES, [*PUNCT, "IPv6:", "::1", "SMTP(", "LOCAL(", "+lr", "-w"]))
def test_queue_names_and_rights(text: str) -> None:
    check_queue(text)


def check_addresses(text: str) -> None:
    try:
        pairs = parse_addresses(text)
    except ComposeError as exc:
        assert exc.code == "badAddress"
        return
    assert all("@" in address and len(address) <= 254 for _, address in pairs)


@pytest.mark.parametrize("text", ADDRESSES, ids=seed_ids(ADDRESSES))
def test_compose_address_seeds(text: str) -> None:
    check_addresses(text)


@TARGET
@given(text_mutants(ADDRESSES, PUNCT))
def test_compose_addresses(text: str) -> None:
    check_addresses(text)


def check_date(value: str) -> None:
    shown = date_text(value, 0.0)
    assert re.fullmatch(r"\d{1,4}-\d\d-\d\d \d\d:\d\d", shown), shown  # strftime: year 994 unpadded
    request = make_mocked_request("GET", "/", headers={"If-Modified-Since": value})
    assert not_modified(request, '"x"', datetime(2024, 1, 1, tzinfo=UTC)) in (True, False)


@pytest.mark.parametrize("value", DATES, ids=seed_ids(DATES))
def test_date_seeds(value: str) -> None:
    check_date(value)


@TARGET
@given(text_mutants(DATES, [*PUNCT, "GMT", "+2359", "-2359", "9999", "0001", "Feb"]))
def test_dates(value: str) -> None:
    check_date(value.replace("\n", " ").replace("\r", " "))
