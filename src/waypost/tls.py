"""TLS material: a self-signed certificate made on first start, and SSL contexts.

A fresh data directory has no certificate, yet STARTTLS, SMTPS, IMAPS and
HTTPS must work at once; so :func:`ensure_certificate` creates one in
``DATA/tls/`` (EC P-256, 10 years, SAN = server name + localhost +
127.0.0.1 + ::1). An administrator replaces the two files with real ones.

Outbound SMTP uses STARTTLS opportunistically and does not verify the peer
(RFC 7435): an unverified encrypted session is still better than plain text,
and refusing unverifiable peers would stop mail to most of the Internet.

Call :func:`ensure_certificate` before the event loop starts or in a worker
thread: key generation and file writes block.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_FILE = "server.crt"
KEY_FILE = "server.key"
VALID_DAYS = 3652


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with ``mode`` from the first byte on (no window where a
    private key is world-readable)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def make_self_signed(server_name: str) -> tuple[bytes, bytes]:
    """Return ``(cert_pem, key_pem)`` for a new self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, server_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Waypost self-signed"),
        ]
    )
    dns_names = list(dict.fromkeys([server_name, "localhost"]))
    san = x509.SubjectAlternativeName(
        [x509.DNSName(n) for n in dns_names]
        + [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH, x509.OID_CLIENT_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_certificate(
    data_dir: str | os.PathLike[str], server_name: str | None = None
) -> tuple[Path, Path]:
    """Return ``(cert_path, key_path)`` in ``DATA/tls/``, creating them if missing.

    Existing files are never overwritten (the administrator may have put a
    real certificate there). The key file is mode 0600.
    """
    tls_dir = Path(data_dir) / "tls"
    cert_path, key_path = tls_dir / CERT_FILE, tls_dir / KEY_FILE
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_pem, key_pem = make_self_signed(server_name or socket.gethostname() or "localhost")
    _write_private(key_path, key_pem, 0o600)
    _write_private(cert_path, cert_pem, 0o644)
    return cert_path, key_path


def server_context(cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> ssl.SSLContext:
    """Context for our listeners (STARTTLS and implicit-TLS ports)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(os.fspath(cert), os.fspath(key))
    return ctx


def client_context(verify: bool, cafile: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """Context for outbound connections.

    ``verify=False`` is opportunistic TLS (outbound SMTP STARTTLS): encrypt,
    check nothing. ``verify=True`` checks the chain (system store, or
    ``cafile``) and the host name passed as ``server_hostname``.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        if cafile is not None:
            ctx.load_verify_locations(cafile=os.fspath(cafile))
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
