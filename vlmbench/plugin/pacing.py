"""Request pacing for plugins that call rate-limited services (a hosted generator, a model behind an
HTTP API): request starts spaced evenly, at most ``per_minute`` a minute, shared by every thread or
asyncio task that asks."""

from __future__ import annotations

import asyncio
import threading
import time


class Pacer:
    """Spaces request starts at least ``60 / per_minute`` seconds apart; ``None`` or 0: no limit."""

    def __init__(self, per_minute: float | None) -> None:
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._lock = threading.Lock()  # held only for the arithmetic, so an event loop never waits on it
        self._next_start = 0.0

    def reserve(self) -> float:
        """Take the next start slot; how many seconds from now it is."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + self.interval
        return start - now

    def wait(self) -> None:
        """Block until this caller's slot (threads)."""
        delay = self.reserve()
        if delay > 0:
            time.sleep(delay)

    async def wait_async(self) -> None:
        """Sleep until this caller's slot (asyncio tasks)."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)
