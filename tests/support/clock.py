"""An injected clock for code that ages caches or timers by a clock function.

Time moves only when a test calls :meth:`FakeClock.advance`, so "after N
seconds" is a step in the test, not a sleep, and never depends on load. It
starts at the real monotonic time so that timestamps taken before it was
injected stay in the past.
"""

from __future__ import annotations

import time


class FakeClock:
    """A monotonic clock (``clock()`` returns seconds) that a test advances by hand."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.monotonic() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "a monotonic clock never goes back"
        self.now += seconds
