"""SMTPDestinationConcurrency (issue 15 point 7): one SMTP queue's messages
are relayed over several sessions at once, never more than the setting,
each message once. The relay is the suite's FakeRelay, slowed down and
counting the calls (one call = one session) that overlap."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.support.delivery import FakeRelay, harness, run
from tests.support.services import open_world, submission

from waypost.services.container import Services


class CountingRelay(FakeRelay):
    def __init__(self) -> None:
        super().__init__()
        self.open = 0
        self.most = 0

    async def deliver(self, queue: str, messages: Any, ctx: Any) -> list[Any]:
        self.open += 1
        self.most = max(self.most, self.open)
        try:
            await asyncio.sleep(0.2)
            return await super().deliver(queue, messages, ctx)
        finally:
            self.open -= 1


def relay_40(svc: Services) -> CountingRelay:
    relay = CountingRelay()

    async def go() -> None:
        queue, runner = await harness(svc, relay)
        try:
            for n in range(40):
                await queue.submit(submission(svc, f"u{n}@friend.com", QueueID=f"C{n}"))
            await runner.run_once()
        finally:
            await queue.close()

    run(go)
    return relay


@pytest.mark.parametrize(("setting", "sessions"), [("4", 4), ("1", 1), ("100", 40)])
def test_one_destination_is_relayed_over_at_most_the_setting_sessions(
    tmp_path: Path, setting: str, sessions: int,
) -> None:
    svc = open_world(tmp_path / "data")
    try:
        svc.set_setting("SMTPDestinationConcurrency", setting)
        relay = relay_40(svc)
        assert relay.most == sessions
        sent = sorted(m.id for _, ms in relay.calls for m in ms)
        assert sent == sorted(f"C{n}" for n in range(40))  # each once
        assert svc.store.queue_list() == []
    finally:
        svc.store.close()
