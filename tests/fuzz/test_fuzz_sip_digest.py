"""Fuzz targets for the SIP registrar's own parsers: digest credentials
(``services/signals/digest.py``), contact URIs, addresses of record and
q values (``services/signals/registrar.py``).

Properties: credentials parse or are refused with :class:`DigestError`,
never another exception, and what parses re-parses unchanged from its
parameters written back; a nonce we did not issue is forged, never an error; a URI key is refused with ValueError or is a
fixed point (keying it again gives it back); ``aor`` never raises; a q value
is refused or lies in 0..1000 and reads back from its own text.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from tests.support.fuzz import TARGET, seed_ids, text_mutants, text_seeds

from waypost.services.signals.digest import (
    DigestError,
    parse_credentials,
    quote,
)
from waypost.services.signals.nonces import NonceBook, NonceState
from waypost.services.signals.registrar import aor, format_q, parse_q, uri_key

CREDENTIALS = text_seeds("sip/credentials.lines")
URIS = text_seeds("sip/uris.lines")
BOOK = NonceBook()
TOKENS = ['"', "\\", ",", "=", " ", "\r\n", "\t", "Digest ", "username=", "nc=", ";", "@",
          ":", "?", "<", ">", "[", "]", "sip:", "é", "\x00"]


def check_credentials(text: str) -> None:
    try:
        creds = parse_credentials(text)
    except DigestError:
        return
    again = "Digest " + ", ".join(f"{k}={quote(v)}" for k, v in creds.params.items())
    assert parse_credentials(again) == creds
    assert BOOK.check(creds.nonce, creds.realm, 300)[0] is NonceState.FORGED


def check_uri(text: str) -> None:
    aor(text)
    try:
        key = uri_key(text)
    except ValueError:
        pass
    else:
        assert uri_key(key) == key
    try:
        q = parse_q(text)
    except ValueError:
        return
    assert 0 <= q <= 1000 and parse_q(format_q(q)) == q


@pytest.mark.parametrize("text", CREDENTIALS, ids=seed_ids(CREDENTIALS))
def test_credential_seeds(text: str) -> None:
    check_credentials(text)


@TARGET
@given(text_mutants(CREDENTIALS, TOKENS))
def test_credentials(text: str) -> None:
    check_credentials(text)


@pytest.mark.parametrize("text", URIS, ids=seed_ids(URIS))
def test_uri_seeds(text: str) -> None:
    check_uri(text)


@TARGET
@given(text_mutants(URIS, TOKENS))
def test_uris(text: str) -> None:
    check_uri(text)
