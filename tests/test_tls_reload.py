"""TLS on every listener (issue 13 point 10): AEAD suites only, the
certificate from the settings reloaded on SIGHUP without dropping open
sessions, and ``waypost tls show``. A real server; real handshakes."""

from __future__ import annotations

import signal
import smtplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tests.support.server import WaypostServer

from waypost.tls import client_context, make_self_signed

TLS_PORTS = ["SMTPSPort", "POP3SPort", "IMAPSPort", "WebUserSPort"]
CBC_SUITES = ("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA:"
              "ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES128-SHA:"
              "AES128-SHA256:AES256-SHA256:AES128-SHA:AES256-SHA")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("tlsreload") / "var").init()
    srv.start()
    yield srv
    srv.stop()


def handshake(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    try:
        return ctx.wrap_socket(sock, server_hostname="localhost")
    except BaseException:
        sock.close()
        raise


def cbc_only() -> ssl.SSLContext:
    ctx = client_context(verify=False)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CBC_SUITES)
    offered = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert offered and not [c for c in offered if c["aead"]]  # the client really is CBC only
    return ctx


def tls12() -> ssl.SSLContext:
    ctx = client_context(verify=False)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ALL:@SECLEVEL=0")  # everything, CBC first in OpenSSL's order too
    return ctx


def peer_der(sock: ssl.SSLSocket) -> bytes:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def reloads(server: WaypostServer, text: str) -> int:
    return server.logs().count(text)


def hup_and_wait(server: WaypostServer, text: str) -> None:
    before = reloads(server, text)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for(lambda: reloads(server, text) > before, what=text)
    assert server.proc.poll() is None


def new_pair(tmp_path: Path, name: str) -> tuple[Path, Path, bytes]:
    cert_pem, key_pem = make_self_signed(name)
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    key.chmod(0o600)
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return cert, key, der


@pytest.mark.parametrize("setting", TLS_PORTS)
def test_a_cbc_only_client_fails_the_handshake(server: WaypostServer, setting: str) -> None:
    port = server.port(setting)
    with pytest.raises(ssl.SSLError):
        handshake(port, cbc_only()).close()
    with handshake(port, tls12()) as sock:  # a client offering every suite gets an AEAD one
        name, version, _ = sock.cipher()
        assert version == "TLSv1.2" and ("GCM" in name or "CHACHA20" in name), name
    with handshake(port, client_context(verify=False)) as sock:
        assert sock.version() == "TLSv1.3"


def test_starttls_refuses_cbc_too(server: WaypostServer) -> None:
    client = smtplib.SMTP("127.0.0.1", server.smtp, timeout=15)
    try:
        client.ehlo("cbc.test")
        with pytest.raises(ssl.SSLError):
            client.starttls(context=cbc_only())
    finally:
        client.close()


def test_sighup_reloads_the_certificate_and_keeps_sessions(
        server: WaypostServer, tmp_path: Path) -> None:
    unverified = client_context(verify=False)
    with handshake(server.smtps, unverified) as probe:
        old_der = peer_der(probe)
    kept = smtplib.SMTP_SSL("127.0.0.1", server.smtps, timeout=15, context=unverified)
    plain = smtplib.SMTP("127.0.0.1", server.smtp, timeout=15)
    try:
        kept.ehlo("kept.test")
        plain.ehlo("plain.test")
        assert isinstance(kept.sock, ssl.SSLSocket) and peer_der(kept.sock) == old_der

        cert, key, new_der = new_pair(tmp_path, "reloaded.test")
        assert new_der != old_der
        server.cli("settings", "set", "TLSCertificate", str(cert))
        server.cli("settings", "set", "TLSKey", str(key))
        hup_and_wait(server, "TLS certificate reloaded")

        for setting in TLS_PORTS:  # new handshakes: the new certificate everywhere
            with handshake(server.port(setting), unverified) as sock:
                assert peer_der(sock) == new_der, setting
        plain.starttls(context=unverified)  # opened before, encrypted after
        assert isinstance(plain.sock, ssl.SSLSocket) and peer_der(plain.sock) == new_der
        verifying = client_context(verify=True, cafile=cert)
        with handshake(server.port("IMAPSPort"), verifying) as sock:
            assert sock.version() in ("TLSv1.2", "TLSv1.3")

        # the session opened before the reload goes on, with its old certificate
        assert kept.noop()[0] == 250
        refused = kept.sendmail("a@sender.example", ["postmaster@main.dom"],
                                b"Subject: across the reload\r\n\r\nstill here\r\n")
        assert refused == {}
        assert peer_der(kept.sock) == old_der

        # a pair that does not load is logged; the last good one stays in use
        broken = tmp_path / "broken.crt"
        broken.write_text("not a certificate\n")
        server.cli("settings", "set", "TLSCertificate", str(broken))
        hup_and_wait(server, "TLS certificate not reloaded (the old one stays in use)")
        with handshake(server.smtps, unverified) as sock:
            assert peer_der(sock) == new_der
        assert kept.noop()[0] == 250
    finally:
        kept.close()
        plain.close()
        server.cli("settings", "set", "TLSCertificate", "default")
        server.cli("settings", "set", "TLSKey", "default")
    hup_and_wait(server, "TLS certificate reloaded")
    with handshake(server.smtps, unverified) as sock:
        assert peer_der(sock) == old_der  # back to the self-signed pair in DATA/tls
    assert "Traceback" not in server.logs()


def test_tls_show_prints_subject_names_and_expiry(server: WaypostServer, tmp_path: Path
                                                  ) -> None:
    out = server.cli("tls", "show").stdout
    crt = server.data / "tls" / "server.crt"
    parsed = x509.load_pem_x509_certificate(crt.read_bytes())
    fields = dict(line.split(None, 1) for line in out.splitlines()
                  if line.split(None, 1)[0] in ("file", "subject", "names", "expires"))
    assert fields["file"].strip() == str(crt)
    assert fields["subject"].strip() == "O=Waypost self-signed,CN=main.dom"
    assert fields["names"].strip() == "DNS:main.dom, DNS:localhost, IP:127.0.0.1, IP:::1"
    assert fields["expires"].startswith(
        parsed.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%S UTC"))

    cert, key, _ = new_pair(tmp_path, "shown.example")
    server.cli("settings", "set", "TLSCertificate", str(cert))
    server.cli("settings", "set", "TLSKey", str(key))
    try:
        out = server.cli("tls", "show").stdout
        assert "CN=shown.example" in out and "DNS:shown.example, DNS:localhost" in out
        assert str(key) in out
    finally:
        server.cli("settings", "set", "TLSCertificate", "default")
        server.cli("settings", "set", "TLSKey", "default")


def test_tls_show_without_a_certificate_says_so(tmp_path: Path) -> None:
    fresh = WaypostServer(tmp_path / "var")
    fresh.cli("init", "--domain", "fresh.dom")  # the pair is made by the first start
    proc = fresh.cli("tls", "show", check=False)
    assert proc.returncode != 0
    assert "no certificate yet" in proc.stderr
