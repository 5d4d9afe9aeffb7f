"""Secrets that must be recoverable, sealed with a key of the data directory.

Passwords are stored as argon2 hashes. CRAM-MD5 (RFC 2195), which RFC 2645
makes mandatory for On-Demand Mail Relay (fetchmail's ODMR speaks nothing
else), needs the password itself on the server. An account whose
``PasswordEncryption`` setting is ``argon2+cram-md5`` therefore also keeps
its password sealed (Fernet: AES-128-CBC + HMAC-SHA256) with a key that
lives only in ``DATA/keys/sealing.key`` (mode 0600), never in the database.
Every other account keeps the hash alone.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = Path("keys") / "sealing.key"
CRAM_MODE = "argon2+cram-md5"
MODES = ("argon2", CRAM_MODE)

_lock = threading.Lock()


def _key(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    with _lock:
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(Fernet.generate_key())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        return path.read_bytes().strip()


def seal(data_dir: Path, secret: str) -> str:
    return Fernet(_key(data_dir)).encrypt(secret.encode("utf-8")).decode("ascii")


def unseal(data_dir: Path, token: str) -> str | None:
    """The secret, or None when the token is not ours (another key, tampered)."""
    try:
        return Fernet(_key(data_dir)).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        return None


def wants_cram(settings: dict) -> bool:
    return str(settings.get("PasswordEncryption", "")).lower() == CRAM_MODE
