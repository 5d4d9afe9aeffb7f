"""Secrets that must be recoverable, sealed with a key of the data directory.

Passwords are stored as argon2 hashes. CRAM-MD5 (RFC 2195), which RFC 2645
makes mandatory for On-Demand Mail Relay (fetchmail's ODMR speaks nothing
else), needs the password itself on the server. An account whose
``PasswordEncryption`` setting is ``argon2+cram-md5`` therefore also keeps
its password sealed (Fernet: AES-128-CBC + HMAC-SHA256) with a key that
lives only in ``DATA/keys/sealing.key`` (mode 0600), never in the database.
Every other account keeps the hash alone.

Several processes (issue 15): the key is made once, by whichever process
seals first: it writes a file of its own and links it into place without
replacing one (``os.link`` fails if another process won), then every process
reads the one key, so no secret is ever sealed with a key that is later
overwritten. The key is read from the file at each use, so every process of
the data directory uses the same one. Several nodes (one store, several data
directories) must share this file (copy it to each node's ``keys/``): a
secret sealed on one node opens only with its key.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from waypost.storage.durable import fsync_dir

KEY_FILE = Path("keys") / "sealing.key"
CRAM_MODE = "argon2+cram-md5"
MODES = ("argon2", CRAM_MODE)

_lock = threading.Lock()


def _key(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    with _lock:
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(Fernet.generate_key())
                    handle.flush()
                    os.fsync(handle.fileno())
                with contextlib.suppress(FileExistsError):  # another process's key won
                    os.link(tmp, path)
                fsync_dir(path.parent)
            finally:
                os.unlink(tmp)
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
