"""TLS material: a self-signed certificate made on first start, and SSL contexts.

A fresh data directory has no certificate, yet STARTTLS, SMTPS, IMAPS and
HTTPS must work at once; so :func:`ensure_certificate` creates one in
``DATA/tls/`` (EC P-256, 10 years, SAN = server name + localhost +
127.0.0.1 + ::1). An administrator replaces the two files with real ones.

Outbound SMTP uses STARTTLS opportunistically and does not verify the peer
(RFC 7435): an unverified encrypted session is still better than plain text,
and refusing unverifiable peers would stop mail to most of the Internet.

Listeners (issue 13 point 10): TLS 1.2 with AEAD suites only (ECDHE with
AES-GCM or ChaCha20-Poly1305, Mozilla's "intermediate" list without DHE) and
TLS 1.3, whose suites are all AEAD; no CBC suite, so no Lucky13/POODLE
class of padding oracle. The certificate and key are the settings
TLSCertificate/TLSKey (paths), else the self-signed pair. :class:`ServerTLS`
is the one context every listener holds; :meth:`ServerTLS.use` swaps the
certificate behind it (SIGHUP) without touching open sessions: each new
handshake is moved to the current context in the ``sni_callback``, which
OpenSSL runs for every ClientHello, with or without SNI. A fresh context is
swapped in rather than the live one reloaded, because loading an RSA pair
into a context that holds an ECDSA one keeps both, and a bad pair would
leave it half changed.

Call :func:`ensure_certificate` before the event loop starts or in a worker
thread: key generation and file writes block; so do :func:`server_context`
and :func:`describe` (file reads).
"""

from __future__ import annotations

import datetime as dt
import fcntl
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
    real certificate there). The key file is mode 0600. Worker processes
    starting together make one pair between them: the first to take the
    lock writes it, the others find it (a key from one and a certificate
    from another would not match).
    """
    tls_dir = Path(data_dir) / "tls"
    cert_path, key_path = tls_dir / CERT_FILE, tls_dir / KEY_FILE
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(tls_dir / ".create.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (cert_path.exists() and key_path.exists()):
            cert_pem, key_pem = make_self_signed(
                server_name or socket.gethostname() or "localhost")
            _write_private(key_path, key_pem, 0o600)
            _write_private(cert_path, cert_pem, 0o644)
    return cert_path, key_path


SERVER_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"
"""TLS 1.2 suites our listeners offer: forward secret and AEAD only."""


def server_context(cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> ssl.SSLContext:
    """Context for our listeners (STARTTLS and implicit-TLS ports)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(SERVER_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    ctx.load_cert_chain(os.fspath(cert), os.fspath(key))
    return ctx


def certificate_files(data_dir: str | os.PathLike[str], cert: str, key: str,
                      server_name: str | None = None, *, create: bool = True
                      ) -> tuple[Path, Path] | None:
    """The pair in use: the TLSCertificate/TLSKey settings (``cert``, ``key``;
    an empty key means the key is in the certificate file), else the
    self-signed pair in ``DATA/tls`` (made when missing if ``create``; None
    when it is missing and not ``create``)."""
    if cert:
        return Path(cert), Path(key or cert)
    if not create:
        tls_dir = Path(data_dir) / "tls"
        pair = tls_dir / CERT_FILE, tls_dir / KEY_FILE
        return pair if all(p.exists() for p in pair) else None
    return ensure_certificate(data_dir, server_name)


class ServerTLS:
    """The context all listeners share, with a certificate that can change.

    ``context`` is handed to every listener once; :meth:`use` makes a new
    context (new certificate) serve every handshake from then on. Sessions
    already encrypted keep theirs: OpenSSL copied the pair into them.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self._current = context
        context.sni_callback = self._pick

    def use(self, context: ssl.SSLContext) -> None:
        """Serve new handshakes from ``context`` (call on the event loop)."""
        self._current = context

    def _pick(self, conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None,
              ctx: ssl.SSLContext) -> None:
        if self._current is not ctx:
            conn.context = self._current


def describe(cert: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """What an administrator checks of a certificate file: subject, names,
    validity, issuer, fingerprint (the first certificate of a chain file)."""
    parsed = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    try:
        san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
        names += [f"IP:{a}" for a in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    expires = parsed.not_valid_after_utc
    days = (expires - dt.datetime.now(dt.UTC)).days
    return [
        ("file", os.fspath(cert)),
        ("subject", parsed.subject.rfc4514_string()),
        ("names", ", ".join(names) or "(none)"),
        ("not before", parsed.not_valid_before_utc.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("expires", expires.strftime("%Y-%m-%d %H:%M:%S UTC")
         + (f" (in {days} days)" if days >= 0 else " (EXPIRED)")),
        ("issuer", parsed.issuer.rfc4514_string()),
        ("SHA-256", parsed.fingerprint(hashes.SHA256()).hex(":").upper()),
    ]


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
