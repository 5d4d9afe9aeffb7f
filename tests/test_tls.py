"""Self-signed certificate on first start, and a real TLS handshake with it on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import stat

import pytest
from cryptography import x509

from waypost.tls import client_context, ensure_certificate, server_context


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    return data, *ensure_certificate(data, "mail.waypost.test")


def test_certificate_created_in_data_tls(material):
    data, cert_path, key_path = material
    assert cert_path.parent == data / "tls" and key_path.parent == data / "tls"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mail.waypost.test", "localhost"]
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime > dt.timedelta(days=365 * 10 - 1)


def test_existing_certificate_is_kept(material):
    data, cert_path, key_path = material
    before = cert_path.read_bytes(), key_path.read_bytes()
    assert ensure_certificate(data) == (cert_path, key_path)
    assert (cert_path.read_bytes(), key_path.read_bytes()) == before


async def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        writer.write(b"echo " + line)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname=hostname),
            5,
        )
        writer.write(b"hello\n")
        answer = await asyncio.wait_for(reader.readline(), 5)
        version = writer.get_extra_info("ssl_object").version()
        writer.close()
        await writer.wait_closed()
        return answer, version
    finally:
        server.close()
        await server.wait_closed()


def test_handshake_opportunistic_client(material):
    _, cert_path, key_path = material
    answer, version = asyncio.run(
        _handshake(server_context(cert_path, key_path), client_context(verify=False), "x")
    )
    assert answer == b"echo hello\n"
    assert version in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("hostname", ["localhost", "mail.waypost.test", "127.0.0.1"])
def test_handshake_verifying_client_trusting_the_cert(material, hostname):
    _, cert_path, key_path = material
    client = client_context(verify=True, cafile=cert_path)
    answer, _ = asyncio.run(_handshake(server_context(cert_path, key_path), client, hostname))
    assert answer == b"echo hello\n"


def test_verifying_client_refuses_wrong_name_and_unknown_ca(material, tmp_path):
    _, cert_path, key_path = material
    server = server_context(cert_path, key_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(_handshake(server, client_context(True, cafile=cert_path), "other.example"))
    other_cert, _ = ensure_certificate(tmp_path, "other.example")
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(_handshake(server, client_context(True, cafile=other_cert), "localhost"))
