"""SMTP "Relay to All Hosts We Backup" (smtp.md §5), checked with DNS at RCPT time."""

from __future__ import annotations

import smtplib
from pathlib import Path

from tests.support.server import WaypostServer


def test_relay_to_all_hosts_we_backup(tmp_path: Path, dns_server) -> None:
    dns_server.load({
        "backed.example": {"MX": [(10, "primary.backed.example"), (20, "backup.main.dom")]},
        "byname.example": {"MX": [(10, "primary.byname.example"), (20, "main.dom")]},
        "primary.backed.example": {"A": ["127.0.0.9"]},
        "primary.byname.example": {"A": ["127.0.0.9"]},
        "backup.main.dom": {"A": ["192.0.2.10"]},
        "main.dom": {"A": ["192.0.2.99"]},
        "notours.example": {"MX": [(10, "mx.other.example")]},
        "mx.other.example": {"A": ["127.0.0.9"]},
    })
    server = WaypostServer(tmp_path / "var").init()
    server.cli("settings", "set", "ClientIPAddresses", "127.0.0.2")
    server.cli("settings", "set", "ServerIPAddresses", "192.0.2.10")
    server.cli("settings", "set", "DNSServers", dns_server.address)
    server.start()
    try:
        def rcpt(address: str) -> int:
            client = smtplib.SMTP("127.0.0.1", server.smtp, timeout=30)
            client.ehlo("mx.sender.example")
            client.mail("someone@sender.example")
            code = client.rcpt(address)[0]
            client.quit()
            return code

        assert rcpt("bob@backed.example") == 550  # the setting is off by default
        server.cli("settings", "set", "RelayToAllHostsWeBackup", "YES")
        server.wait_for(lambda: rcpt("bob@backed.example") == 250, what="setting picked up")
        assert rcpt("bob@byname.example") == 250
        assert rcpt("bob@notours.example") == 550
        assert rcpt("bob@nxdomain.example") == 550
    finally:
        server.stop()
