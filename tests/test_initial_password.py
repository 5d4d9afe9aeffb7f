"""The initial postmaster password is printed once, by ``waypost init``, and
written nowhere else (issue 13 point 4): not in the server log, not on
``serve``'s output at any start, not in a file of the data directory."""

from __future__ import annotations

import smtplib
from pathlib import Path

from tests.support.server import WaypostServer


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_init_prints_the_password_once_and_serve_never(tmp_path: Path) -> None:
    server = WaypostServer(tmp_path / "var", domain="pw.dom")
    out = server.cli("init", "--domain", "pw.dom").stdout
    password = next(line.split()[-1] for line in out.splitlines()
                    if line.startswith("password"))
    assert len(password) >= 12
    assert out.count(password) == 1
    assert "shown only this once" in out
    assert _files_containing(server.data, password.encode()) == []

    for _ in range(2):  # first start and a restart
        server.start()
        try:
            with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
                client.ehlo("pw.test")
                client.login("postmaster@pw.dom", password)  # the password really works
        finally:
            assert server.stop() == 0
        assert password not in server.banner
        assert "postmaster password" not in server.banner
        assert password not in server.logs()
        assert "as postmaster@pw.dom from 127.0.0.1" in server.logs()
    assert _files_containing(server.data, password.encode()) == []


def test_serve_names_a_legacy_password_file_without_its_content(tmp_path: Path) -> None:
    """Data directories from before the fix hold the password in plain text:
    ``serve`` names the file so the operator removes it, and never shows it."""
    server = WaypostServer(tmp_path / "var", domain="legacy.dom").init()
    legacy = server.data / "initial-postmaster-password"
    legacy.write_text(server.postmaster_password + "\n")
    server.start()
    try:
        assert str(legacy) in server.banner
        assert server.postmaster_password not in server.banner
    finally:
        server.stop()
    assert server.postmaster_password not in server.logs()
    server.cli("account", "passwd", "postmaster", "--password", "a-new-Secret-1")
    assert not legacy.exists()
