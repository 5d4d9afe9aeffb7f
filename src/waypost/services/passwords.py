"""Password hashing (argon2id) and generation.

Hashing is deliberately slow; the server calls these from a worker thread,
never on the event loop. Tests may call :func:`configure` with
:data:`FAST_PARAMETERS` so a fixture with many accounts stays quick; the
defaults are argon2-cffi's (RFC 9106 low-memory profile). Nothing here logs or
keeps a plaintext password.
"""

from __future__ import annotations

import secrets
import threading
from typing import TypedDict, Unpack

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


class CostParameters(TypedDict, total=False):
    """The cost parameters of ``argon2.PasswordHasher`` (RFC 9106 §3.1)."""

    time_cost: int
    memory_cost: int  # KiB
    parallelism: int
    hash_len: int
    salt_len: int


# Cheap but still argon2id: only for test suites.
FAST_PARAMETERS: CostParameters = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}

# No 0/O, 1/l/I: readable when printed once on first start.
_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

_hasher = PasswordHasher()
_dummy_hash: str | None = None
_lock = threading.Lock()


def configure(**parameters: Unpack[CostParameters]) -> None:
    """Replace the hasher's cost parameters (``time_cost``, ``memory_cost``, ...).

    Existing hashes stay verifiable: argon2 hashes carry their own parameters.
    """
    global _hasher, _dummy_hash
    with _lock:
        _hasher = PasswordHasher(**parameters)
        _dummy_hash = None


def reset() -> None:
    """Back to the secure defaults."""
    configure()


def hash_password(password: str) -> str:
    if not isinstance(password, str) or not password:
        raise ValueError("password must not be empty")
    return _hasher.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    """True when ``password`` matches ``hashed``; False for a mismatch or a bad hash."""
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def verify_dummy(password: str) -> bool:
    """Spend the time of one real verification and return False.

    Used for unknown users so that a login failure does not reveal whether
    the name exists.
    """
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(generate_password())
    verify_password(_dummy_hash, password)
    return False


def generate_password(length: int = 16) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))
