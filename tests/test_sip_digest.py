"""SIP digest authentication (RFC 3261 §22.4, RFC 7616, RFC 8760) against a
real store and Directory: the RFCs' example vectors, challenges, nonces that
expire (stale) and are never reused, wrong realm or uri, accounts without a
sealed secret, and lock-out through the login guard shared with mail."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.clock import FakeClock
from tests.support.directory import PASSWORDS
from tests.support.sip_world import ALICE, sip_world

from waypost.services.container import Services
from waypost.services.login_guard import LoginGuard
from waypost.services.signals.digest import (
    DigestError,
    DigestRequest,
    DigestResult,
    Verdict,
    challenges,
    parse_credentials,
    quote,
    response_for,
    verify,
)
from waypost.services.signals.nonces import NonceBook, NonceState

REALM = "domain.dom"
URI = "sip:domain.dom"
IP = "192.0.2.7"


# -- the RFCs' example vectors ------------------------------------------------

RFC7616 = dict(username="Mufasa", realm="http-auth@example.org", password="Circle of Life",
               method="GET", uri="/dir/index.html",
               nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc="00000001",
               cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")


@pytest.mark.parametrize(("algorithm", "expected"), [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_section_3_9_1_vectors(algorithm: str, expected: str) -> None:
    assert response_for(algorithm, **RFC7616) == expected


RFC2617_HEADER = (
    'Digest username="Mufasa",\r\n realm="testrealm@host.com",\r\n'
    ' nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",\r\n uri="/dir/index.html",\r\n'
    ' qop=auth,\r\n nc=00000001,\r\n cnonce="0a4f113b",\r\n'
    ' response="6629fae49393a05397450978507c4ef1",\r\n'
    ' opaque="5ccc069c403ebaf9f0171e9517f40e41"')


def test_rfc2617_section_3_5_example_parses_and_verifies() -> None:
    creds = parse_credentials(RFC2617_HEADER)
    assert (creds.username, creds.realm, creds.uri, creds.get("qop"), creds.nonce_count(),
            creds.get("opaque"), creds.algorithm) == (
        "Mufasa", "testrealm@host.com", "/dir/index.html", "auth", 1,
        "5ccc069c403ebaf9f0171e9517f40e41", "MD5")
    assert response_for(creds.algorithm, creds.username, creds.realm, "Circle Of Life", "GET",
                        creds.uri, creds.nonce, creds.get("nc"), creds.get("cnonce"),
                        creds.get("qop")) == creds.get("response")


@pytest.mark.parametrize("bad", [
    'Basic dXNlcjpwdw==',
    'Digest realm="r", nonce="n", uri="u", response="x"',  # no username
    'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="x"',
    'Digest username="a, realm="r", nonce="n", uri="u", response="x"',  # unterminated
    'Digest username="a" realm="r", nonce="n", uri="u", response="x"',  # no comma
    'Digest username=, realm="r", nonce="n", uri="u", response="x"',
    'Digest username="a\r\nX", realm="r", nonce="n", uri="u", response="x"',
    "Digest " + ", ".join(f"p{i}=v" for i in range(40)),
])
def test_malformed_credentials_are_refused(bad: str) -> None:
    with pytest.raises(DigestError):
        parse_credentials(bad)


def test_quoted_strings_unescape_and_names_ignore_case() -> None:
    creds = parse_credentials('digest USERNAME="a\\"b\\\\c", Realm=r, nonce="n", uri="u",'
                              ' response="x",')
    assert (creds.username, creds.realm) == ('a"b\\c', "r")
    assert parse_credentials(f"Digest username={quote(creds.username)}, realm=r, nonce=n,"
                             " uri=u, response=x").username == creds.username


def test_challenges_offer_sha256_first_then_md5_with_qop_auth() -> None:
    sha, md5 = challenges("domain.dom", "abc")
    assert sha == 'Digest realm="domain.dom", nonce="abc", algorithm=SHA-256, qop="auth"'
    assert md5 == 'Digest realm="domain.dom", nonce="abc", algorithm=MD5, qop="auth"'
    assert all(c.endswith(", stale=true") for c in challenges("d", "n", stale=True))


# -- verification against the Directory --------------------------------------


async def no_wait(_seconds: float) -> None:
    return None


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    with sip_world(tmp_path / "var") as services:
        yield services


class Phone:
    """A UA answering challenges as RFC 7616 §3.4 says, with its own nonce count."""

    def __init__(self, book: NonceBook, username: str = "alice",
                 password: str = PASSWORDS[ALICE], realm: str = REALM) -> None:
        self.book, self.username, self.password, self.realm = book, username, password, realm
        self.nonce = book.issue(realm)
        self.nc = 0

    def header(self, *, algorithm: str = "SHA-256", uri: str = URI, nc: int | None = None,
               password: str | None = None, realm: str | None = None, method: str = "REGISTER",
               qop: str = "auth") -> str:
        if nc is None:
            self.nc += 1
            nc = self.nc
        realm = realm or self.realm
        response = response_for(algorithm, self.username, realm, password or self.password,
                                method, uri, self.nonce, f"{nc:08x}", "c0ffee", "auth")
        return (f"Digest username={quote(self.username)}, realm={quote(realm)},"
                f" nonce={quote(self.nonce)}, uri={quote(uri)}, response={quote(response)},"
                f" algorithm={algorithm}, cnonce=\"c0ffee\", nc={nc:08x}"
                + (f", qop={qop}" if qop else ""))


def check(svc: Services, guard: LoginGuard, book: NonceBook, header: str, *,
          uri: str = URI, ip: str = IP) -> DigestResult:
    request = DigestRequest(parse_credentials(header), "REGISTER", uri, REALM, ip)
    return asyncio.run(verify(svc, guard, book, svc.settings(), request))


@pytest.fixture
def guard() -> LoginGuard:
    return LoginGuard(sleep=no_wait)


@pytest.mark.parametrize("username", ["alice", "alice@domain.dom", "ali", "ali%domain.dom"])
@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5", "sha-256"])
def test_the_right_answer_logs_in_by_any_name(svc: Services, guard: LoginGuard, username: str,
                                              algorithm: str) -> None:
    book = NonceBook()
    phone = Phone(book, username)
    result = check(svc, guard, book, phone.header(algorithm=algorithm))
    assert (result.verdict, result.account) == (Verdict.OK, ALICE)


def test_a_nonce_count_is_never_accepted_twice(svc: Services, guard: LoginGuard) -> None:
    book = NonceBook()
    phone = Phone(book)
    first = phone.header()
    assert check(svc, guard, book, first).verdict is Verdict.OK
    replay = check(svc, guard, book, first)
    assert (replay.verdict, replay.account, replay.why) == (
        Verdict.REFUSED, None, "replayed nonce count")
    assert check(svc, guard, book, phone.header(nc=1)).verdict is Verdict.REFUSED
    assert check(svc, guard, book, phone.header(nc=5)).verdict is Verdict.OK
    assert check(svc, guard, book, phone.header(nc=3)).verdict is Verdict.REFUSED
    assert guard.failures(IP, ALICE)[0] == 0  # replays are refused before any password check


def test_two_copies_racing_get_in_once(svc: Services, guard: LoginGuard) -> None:
    book = NonceBook()
    header = Phone(book).header()
    request = DigestRequest(parse_credentials(header), "REGISTER", URI, REALM, IP)

    async def both() -> list[DigestResult]:
        return list(await asyncio.gather(*(verify(svc, guard, book, svc.settings(), request)
                                           for _ in range(2))))

    assert sorted(r.verdict.value for r in asyncio.run(both())) == ["ok", "refused"]


def test_an_old_nonce_is_stale_only_when_the_answer_is_right(svc: Services,
                                                             guard: LoginGuard) -> None:
    clock = FakeClock()
    book = NonceBook(clock=clock)
    phone = Phone(book)
    clock.advance(299)
    assert check(svc, guard, book, phone.header()).verdict is Verdict.OK
    clock.advance(2)
    assert book.check(phone.nonce, REALM, 300)[0] is NonceState.STALE
    stale = check(svc, guard, book, phone.header())
    assert (stale.verdict, stale.account) == (Verdict.STALE, None)
    wrong = check(svc, guard, book, phone.header(password="guess"))
    assert (wrong.verdict, wrong.account) == (Verdict.REFUSED, None)
    # a right answer to an old nonce (maybe a captured one) never clears failures
    assert guard.failures(IP, ALICE)[0] == 2
    for _ in range(3):
        assert check(svc, guard, book, phone.header()).verdict is Verdict.STALE
    assert guard.locked(IP, ALICE)
    # the lock-out is kept in the store (issue 15), so a new guard sees it too:
    # the longer lifetime is checked from another address
    guard = LoginGuard(sleep=no_wait)
    svc.set_setting("SIPNonceLifetime", "600")
    assert check(svc, guard, book, phone.header(), ip="192.0.2.8").verdict is Verdict.OK


def test_foreign_nonces_and_wrong_realms_are_refused(svc: Services, guard: LoginGuard) -> None:
    book = NonceBook()
    phone = Phone(book)
    assert check(svc, guard, book, phone.header(realm="main.dom")).why.startswith("realm")
    other = Phone(book, realm="main.dom")  # a nonce issued for another realm
    header = other.header(realm=REALM)
    assert check(svc, guard, book, header).why == "unknown nonce"
    forged = Phone(book)  # names this book, but its signature is not ours
    raw = bytearray(base64.urlsafe_b64decode(forged.nonce))
    raw[-1] ^= 1
    forged.nonce = base64.urlsafe_b64encode(bytes(raw)).decode()
    assert check(svc, guard, book, forged.header()).why == "unknown nonce"
    # another process's book (another worker, or this one before a restart):
    # the phone is challenged again with stale=true, and never let in
    stranger = Phone(NonceBook())
    assert check(svc, guard, book, stranger.header()).verdict is Verdict.STALE
    assert check(svc, guard, book, stranger.header(password="wrong")).verdict is (
        Verdict.REFUSED)
    sess = phone.header(algorithm="MD5").replace("algorithm=MD5", "algorithm=MD5-sess")
    assert check(svc, guard, book, sess).why == "algorithm MD5-sess not offered"
    # an account of another domain, even with its right password, is not in this realm
    john = Phone(book, "john@main.dom", PASSWORDS["john@main.dom"])
    assert check(svc, guard, book, john.header()).verdict is Verdict.REFUSED


def test_wrong_uri_or_missing_qop_is_malformed(svc: Services, guard: LoginGuard) -> None:
    book = NonceBook()
    phone = Phone(book)
    header = phone.header(uri="sip:main.dom")
    assert check(svc, guard, book, header).verdict is Verdict.MALFORMED
    assert check(svc, guard, book, phone.header(uri="SIP:Domain.Dom"),
                 uri="sip:domain.dom").verdict is Verdict.OK
    assert check(svc, guard, book, phone.header(qop="")).verdict is Verdict.MALFORMED
    bad_nc = phone.header().replace(f"nc={phone.nc:08x}", "nc=1")
    assert check(svc, guard, book, bad_nc).verdict is Verdict.MALFORMED


def test_an_account_without_a_sealed_secret_fails_and_is_logged_once(
        svc: Services, guard: LoginGuard, caplog: pytest.LogCaptureFixture) -> None:
    account = "nocram@domain.dom"  # only this test uses it: the warning is once per process
    svc.directory.create_account(account, password="nocram-secret")
    book = NonceBook()
    phone = Phone(book, "nocram", "nocram-secret")
    with caplog.at_level(logging.WARNING, logger="waypost.sip.digest"):
        for _ in range(3):
            assert check(svc, guard, book, phone.header()).verdict is Verdict.REFUSED
    told = [r.getMessage() for r in caplog.records if "reversible secret" in r.getMessage()]
    assert told == [f"SIP digest login of {account} refused: the account keeps no reversible"
                    " secret (PasswordEncryption is not argon2+cram-md5); give it one with"
                    f" `waypost account passwd {account} --odmr`"]
    assert guard.failures(IP, account)[0] == 3  # each one a failed login all the same


def test_bad_passwords_are_locked_out_through_the_login_guard(
        svc: Services, guard: LoginGuard, caplog: pytest.LogCaptureFixture) -> None:
    book = NonceBook()
    attacker = Phone(book, "ali")  # an alias shares the account's counter
    with caplog.at_level(logging.DEBUG, logger="waypost.login"):
        for _ in range(200):
            result = check(svc, guard, book, attacker.header(password="guess"))
            assert (result.verdict, result.account) == (Verdict.REFUSED, None)
    verified = [r for r in caplog.records if "sip password verification" in r.getMessage()]
    assert len(verified) == 5  # LoginFailureLimit: the rest were refused unverified
    assert guard.locked(IP, ALICE)
    owner = Phone(book)
    right = check(svc, guard, book, owner.header())
    assert (right.verdict, right.why) == (Verdict.REFUSED, "locked out")
    # the lock-out is per (account, address): the owner elsewhere still gets in
    assert check(svc, guard, book, owner.header(), ip="198.51.100.1").verdict is Verdict.OK


def test_the_nonce_table_is_bounded_and_forgetting_never_reopens_a_nonce() -> None:
    clock = FakeClock()
    book = NonceBook(max_tracked=3, clock=clock)
    nonces = []
    for _ in range(5):
        nonce = book.issue(REALM)
        state, issued = book.check(nonce, REALM, 300)
        assert state is NonceState.FRESH and book.use(nonce, 1, issued)
        nonces.append((nonce, issued))
        clock.advance(1)
    assert len(book) == 3
    forgotten, issued = nonces[0]
    assert book.check(forgotten, REALM, 300)[0] is NonceState.STALE
    assert not book.use(forgotten, 1, issued)
    assert book.check(nonces[-1][0], REALM, 300)[0] is NonceState.FRESH


def test_a_known_ha1_is_used_until_the_password_changes(svc: Services, guard: LoginGuard,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The HA1 found for an account is kept (the next answers read no
    secret), and a password change makes the old password fail at once."""
    book = NonceBook()
    phone = Phone(book)
    assert check(svc, guard, book, phone.header()).verdict is Verdict.OK
    reads: list[str] = []
    real = svc.directory.cram_secret
    monkeypatch.setattr(svc.directory, "cram_secret",
                        lambda account: reads.append(account) or real(account))
    assert check(svc, guard, book, phone.header()).verdict is Verdict.OK
    assert reads == []  # remembered
    svc.directory.set_password(ALICE, "a-new-password-9")
    assert check(svc, guard, book, phone.header()).verdict is Verdict.REFUSED
    assert check(svc, guard, book, phone.header(password="a-new-password-9")
                 ).verdict is Verdict.OK
    assert reads  # read again after the change
