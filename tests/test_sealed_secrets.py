"""CRAM-MD5 secrets: kept only for accounts that ask for them, sealed, and
forgotten when the account goes back to argon2 alone."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest

from waypost.services import auth
from waypost.services.container import open_services
from waypost.services.names import DirectoryError


def test_cram_md5_secret_lifecycle(tmp_path: Path) -> None:
    svc = open_services(tmp_path / "var", create=True)
    try:
        svc.directory.init_server("main.dom")
        svc.directory.create_account("plain", password="plain-pw-1")
        assert svc.directory.cram_secret("plain") is None
        svc.directory.create_account("odmr", password="odmr-pw-1",
                                     settings={"PasswordEncryption": "argon2+cram-md5"})
        assert svc.directory.cram_secret("odmr") == "odmr-pw-1"
        db = (tmp_path / "var" / "waypost.db").read_bytes()
        assert b"odmr-pw-1" not in db and b"plain-pw-1" not in db
        key = tmp_path / "var" / "keys" / "sealing.key"
        assert oct(key.stat().st_mode & 0o777) == "0o600"
        challenge = "<123.456@main.dom>"
        good = hmac.new(b"odmr-pw-1", challenge.encode(), "md5").hexdigest()
        assert auth.check_cram_md5(svc, "odmr@main.dom", challenge, good) == "odmr@main.dom"
        assert auth.check_cram_md5(svc, "odmr", challenge, "0" * 32) is None
        plain = hmac.new(b"plain-pw-1", challenge.encode(), "md5").hexdigest()
        assert auth.check_cram_md5(svc, "plain", challenge, plain) is None
        svc.directory.set_account_settings("odmr", {"PasswordEncryption": "argon2"})
        assert svc.directory.cram_secret("odmr") is None
        assert "Sealed" not in svc.directory.get_account("odmr").data
        with pytest.raises(DirectoryError, match="PasswordEncryption"):
            svc.directory.set_account_settings("odmr", {"PasswordEncryption": "clear"})
    finally:
        svc.close()
