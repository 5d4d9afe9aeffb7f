"""Housekeeping runs once per server: with ``serve --workers N`` only worker
0's delivery runner removes unused message bodies (the others would only
repeat the same scan)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from tests.support.services import open_world

from waypost.server import Server
from waypost.services.delivery.runner import start_delivery


def test_only_worker_zero_removes_unused_bodies(tmp_path: Path) -> None:
    services = open_world(tmp_path / "var")
    try:
        store = services.store
        old = time.time() - 2 * 3600  # older than the collector's grace of an hour

        def orphan() -> Path:
            path = store.blobs.path(store.blobs.put(b"a body no row names"))
            os.utime(path, (old, old))
            return path

        async def collect(worker: int, path: Path) -> bool:
            server = Server(services, worker=worker, workers=2)
            await start_delivery(server)
            runner = server.delivery
            for task in server.background:
                task.cancel()
            await asyncio.gather(*server.background, return_exceptions=True)
            runner._last_gc = 0.0  # due now
            await runner._collect_garbage()
            return path.exists()

        kept = orphan()
        assert asyncio.run(collect(1, kept)) is True
        gone = orphan()
        assert asyncio.run(collect(0, gone)) is False
    finally:
        services.close()
