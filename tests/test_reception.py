"""What the SMTP session asks of Reception: whether a client is trusted
(ClientIPAddresses, one answer for every caller) and the queue it submits to."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mypy import api as mypy_api

from waypost.services.container import Services
from waypost.services.queue import Queue
from waypost.services.reception import Reception
from waypost.services.trust import ClientTrust
from waypost.settings import ServerSettings


def test_client_trust_follows_the_setting(svc: Services) -> None:
    svc.set_setting("ClientIPAddresses", "10.0.0.0/8, 192.0.2.1-192.0.2.9")
    trust = ClientTrust(svc.settings())
    assert trust.is_trusted("10.1.2.3") and trust.is_trusted("192.0.2.9")
    assert not trust.is_trusted("192.0.2.10") and not trust.is_trusted("127.0.0.1")
    assert not trust.is_trusted("") and not trust.is_trusted("not an address")
    svc.set_setting("ClientIPAddresses", "127.0.0.1")
    trust.update(svc.settings())
    assert trust.is_trusted("127.0.0.1") and not trust.is_trusted("10.1.2.3")
    assert not ClientTrust().is_trusted("127.0.0.1")  # no settings yet: nobody


def test_reception_the_cli_and_delivery_trust_the_same_clients(svc: Services) -> None:
    async def go() -> tuple[bool, bool, bool]:
        queue = Queue(svc)
        try:
            reception = Reception(svc, queue)
            before = reception.is_trusted_ip("203.0.113.5")
            await asyncio.to_thread(svc.set_setting, "ClientIPAddresses", "203.0.113.0/24")
            stale = reception.is_trusted_ip("203.0.113.5")  # no store read on the loop
            await reception.refresh()
            return before, stale, reception.is_trusted_ip("203.0.113.5")
        finally:
            await queue.close()

    assert asyncio.run(go()) == (False, False, True)
    assert svc.is_trusted_ip("203.0.113.5") and not svc.is_trusted_ip("198.51.100.1")
    assert ClientTrust(ServerSettings.from_store({"ClientIPAddresses": "203.0.113.0/24"})
                       ).is_trusted("203.0.113.5")


def test_reception_takes_the_servers_queue_as_typed(tmp_path: Path) -> None:
    """The server hands Reception its Queue; mypy must accept that wiring
    (Reception's queue type once named a method the Queue does not have)."""
    snippet = tmp_path / "wiring.py"
    snippet.write_text(
        "from waypost.services.container import Services\n"
        "from waypost.services.queue import Queue\n"
        "from waypost.services.reception import Reception\n\n\n"
        "def wire(services: Services) -> Reception:\n"
        "    return Reception(services, Queue(services))\n"
    )
    out, err, status = mypy_api.run([
        str(snippet), "--cache-dir", str(tmp_path / "cache"), "--follow-imports", "silent",
        "--check-untyped-defs", "--no-implicit-optional", "--no-error-summary",
    ])
    assert status == 0, out + err
